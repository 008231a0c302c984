"""ReenactmentDataset: a driver's parameter sequence (and images, when present) with the camera to render from."""
from __future__ import annotations

import glob
import math
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from cgha.config import DatasetConfig
from cgha.dataset.arrays import CAMERA_SHAPES, PARAMS_SHAPES, read_npz
from cgha.errors import DataError
from cgha.utils.cameras import look_at_world_to_camera
from cgha.utils.image_io import read_rgb

# GHA's default frontal camera: 1 unit in front of the face (+z), looking back at the origin, focal 3.5 x width.
FRONTAL_EXTRINSIC = np.array([[1.0, 0.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0, 0.0],
                              [0.0, 0.0, -1.0, 1.0]], dtype=np.float32)
FRONTAL_FOCAL = 3.5
# GHA's free-view orbit: azimuth 45 cos(i/20) deg, elevation 8 sin(i/20) deg, 1.2 units from (0, 0, 0.05).
ORBIT_DISTANCE = 1.2
ORBIT_TARGET = (0.0, 0.0, 0.05)
ORBIT_AZIMUTH_DEG = 45.0
ORBIT_ELEVATION_DEG = 8.0
ORBIT_PERIOD = 20.0


def orbit_viewmat(index: int) -> np.ndarray:
    """World-to-camera [4, 4] of frame `index` on GHA's free-view orbit (azimuth 0 = in front of the face)."""
    azimuth = math.radians(math.cos(index / ORBIT_PERIOD) * ORBIT_AZIMUTH_DEG)
    elevation = math.radians(math.sin(index / ORBIT_PERIOD) * ORBIT_ELEVATION_DEG)
    target = np.array(ORBIT_TARGET)
    direction = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                          math.cos(elevation) * math.cos(azimuth)])
    eye = target + ORBIT_DISTANCE * direction
    viewmat = look_at_world_to_camera(torch.tensor(eye), torch.tensor(target), torch.tensor([0.0, 1.0, 0.0]))
    return np.asarray(viewmat, dtype=np.float32)


class ReenactmentDataset(Dataset):
    """Items for driving an avatar with another sequence (GHA's reenactment keys under `dataset`).

    `param_files` (and optional `image_files`) are globs relative to `dataroot`, matched in sorted order.
    The camera is `camera_path` when given, else GHA's frontal camera; with `freeview` it orbits the head per frame
    (keeping `camera_path`'s intrinsics only when freeview is off, as GHA does).

    Item (R = dataset.resolution): pose [6] (drives the head transform), scale [1], exp_coeff [D],
    pose_code [6] (fed to the pose MLPs: pose_code_path's pose when given, else the frame's pose),
    intrinsics [3, 3] (pixels at R), viewmat [4, 4], extrinsics [3, 4], index, and images [3, R, R] when the
    driver's images exist.
    """

    def __init__(self, cfg: DatasetConfig, expected_exp_dim: Optional[int] = None,
                 exp_dim_key: str = "gaussianheadmodule.exp_coeffs_dim"):
        root = Path(cfg.dataroot)
        if not root.is_dir():
            raise DataError(f"dataset root not found: {root} (dataset.dataroot)")
        self.resolution = cfg.resolution
        self.freeview = cfg.freeview
        self.param_paths = _glob(root, cfg.param_files, "dataset.param_files")
        self.image_paths: List[Path] = _glob(root, cfg.image_files, "dataset.image_files") if cfg.image_files else []
        if self.image_paths and len(self.image_paths) != len(self.param_paths):
            raise DataError(f"dataset.image_files matches {len(self.image_paths)} images but dataset.param_files "
                            f"matches {len(self.param_paths)} params under {root}")
        params = [_read_params(path) for path in self.param_paths]
        dims = {p["exp_coeff"].shape[-1] for p in params}
        expected = expected_exp_dim if expected_exp_dim is not None else next(iter(dims))
        if dims != {expected}:
            raise DataError(f"the driver's exp_coeff has {sorted(dims)} coefficients ({self.param_paths[0]}) but "
                            f"{exp_dim_key} is {expected}: this avatar cannot be driven by this sequence")
        self.pose = torch.from_numpy(np.stack([p["pose"][0] for p in params]))
        self.scale = torch.from_numpy(np.stack([p["scale"] for p in params]))
        self.exp_coeff = torch.from_numpy(np.stack([p["exp_coeff"][0] for p in params]))
        self.pose_code = torch.from_numpy(_read_params(Path(cfg.pose_code_path))["pose"][0]) if cfg.pose_code_path else None

        intrinsic = np.array([[cfg.original_resolution * FRONTAL_FOCAL, 0.0, cfg.original_resolution / 2],
                              [0.0, cfg.original_resolution * FRONTAL_FOCAL, cfg.original_resolution / 2],
                              [0.0, 0.0, 1.0]], dtype=np.float32)
        extrinsic = FRONTAL_EXTRINSIC
        if cfg.camera_path:
            camera = _read_camera(Path(cfg.camera_path))
            extrinsic = camera["extrinsic"]
            if not cfg.freeview:
                intrinsic = camera["intrinsic"]
        intrinsic = intrinsic.copy()
        intrinsic[:2] *= cfg.resolution / cfg.original_resolution
        self.intrinsic = torch.from_numpy(intrinsic)
        self.viewmat = torch.eye(4)
        self.viewmat[:3] = torch.from_numpy(np.asarray(extrinsic, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.param_paths)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        viewmat = torch.from_numpy(orbit_viewmat(index)) if self.freeview else self.viewmat
        item = {
            "pose": self.pose[index],
            "scale": self.scale[index],
            "exp_coeff": self.exp_coeff[index],
            "pose_code": self.pose_code if self.pose_code is not None else self.pose[index],
            "intrinsics": self.intrinsic,
            "viewmat": viewmat,
            "extrinsics": viewmat[:3],
            "index": torch.tensor(index, dtype=torch.long),
        }
        if self.image_paths:
            item["images"] = torch.from_numpy(read_rgb(self.image_paths[index], self.resolution)).permute(2, 0, 1)
        return item


def _glob(root: Path, pattern: str, key: str) -> List[Path]:
    paths = sorted(Path(p) for p in glob.glob(str(root / pattern)))
    if not paths:
        raise DataError(f"{key} '{pattern}' matches no file under {root}")
    return paths


def _read_params(path: Path) -> Dict[str, np.ndarray]:
    return read_npz(path, PARAMS_SHAPES)


def _read_camera(path: Path) -> Dict[str, np.ndarray]:
    return read_npz(path, CAMERA_SHAPES)
