"""Symmetric per-channel integer quantisation of network weights (post-training).

Every channel (a slice along `axis`: an output row of a linear layer, an output filter of a convolution, a column of
a codebook) gets its own scale = max |w| / qmax with qmax = 2**(bits - 1) - 1, so one large channel does not
coarsen the others; w is stored as round(w / scale) in [-qmax, qmax] and read back as q * scale (error <= scale / 2).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

MIN_BITS, MAX_BITS = 2, 8


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
