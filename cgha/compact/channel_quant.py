"""Symmetric per-channel integer quantisation of network weights: the file's numpy encoder and decoder, and
`fake_quantise`, their PyTorch twin that quantisation-aware training runs in the forward pass.

Every channel (a slice along `axis`: an output row of a linear layer, an output filter of a convolution, a column of
a codebook) gets its own scale = max |w| / qmax with qmax = 2**(bits - 1) - 1, so one large channel does not
coarsen the others; w is stored as round(w / scale) in [-qmax, qmax] and read back as q * scale (error <= scale / 2).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
import torch

MIN_BITS, MAX_BITS = 2, 8
# Network tensors under this many values (and biases, norms: fewer than 2 dims) stay floats: their scales would cost
# more than the bits they save.
MIN_QUANTISED_VALUES = 64


def is_channel_quantised(shape: Sequence[int]) -> bool:
    """Whether a network tensor of `shape` is stored per-channel quantised at an intN precision (else fp16)."""
    return len(shape) >= 2 and math.prod(shape) >= MIN_QUANTISED_VALUES


def qmax(bits: int) -> int:
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"per-channel quantisation takes {MIN_BITS} to {MAX_BITS} bits, got {bits}")
    return 2 ** (bits - 1) - 1


def quantise(array: np.ndarray, bits: int, axis: int) -> Tuple[np.ndarray, np.ndarray]:
    """(levels, scales): levels of the array's shape, int64 in [-qmax, qmax], and scales [C] float32 for the C
    channels along `axis`. An all-zero channel gets scale 0."""
    top = qmax(bits)
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    scales = (np.abs(flat).max(axis=1) / top if flat.shape[1] else np.zeros(flat.shape[0])).astype(np.float32)
    safe = np.where(scales > 0, scales, 1).astype(np.float64)
    levels = np.clip(np.rint(flat / safe[:, None]), -top, top).astype(np.int64)
    return np.moveaxis(levels.reshape(moved.shape), 0, axis), scales


def dequantise(levels: np.ndarray, scales: np.ndarray, axis: int) -> np.ndarray:
    """levels (any integer array) * the scale of its channel along `axis` -> float32 of the levels' shape."""
    shape = [1] * levels.ndim
    shape[axis] = -1
    return (levels.astype(np.float32) * scales.astype(np.float32).reshape(shape)).astype(np.float32)


def fake_quantise(weight: torch.Tensor, bits: int, axis: int = 0) -> torch.Tensor:
    """What the file reads back for `weight` at `bits` per-channel (channels along `axis`): dequantise(quantise(w)),
    computed in PyTorch on the weight's device and dtype; no gradient flows through it."""
    top = qmax(bits)
    with torch.no_grad():
        dims = [dim for dim in range(weight.dim()) if dim != axis % weight.dim()]
        scales = weight.abs().amax(dim=dims, keepdim=True) / top
        safe = torch.where(scales > 0, scales, torch.ones_like(scales))
        return torch.clamp(torch.round(weight / safe), -top, top) * scales
