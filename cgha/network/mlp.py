"""GHA's skip-connection MLP, channels-last.

GHA builds it from ``Conv1d(kernel_size=1)`` layers over ``[B, C, N]``; a 1x1 convolution is a linear layer
applied to every point, so here it is ``nn.Linear`` over the last dim (``[N, D]`` or ``[B, N, D]``), which
avoids transposes around every call. The default initialisation is also the same: both layer types use
kaiming-uniform with fan-in ``in_features`` (``in_channels * 1`` for the convolution).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Stack of linear layers ``dims[l] -> dims[l + 1]`` with one skip connection, as in GHA.

    The layer with index ``len(dims) // 2`` reads ``cat([hidden, x], -1)``: its input is the previous hidden
    activation followed by the network's original input, so it has ``dims[l] + dims[0]`` in-features. With
    only two dims (a single layer) that index does not exist and there is no skip. Leaky ReLU (slope 0.01)
    follows every layer but the last; ``last_op`` (if given) is applied to the output.

    Args:
        dims: layer widths ``[in, hidden..., out]``, at least two positive integers.
        last_op: optional callable or module applied to the final output (e.g. ``nn.Tanh()``).
    """

    def __init__(self, dims: Sequence[int], last_op: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        super().__init__()
        dims = list(dims)
        if len(dims) < 2:
            raise ValueError(f"MLP needs at least two dims (input and output), got {dims}")
        if not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
            raise ValueError(f"MLP dims must be positive integers, got {dims}")
        if last_op is not None and not callable(last_op):
            raise ValueError(f"last_op must be callable or None, got {type(last_op).__name__}")
        self.dims = dims
        skip = len(dims) // 2
        self.skip_layer: int | None = skip if skip < len(dims) - 1 else None
        self.layers = nn.ModuleList(
            nn.Linear(dims[l] + (dims[0] if l == self.skip_layer else 0), dims[l + 1]) for l in range(len(dims) - 1)
        )
        self.last_op = last_op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``[..., dims[0]]`` (e.g. ``[B, N, D]``). Returns: ``[..., dims[-1]]``."""
        if x.dim() < 1 or x.shape[-1] != self.dims[0]:
            raise ValueError(f"expected input [..., {self.dims[0]}], got {list(x.shape)}")
        if torch.is_autocast_enabled(x.device.type):
            # One cast of the input, shared by the first and the skip layer; the skip concatenation then stays in
            # the low precision instead of promoting the hidden activations back to float32 (same values).
            x = x.to(torch.get_autocast_dtype(x.device.type))
        y = x
        last = len(self.layers) - 1
        for l, layer in enumerate(self.layers):
            if l == self.skip_layer:
                y = torch.cat([y, x], dim=-1)
            y = layer(y)
            if l != last:
                y = F.leaky_relu(y, negative_slope=0.01)
        if self.last_op is not None:
            y = self.last_op(y)
        return y

    @torch.no_grad()
    def load_gha_conv1d_state_dict(self, state_dict: Mapping[str, torch.Tensor], prefix: str = "") -> None:
        """Import the weights of a GHA ``MLP`` (``Conv1d`` layers named ``conv0``, ``conv1``, ...).

        GHA stores layer ``l`` as ``{prefix}conv{l}.weight`` ``[out, in, 1]`` and ``{prefix}conv{l}.bias``
        ``[out]``; the weight is the same matrix as a linear layer's once the kernel dim is dropped, and GHA
        concatenates ``[hidden, input]`` at the skip layer in the same order as :meth:`forward`, so outputs
        match exactly. Pass ``prefix`` (e.g. ``"color_mlp."``) to read straight from a whole GHA module's
        ``state_dict``; keys other than ``{prefix}conv{l}.weight|bias`` are ignored. Values are copied into the existing
        parameters, keeping their device and dtype.

        Raises:
            ValueError: a layer is missing, has the wrong shape, or there are more ``conv`` layers than here.
        """
        num_layers = len(self.layers)
        expected = {f"{prefix}conv{l}.{p}" for l in range(num_layers) for p in ("weight", "bias")}
        layer_key = re.compile(re.escape(prefix) + r"conv\d+\.(weight|bias)")
        extra = sorted(key for key in state_dict if layer_key.fullmatch(key) and key not in expected)
        if extra:
            raise ValueError(f"GHA MLP state_dict has layers this MLP {self.dims} does not: {extra}")
        for l, layer in enumerate(self.layers):
            w_key, b_key = f"{prefix}conv{l}.weight", f"{prefix}conv{l}.bias"
            for key in (w_key, b_key):
                if key not in state_dict:
                    raise ValueError(f"GHA MLP state_dict is missing {key!r} (MLP dims {self.dims})")
            weight, bias = state_dict[w_key], state_dict[b_key]
            out_f, in_f = layer.weight.shape
            if tuple(weight.shape) != (out_f, in_f, 1):
                raise ValueError(f"{w_key} has shape {list(weight.shape)}, expected {[out_f, in_f, 1]}")
            if tuple(bias.shape) != (out_f,):
                raise ValueError(f"{b_key} has shape {list(bias.shape)}, expected {[out_f]}")
            layer.weight.copy_(weight[..., 0])
            layer.bias.copy_(bias)

    def gha_conv1d_state_dict(self) -> dict[str, torch.Tensor]:
        """The inverse of :meth:`load_gha_conv1d_state_dict`: weights in GHA's ``conv{l}`` layout."""
        out: dict[str, torch.Tensor] = {}
        for l, layer in enumerate(self.layers):
            out[f"conv{l}.weight"] = layer.weight.detach().clone()[..., None]
            out[f"conv{l}.bias"] = layer.bias.detach().clone()
        return out

    def extra_repr(self) -> str:
        return f"dims={self.dims}, skip_layer={self.skip_layer}"
