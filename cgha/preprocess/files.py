"""Output files of the preprocessing: atomic JPEG / .npz writers, the background-plate path, JPEG header sizes.

Every file is written to a temporary name and renamed into place (cgha/utils/atomic.py), so an interrupted run leaves
only complete files and a resumed run can trust what exists.
"""
from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from cgha.utils.atomic import write_bytes_atomic
from cgha.utils.image_io import jpeg_problem, write_image

__all__ = ["JPEG_QUALITY", "background_plate_path", "write_jpeg", "write_npz", "complete", "jpeg_size"]

JPEG_QUALITY = 95  # OpenCV's default, as GHA's preprocessing wrote them
# Start-of-frame markers carry the image size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE_MARKERS = {0x01} | set(range(0xD0, 0xD9))


def background_plate_path(root, camera: str) -> Path:
    """``{subject}/background/image_{camera}.jpg``: the empty-studio plate of one camera, at the images' size."""
    return Path(root) / "background" / f"image_{camera}.jpg"


def write_jpeg(path, image: np.ndarray, quality: int = JPEG_QUALITY) -> None:
    """RGB uint8 [H, W, 3] or gray uint8 [H, W] -> JPEG, atomically."""
    write_image(path, image, quality=quality)


def write_npz(path, **arrays: np.ndarray) -> None:
    """An uncompressed .npz, atomically (np.savez into memory, then one rename)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(path, buffer.getvalue())


def complete(path) -> bool:
    """True when ``path`` exists and, for a JPEG, is a whole one (cheap: looks at both ends of the file)."""
    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return jpeg_problem(path) is None
    return path.is_file() and path.stat().st_size > 0


def jpeg_size(path: str | os.PathLike) -> Optional[Tuple[int, int]]:
    """(width, height) from a JPEG's start-of-frame header without decoding; None when there is no such header."""
    try:
        with open(path, "rb") as handle:
            if handle.read(2) != b"\xff\xd8":
                return None
            while True:
                byte = handle.read(1)
                while byte and byte != b"\xff":
                    byte = handle.read(1)
                while byte == b"\xff":  # fill bytes before a marker
                    byte = handle.read(1)
                if not byte:
                    return None
                marker = byte[0]
                if marker in _STANDALONE_MARKERS:
                    continue
                header = handle.read(2)
                if len(header) < 2:
                    return None
                length = struct.unpack(">H", header)[0]
                if marker in _SOF_MARKERS:
                    frame = handle.read(5)
                    if len(frame) < 5:
                        return None
                    height, width = struct.unpack(">HH", frame[1:5])
                    return width, height
                if marker == 0xD9 or length < 2:
                    return None
                handle.seek(length - 2, os.SEEK_CUR)
    except OSError:
        return None
