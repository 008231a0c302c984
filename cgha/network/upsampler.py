"""GHA's super-resolution CNN: a 32-channel feature image in, an RGB image four times larger out.

Architecture (as GHA's ``lib/network/Upsampler.py``, capacity ``c``)::

    inc   DoubleConv(input_dim -> 4c)                          [B, input_dim, H, W]  -> [B, 4c, H, W]
    up1   bilinear x2 (align_corners=True), DoubleConv(4c -> 2c, mid 2c)             -> [B, 2c, 2H, 2W]
    up2   bilinear x2 (align_corners=True), DoubleConv(2c -> c, mid c)               -> [B, c, 4H, 4W]
    outc  1x1 conv (c -> output_dim, with bias) + sigmoid                            -> [B, output_dim, 4H, 4W]

where ``DoubleConv`` is (3x3 conv without bias -> InstanceNorm2d -> ReLU) twice. The attribute names
(``inc.double_conv.0.weight``, ``up1.conv.double_conv.3.weight``, ``outc.conv.bias``, ...) are GHA's, so a GHA
state dict loads without renaming; the instance norms have no affine parameters or running statistics, so they
own no state-dict entries, exactly as in GHA.

Speed-ups that keep GHA's arithmetic (up to float rounding): :class:`InstanceNorm2d` keeps channels-last tensors
channels-last (PyTorch's instance norm makes its input NCHW-contiguous, which would force a layout conversion
around every convolution in the fast path), and on CUDA each norm + ReLU pair and each x2 upsampling runs as one
fused Triton kernel (``cgha/kernels``; the plain PyTorch ops are their twins, used on CPUs).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from cgha.errors import CheckpointError
from cgha.kernels.instance_norm import instance_norm, instance_norm_relu
from cgha.kernels.upsample import upsample_bilinear2x

__all__ = ["DoubleConv", "InstanceNorm2d", "OutConv", "Up", "Upsampler", "conv_flops"]

# GHA's SuperResolutionModule holds the network as `self.upsampler`, so `supres_latest` keys start with this.
GHA_MODULE_PREFIX = "upsampler."


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (no affine, no running stats) that preserves the channels-last memory format.

    x ``[B, C, H, W]`` -> ``[B, C, H, W]``, each (sample, channel) plane normalised to zero mean and unit biased
    variance (eps 1e-5); see :func:`cgha.kernels.instance_norm.instance_norm`. Results are those of
    ``nn.InstanceNorm2d`` up to float rounding.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features, affine=False, track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x, self.eps)


class DoubleConv(nn.Module):
    """(3x3 conv without bias -> InstanceNorm2d -> ReLU) x 2: ``[B, in, H, W]`` -> ``[B, out, H, W]``.

    Args:
        in_channels, out_channels: channel counts.
        mid_channels: width between the two convolutions (default ``out_channels``).
    """

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None) -> None:
        super().__init__()
        mid_channels = mid_channels or out_channels
        # Indices 0 and 3 hold the conv weights: GHA's state-dict keys depend on this exact Sequential layout.
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            InstanceNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            InstanceNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Each norm + ReLU pair runs as one fused kernel where it can (cgha.kernels.instance_norm; the twin is the
        # same two modules in sequence). The Sequential stays for GHA's state-dict layout.
        conv1, norm1, _, conv2, norm2, _ = self.double_conv
        x = instance_norm_relu(conv1(x), norm1.eps)
        return instance_norm_relu(conv2(x), norm2.eps)


class Up(nn.Module):
    """Bilinear x2 upsampling (align_corners=True, as GHA) then a DoubleConv whose middle width is ``in // 2``.

    ``[B, in, H, W]`` -> ``[B, out, 2H, 2W]``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in (torch.float16, torch.bfloat16):
            # Autocast would run the twin (PyTorch's bilinear upsampling) in fp32: upcast the input and write an
            # fp32 output twice the size, only for the next conv to cast it back. Both paths accumulate in fp32.
            with torch.autocast(device_type=x.device.type, enabled=False):
                x = upsample_bilinear2x(x)
        else:
            x = upsample_bilinear2x(x)
        return self.conv(x)


