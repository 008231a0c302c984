"""Image reading and writing with errors that name the file.

Images are returned as float32 numpy arrays in [0, 1]: RGB `[H, W, 3]`, masks `[H, W]`.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from cgha.errors import DataError
from cgha.utils.atomic import write_bytes_atomic

_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"


def jpeg_problem(path: str | os.PathLike) -> str | None:
    """Cheap integrity check without decoding: None if `path` looks like a complete JPEG, else the problem.

    A JPEG starts with the SOI marker and ends with EOI (trailing padding bytes are tolerated), so a missing,
    empty, truncated or foreign file is caught by reading a few bytes at each end.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(2)
            handle.seek(max(0, size - 64))
            tail = handle.read()
    except FileNotFoundError:
        return "missing"
    except OSError as error:
        return f"unreadable ({error.strerror})"
    if size == 0:
        return "empty"
    if head != _JPEG_START:
        return "not a JPEG"
    if _JPEG_END not in tail.rstrip(b"\x00"):
        return "truncated JPEG"
    return None


def _decode(path: Path, flags: int) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    image = cv2.imread(str(path), flags)
    if image is None:
        raise DataError(f"cannot decode image (corrupt or not an image): {path}")
    return image


def read_rgb(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """RGB image `[H, W, 3]` float32 in [0, 1], resized to `size x size` when given."""
    image = _decode(Path(path), cv2.IMREAD_COLOR)
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return _to_float(_resize(image, size, Path(path)))


def read_mask(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Single-channel mask `[H, W]` float32 in [0, 1] (first channel of a colour file), resized when asked."""
    mask = _decode(Path(path), cv2.IMREAD_GRAYSCALE)
    return _to_float(_resize(mask, size, Path(path)))


def _resize(image: np.ndarray, size: int | None, path: Path) -> np.ndarray:
    if size is None or image.shape[:2] == (size, size):
        return image
    height, width = image.shape[:2]
    if height != width:
        raise DataError(f"{path}: expected a square image, got {width}x{height}")
    interpolation = cv2.INTER_AREA if size < height else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def _to_float(image: np.ndarray) -> np.ndarray:
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    return image.astype(np.float32) / scale


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> None:
    """Write an RGB `[H, W, 3]` or gray `[H, W]` image (float in [0, 1] or uint8) atomically (temp + rename)."""
    path = Path(path)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(path.suffix, image, params)
    if not ok:
        raise DataError(f"cannot encode image for {path}")
    write_bytes_atomic(path, encoded.tobytes())
