"""Positions on a regular grid and their Morton (Z-order) codes.

A point set quantised on a grid of 2**bits cells per axis and sorted by Morton code puts neighbours in space next
to each other in the file: the differences of consecutive codes are small (they cost about 3 * bits - log2(N) bits
each after entropy coding instead of 3 * bits), and the per-Gaussian arrays stored in the same order (opacity,
codebook indices) gain spatial runs that the entropy coder finds.

Shapes: N points, D axes (D * bits <= 63, so a code and the difference of two codes fit an int64).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

MAX_CODE_BITS = 63


def check_grid(dims: int, bits: int) -> None:
    """ValueError unless a D-axis grid of `bits` bits per axis has Morton codes that fit MAX_CODE_BITS."""
    if dims < 1 or bits < 1 or dims * bits > MAX_CODE_BITS:
        raise ValueError(f"a grid of {dims} axes at {bits} bits per axis does not fit {MAX_CODE_BITS}-bit codes")


def grid_frame(points: np.ndarray, bits: int) -> Tuple[np.ndarray, np.ndarray]:
    """(origin [D], step [D]) as float32: the grid whose 2**bits cells per axis span the points [N, D] exactly.
    A flat axis gets step 0 (every point decodes to the origin, which is its value)."""
    points = np.asarray(points, dtype=np.float64)
    low = points.min(axis=0) if len(points) else np.zeros(points.shape[1])
    high = points.max(axis=0) if len(points) else np.zeros(points.shape[1])
    origin = low.astype(np.float32)
    step = ((high - origin) / (2 ** bits - 1)).astype(np.float32)
    return origin, step


def to_cells(points: np.ndarray, origin: np.ndarray, step: np.ndarray, bits: int) -> np.ndarray:
    """Nearest grid cell [N, D] int64 of every point; the decoded value origin + cell * step is within step / 2
    (float32 rounding aside)."""
    points = np.asarray(points, dtype=np.float64)
    safe = np.where(step > 0, step, 1.0).astype(np.float64)
    cells = np.rint((points - origin.astype(np.float64)) / safe)
    return np.clip(cells, 0, 2 ** bits - 1).astype(np.int64)


def from_cells(cells: np.ndarray, origin: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Decoded positions [N, D] float32 of grid cells [N, D]."""
    return (origin.astype(np.float64) + cells.astype(np.float64) * step.astype(np.float64)).astype(np.float32)


def morton_encode(cells: np.ndarray, bits: int) -> np.ndarray:
    """Interleave the bits of cells [N, D] (each < 2**bits): bit b of axis d goes to bit b * D + d. -> [N] uint64."""
    cells = np.asarray(cells, dtype=np.uint64)
    dims = cells.shape[1]
    check_grid(dims, bits)
    codes = np.zeros(cells.shape[0], dtype=np.uint64)
    for bit in range(bits):
        for axis in range(dims):
            codes |= ((cells[:, axis] >> np.uint64(bit)) & np.uint64(1)) << np.uint64(bit * dims + axis)
    return codes


def morton_decode(codes: np.ndarray, dims: int, bits: int) -> np.ndarray:
    """Inverse of morton_encode: codes [N] -> cells [N, D] int64. Bits above D * bits are ignored."""
    check_grid(dims, bits)
    codes = np.asarray(codes, dtype=np.uint64)
    cells = np.zeros((codes.shape[0], dims), dtype=np.uint64)
    for bit in range(bits):
        for axis in range(dims):
            cells[:, axis] |= ((codes >> np.uint64(bit * dims + axis)) & np.uint64(1)) << np.uint64(bit)
    return cells.astype(np.int64)


def morton_order(points: np.ndarray, bits: int) -> np.ndarray:
    """Permutation [N] int64 sorting points [N, D] along the Z-order curve of their grid cells (stable: points in
    one cell keep their relative order)."""
    origin, step = grid_frame(points, bits)
    return np.argsort(morton_encode(to_cells(points, origin, step, bits), bits), kind="stable").astype(np.int64)
