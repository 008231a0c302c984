"""Reading the layout's small .npz/.npy files without pickle, checking keys, shapes and finiteness."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from cgha.errors import DataError

PARAMS_SHAPES = {"pose": (1, 6), "scale": (1,), "exp_coeff": None}
CAMERA_SHAPES = {"intrinsic": (3, 3), "extrinsic": (3, 4)}


def read_npz(path: Path, shapes: Dict[str, Optional[Sequence[int]]]) -> Dict[str, np.ndarray]:
    """The named arrays of an .npz as float32; `shapes[key]` None = any shape. Raises DataError naming the file.

    `exp_coeff`, when asked for, must be [1, D].
    """
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in shapes if key not in archive.files]
            if missing:
                raise DataError(f"{path}: missing key(s) {missing} (has {archive.files})")
            raw = {key: np.asarray(archive[key]) for key in shapes}
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: unreadable .npz ({type(error).__name__}: {error})") from None
    arrays = {}
    for key, shape in shapes.items():
        array = raw[key]
        if shape is not None and array.shape != tuple(shape):
            raise DataError(f"{path}: '{key}' has shape {list(array.shape)}, expected {list(shape)}")
        if key == "exp_coeff" and (array.ndim != 2 or array.shape[0] != 1):
            raise DataError(f"{path}: 'exp_coeff' has shape {list(array.shape)}, expected [1, D]")
        arrays[key] = _finite_float32(array, path, f"'{key}'")
    return arrays


def read_npy_rows(path: Path, shape: Sequence[Optional[int]], stride: int = 1) -> np.ndarray:
    """Every `stride`-th row of an .npy as float32 (memory-mapped, so skipped rows are never read)."""
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: unreadable .npy ({type(error).__name__}: {error})") from None
    if array.ndim != len(shape) or any(want is not None and have != want for have, want in zip(array.shape, shape)):
        wanted = ["N" if want is None else want for want in shape]
        raise DataError(f"{path}: shape {list(array.shape)}, expected {wanted}")
    return _finite_float32(np.asarray(array[::stride]), path, "array")


def _finite_float32(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.number):
        raise DataError(f"{path}: {what} is not numeric ({array.dtype})")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise DataError(f"{path}: {what} contains NaN/inf")
    return array
