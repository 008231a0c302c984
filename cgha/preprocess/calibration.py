"""NeRSemble's ``camera_params.json``: per-camera world-to-camera poses and the (shared) intrinsics.

Format (NeRSemble v1 and v2)::

    {"world_2_cam": {"222200037": [[r00, r01, r02, t0], [..], [..], [0, 0, 0, 1]], ...},
     "intrinsics": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}

``world_2_cam`` is a 4x4 world-to-camera matrix with OpenCV axes (x right, y down, z forward), the same convention as
our ``extrinsic`` (docs/conventions.md); ``intrinsics`` is in pixels of the raw frames (2200 x 3208 for NeRSemble).
We also accept ``intrinsics`` as ``{serial: 3x3}`` for rigs with per-camera intrinsics.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

from cgha.errors import DataError

__all__ = ["Calibration", "read_calibration", "normalize_serial"]


@dataclass(frozen=True)
class Calibration:
    """Cameras of one participant.

    Attributes:
        path: the file it was read from.
        world_2_cam: {serial: [4, 4] float64} world-to-camera, OpenCV axes.
        intrinsics: {serial: [3, 3] float64} in pixels of the raw frames.
    """

    path: Path
    world_2_cam: Dict[str, np.ndarray]
    intrinsics: Dict[str, np.ndarray]

    @property
    def serials(self) -> List[str]:
        return sorted(self.world_2_cam)


def normalize_serial(camera: str) -> str:
    """A camera given as ``cam_222200037`` or ``222200037`` -> ``222200037``."""
    camera = str(camera).strip()
    return camera[len("cam_"):] if camera.startswith("cam_") else camera


def _matrix(value, shape, where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where} is not a numeric matrix") from None
    if array.shape != shape:
        raise DataError(f"{where} has shape {list(array.shape)}, expected {list(shape)}")
    if not np.isfinite(array).all():
        raise DataError(f"{where} contains NaN/inf")
    return array


def _pose(value, where: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64) if isinstance(value, list) else value
    if isinstance(array, np.ndarray) and array.shape == (3, 4):
        array = np.concatenate([array, [[0.0, 0.0, 0.0, 1.0]]])
    pose = _matrix(array, (4, 4), where)
    rotation = pose[:3, :3]
    if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3) or np.linalg.det(rotation) < 0:
        raise DataError(f"{where}: the top-left 3x3 block is not a rotation matrix")
    return pose


def _intrinsic(value, where: str) -> np.ndarray:
    K = _matrix(value, (3, 3), where)
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]):
        raise DataError(f"{where} is not a pinhole intrinsic matrix (fx, fy > 0, last row 0 0 1)")
    return K


def read_calibration(path) -> Calibration:
    """Read and validate a NeRSemble ``camera_params.json``; every problem is a DataError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: camera calibration not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with 'world_2_cam' and 'intrinsics'")
    missing = [key for key in ("world_2_cam", "intrinsics") if key not in data]
    if missing:
        raise DataError(f"{path}: missing key(s) {missing} (has {sorted(data)})")
    if not isinstance(data["world_2_cam"], dict) or not data["world_2_cam"]:
        raise DataError(f"{path}: 'world_2_cam' must map camera serials to 4x4 matrices")
    world_2_cam = {normalize_serial(serial): _pose(pose, f"{path}: world_2_cam[{serial!r}]")
                   for serial, pose in data["world_2_cam"].items()}
    raw_intrinsics = data["intrinsics"]
    if isinstance(raw_intrinsics, dict):
        intrinsics = {normalize_serial(serial): _intrinsic(K, f"{path}: intrinsics[{serial!r}]")
                      for serial, K in raw_intrinsics.items()}
        without = sorted(set(world_2_cam) - set(intrinsics))
        if without:
            raise DataError(f"{path}: no intrinsics for camera(s) {without}")
    else:
        shared = _intrinsic(raw_intrinsics, f"{path}: intrinsics")
        intrinsics = {serial: shared for serial in world_2_cam}
    return Calibration(path=path, world_2_cam=world_2_cam, intrinsics=intrinsics)