class OutConv(nn.Module):
    """1x1 conv with bias then sigmoid: ``[B, in, H, W]`` -> ``[B, out, H, W]`` in (0, 1)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        self.act_fn = nn.Sigmoid()

    def forward(self, x: torch.Tensor, base_logits: torch.Tensor | None = None) -> torch.Tensor:
        """``base_logits`` ``[B, out, H, W]`` (float32, optional) are added before the sigmoid."""
        logits = self.conv(x)
        # Under bf16 autocast the logits are bf16; a bf16 sigmoid would quantise colours near 1 to steps of 1/256,
        # so the (3-channel, cheap) activation runs in fp32. A no-op in full precision.
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if base_logits is not None:
            logits = logits + base_logits
        return self.act_fn(logits)


class Upsampler(nn.Module):
    """GHA's super-resolution CNN: ``[B, input_dim, H, W]`` -> ``[B, output_dim, 4H, 4W]`` in (0, 1).

    Args:
        input_dim: channels of the input feature image (GHA: 32).
        output_dim: channels of the output image (3 for RGB).
        network_capacity: ``c``; the stages are 4c, 2c and c channels wide.
        residual: not in GHA. The output becomes ``sigmoid(outc_logits + logit(up4(x[:, :output_dim])))``: the
            network predicts a correction to the bilinearly upsampled colour channels of the render, and its last
            conv starts at zero, so training starts from the render's quality instead of a blank image (GHA's
            network needs thousands of steps to reach it). Marked in the state dict by a ``bilinear_skip``
            buffer, so a checkpoint only loads into a network of the same kind.
    """

    # Colours are clamped into (eps, 1 - eps) before the logit: white backgrounds stay finite, off by 1e-3 at most.
    SKIP_EPS = 1e-3

    def __init__(self, input_dim: int = 32, output_dim: int = 3, network_capacity: int = 64,
                 residual: bool = False) -> None:
        super().__init__()
        for name, value in (("input_dim", input_dim), ("output_dim", output_dim),
                            ("network_capacity", network_capacity)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Upsampler {name} must be a positive integer, got {value!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.network_capacity = network_capacity
        self.inc = DoubleConv(input_dim, network_capacity * 4)
        self.up1 = Up(network_capacity * 4, network_capacity * 2)
        self.up2 = Up(network_capacity * 2, network_capacity)
        self.outc = OutConv(network_capacity, output_dim)
        self.residual = bool(residual)
        if self.residual:
            if output_dim > input_dim:
                raise ValueError(f"a residual Upsampler needs output_dim <= input_dim, got {output_dim} > {input_dim}")
            nn.init.zeros_(self.outc.conv.weight)
            nn.init.zeros_(self.outc.conv.bias)
            self.register_buffer("bilinear_skip", torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, input_dim, H, W]`` -> ``[B, output_dim, 4H, 4W]`` in (0, 1)."""
        if x.dim() != 4 or x.shape[1] != self.input_dim:
            raise ValueError(f"Upsampler expects input [B, {self.input_dim}, H, W], got {list(x.shape)}")
        features = self.up2(self.up1(self.inc(x)))
        if not self.residual:
            return self.outc(features)
        # align_corners=False: output pixel centres map onto the render's pixel centres (same field of view).
        with torch.autocast(device_type=x.device.type, enabled=False):
            base = F.interpolate(x[:, :self.output_dim].float(), scale_factor=4, mode="bilinear", align_corners=False)
            base_logits = torch.logit(base.clamp(self.SKIP_EPS, 1.0 - self.SKIP_EPS))
        return self.outc(features, base_logits)

    def load_gha_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load GHA weights: a GHA ``Upsampler`` state dict, or GHA's ``supres_latest`` (keys ``upsampler.*``).

        Our parameter names are GHA's, so the only mapping is dropping the ``upsampler.`` prefix that GHA's
        ``SuperResolutionModule`` adds. Raises CheckpointError naming missing/unexpected keys or wrong shapes
        (e.g. a checkpoint trained with another ``network_capacity``).
        """
        if not isinstance(state, Mapping):
            raise CheckpointError(f"expected a GHA super-resolution state dict, got {type(state).__name__}")
        if state and all(isinstance(k, str) and k.startswith(GHA_MODULE_PREFIX) for k in state):
            state = {key[len(GHA_MODULE_PREFIX):]: value for key, value in state.items()}
        expected = self.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"not a GHA Upsampler state dict: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for key, value in expected.items():
            stored = state[key]
            if not isinstance(stored, torch.Tensor) or stored.shape != value.shape:
                shape = list(stored.shape) if isinstance(stored, torch.Tensor) else type(stored).__name__
                raise CheckpointError(
                    f"GHA Upsampler weight '{key}' has shape {shape}, this network (input_dim {self.input_dim}, "
                    f"output_dim {self.output_dim}, network_capacity {self.network_capacity}) has {list(value.shape)}")
        self.load_state_dict(state)

    def flops(self, height: int, width: int, batch: int = 1) -> int:
        """Forward FLOPs (2 per multiply-add) of the convolutions for a ``[batch, input_dim, height, width]`` input.

        Norms, ReLUs, upsampling and the sigmoid are left out: they are memory-bound and under 1% of the count.
        """
        total, h, w = 0, height, width
        for stage in (self.inc, self.up1, self.up2, self.outc):
            if isinstance(stage, Up):
                h, w = 2 * h, 2 * w
            total += sum(conv_flops(m, h, w) for m in stage.modules() if isinstance(m, nn.Conv2d))
        return batch * total


def conv_flops(conv: nn.Conv2d, height: int, width: int) -> int:
    """FLOPs of one stride-1 'same' convolution over a ``height x width`` output (bias adds not counted)."""
    kh, kw = conv.kernel_size
    return 2 * height * width * conv.out_channels * (conv.in_channels // conv.groups) * kh * kw
