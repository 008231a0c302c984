"""SuperResolutionModule: GHA's stage-2 super-resolution, the rendered feature image to a 4x larger RGB image.

Holds the network as ``self.upsampler`` exactly as GHA does, so its ``state_dict`` keys (``upsampler.inc...``)
match GHA's ``supres_latest`` file and either loads into the other.

Fast path (``amp=True``, CUDA only): the input is switched to the channels-last memory format and the network
runs under bf16 autocast, so every 3x3 convolution is a tensor-core NHWC kernel with no layout conversions in
between (see :class:`cgha.network.upsampler.InstanceNorm2d`). On a CPU tensor the flag does nothing, so CPU
results are bit-identical with and without it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

import torch
from torch import nn

from cgha.errors import ConfigError
from cgha.network.upsampler import Upsampler
from cgha.options import option
from cgha.recorder.checkpoint import load_file, load_state_dict_into
from cgha.utils.cuda_graphs import GraphedForward, replays

__all__ = ["SupResModuleConfig", "SuperResolutionModule", "load_super_resolution"]


@dataclass
class SupResModuleConfig:
    """Super-resolution network (GHA keys)."""
    input_dim: int = option(32, "channels of the rendered feature image", min=1)
    output_dim: int = option(3, "channels of the output image", min=1)
    network_capacity: int = option(64, "channels of the last conv layer", min=1)
    residual: bool = option(False, "not in GHA: predict a correction to the bilinearly upsampled RGB channels of "
                                     "the render (trains much faster; GHA checkpoints need false)")

    def check(self, prefix: str = "supresmodule") -> None:
        if self.residual and self.output_dim > self.input_dim:
            raise ConfigError(f"'{prefix}.residual' adds the render's first output_dim channels to the output: "
                              f"'{prefix}.output_dim' ({self.output_dim}) must be <= '{prefix}.input_dim' "
                              f"({self.input_dim})")


class SuperResolutionModule(nn.Module):
    """``[B, input_dim, H, W]`` feature image -> ``[B, output_dim, 4H, 4W]`` image in (0, 1).

    Args:
        cfg: ``SupResModuleConfig`` (``input_dim``, ``output_dim``, ``network_capacity``, ``residual``).
        amp: on CUDA inputs, run channels-last under bf16 autocast (the trainer passes ``train.amp``). The output
            is returned in the input's dtype and the standard contiguous layout either way.
    """

    upscale = 4  # output pixels per render pixel along each axis

    def __init__(self, cfg: SupResModuleConfig, amp: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.amp = bool(amp)
        self.upsampler = Upsampler(cfg.input_dim, cfg.output_dim, cfg.network_capacity, residual=cfg.residual)
        self._graphed_forward: Optional[GraphedForward] = None

    def use_cuda_graphs(self, enabled: bool = True) -> "SuperResolutionModule":
        """Replay the network's forward and backward from CUDA graphs in training steps (training mode, gradients
        enabled, CUDA input): dozens of convolutions and fused kernels whose host-side launch cost is close to
        their GPU time. One capture per input shape (the trainer's crops all have the render's size). Between
        steps, gradients must be reset with `zero_grad(set_to_none=True)` (cgha/utils/cuda_graphs.py). Returns
        self."""
        names = [name for name, _ in self.named_parameters()]
        self._graphed_forward = GraphedForward(self, names, method="_run") if enabled else None
        return self

    @property
    def input_dim(self) -> int:
        return self.upsampler.input_dim

    @property
    def output_dim(self) -> int:
        return self.upsampler.output_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x ``[B, input_dim, H, W]`` (float) -> ``[B, output_dim, 4H, 4W]`` in (0, 1), same dtype and device."""
        if x.dim() != 4 or x.shape[1] != self.input_dim:
            raise ValueError(f"SuperResolutionModule expects a feature image [B, {self.input_dim}, H, W] "
                             f"(supresmodule.input_dim = {self.input_dim}), got shape {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"SuperResolutionModule expects a floating-point input, got {x.dtype}")
        if replays(self._graphed_forward, x):
            return self._graphed_forward(x)
        return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.amp and x.is_cuda):
            return self.upsampler(x)
        # No autocast weight-cast cache: each weight is cast once per call anyway, and CUDA graph capture needs it off.
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, cache_enabled=False):
            y = self.upsampler(x.contiguous(memory_format=torch.channels_last))
        # Callers (losses, image writers, crops) get the usual dtype and layout; the copy is only 3 channels.
        return y.to(dtype=x.dtype, memory_format=torch.contiguous_format)

    def load_gha_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load GHA's ``supres_latest`` state dict (keys ``upsampler.*``) or a bare GHA ``Upsampler`` state dict."""
        self.upsampler.load_gha_state_dict(state)

    def flops(self, height: int, width: int, batch: int = 1) -> int:
        """Forward convolution FLOPs for a ``[batch, input_dim, height, width]`` input (see ``Upsampler.flops``)."""
        return self.upsampler.flops(height, width, batch)


def load_super_resolution(module: SuperResolutionModule, path) -> None:
    """Load a super-resolution checkpoint (ours or GHA's `supres_latest`) into `module`; CheckpointError naming the
    file and the mismatching keys or shapes otherwise."""
    load_state_dict_into(module, load_file(path, "super-resolution checkpoint"), path, "super-resolution checkpoint")
