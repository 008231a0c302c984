"""ReenactmentDataset: a driver's parameter sequence (and images, when present) with the camera to render from."""
from __future__ import annotations

import glob
import math
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from cgha.config import DatasetConfig
from cgha.dataset.arrays import CAMERA_SHAPES, read_npz
from cgha.dataset.validation import (Problems, add_jpeg_problems, check_original_resolution, exp_dim_problem,
                                     read_params)
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

    `param_files` (and optional `image_files`) are globs relative to `dataroot`, matched in sorted order. The driver
    is validated like a training subject (cgha/dataset/validation.py): every params file and image is checked up
    front, and each problem names its file.
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
        self.image_paths: List[Path] = _driver_images(root, cfg, self.param_paths) if cfg.image_files else []
        problems = Problems(root, kind="driver")
        add_jpeg_problems(problems, self.image_paths)
        params = _read_driver_params(self.param_paths, expected_exp_dim, exp_dim_key, problems)
        self.pose = torch.from_numpy(np.stack([p["pose"][0] for p in params]))
        self.scale = torch.from_numpy(np.stack([p["scale"] for p in params]))
        self.exp_coeff = torch.from_numpy(np.stack([p["exp_coeff"][0] for p in params]))
        self.pose_code = torch.from_numpy(read_params(Path(cfg.pose_code_path))["pose"][0]) if cfg.pose_code_path else None

        intrinsic = np.array([[cfg.original_resolution * FRONTAL_FOCAL, 0.0, cfg.original_resolution / 2],
                              [0.0, cfg.original_resolution * FRONTAL_FOCAL, cfg.original_resolution / 2],
                              [0.0, 0.0, 1.0]], dtype=np.float32)
        extrinsic = FRONTAL_EXTRINSIC
        if cfg.camera_path:
            camera = _read_camera(Path(cfg.camera_path))
            extrinsic = camera["extrinsic"]
            if not cfg.freeview:
                intrinsic = camera["intrinsic"]
                _check_camera_resolution(cfg, intrinsic)
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


def _driver_images(root: Path, cfg: DatasetConfig, param_paths: Sequence[Path]) -> List[Path]:
    """The driver's images, one per params file, paired in sorted order as GHA pairs them.

    When the globs match different numbers of files and each has one `*` (GHA's `images/*/image_X.jpg` and
    `params/*/params.npz`), each params file's frame names the image it needs, so a missing image is named.
    """
    images = _glob(root, cfg.image_files, "dataset.image_files")
    if len(images) == len(param_paths):
        return images
    frames = [_star_match(root, cfg.param_files, path) for path in param_paths]
    if cfg.image_files.count("*") == 1 and None not in frames:
        return [root / cfg.image_files.replace("*", frame) for frame in frames]
    raise DataError(f"dataset.image_files matches {len(images)} images but dataset.param_files matches "
                    f"{len(param_paths)} params under {root}")


def _star_match(root: Path, pattern: str, path: Path) -> Optional[str]:
    """What the single `*` of a glob `pattern` (relative to `root`) matched in `path`; None for other patterns."""
    if pattern.count("*") != 1 or any(char in pattern for char in "?["):
        return None
    regex = re.escape(pattern).replace(r"\*", "([^/]*)")
    match = re.fullmatch(regex, path.relative_to(root).as_posix())
    return match.group(1) if match else None


def _read_driver_params(paths: Sequence[Path], expected_exp_dim: Optional[int], exp_dim_key: str,
                        problems: Problems) -> List[Dict[str, np.ndarray]]:
    """Every frame's params, read as training reads a subject's. A frame whose expression dimension differs from
    the avatar's (or, without an avatar, from the first frame's) is named; a whole sequence of another dimension is
    one problem: this avatar cannot be driven by it."""
    params = []
    for path in paths:
        try:
            params.append(read_params(path))
        except DataError as error:
            problems.add_error(error)
    problems.raise_if_any()
    dims = {p["exp_coeff"].shape[1] for p in params}
    expected = expected_exp_dim if expected_exp_dim is not None else params[0]["exp_coeff"].shape[1]
    if expected_exp_dim is not None and len(dims) == 1 and dims != {expected}:
        raise DataError(f"the driver's exp_coeff has {sorted(dims)} coefficients ({paths[0]}) but "
                        f"{exp_dim_key} is {expected}: this avatar cannot be driven by this sequence")
    origin = exp_dim_key if expected_exp_dim is not None else f"the first frame ({paths[0].parent.name})"
    for path, frame in zip(paths, params):
        problem = exp_dim_problem(frame, expected, origin)
        if problem is not None:
            problems.add(path, problem)
    problems.raise_if_any()
    return params


def _check_camera_resolution(cfg: DatasetConfig, intrinsic: np.ndarray) -> None:
    """dataset.original_resolution must be the resolution of camera_path's intrinsics, as for a training subject.

    A camera inside a subject (`{subject}/cameras/{frame}/camera_X.npz`) is checked against that subject's recorded
    resolution when it has one; any other camera by its principal point alone.
    """
    path = Path(cfg.camera_path)
    if path.parent.parent.name == "cameras":
        subject = path.parents[2]
        check_original_resolution(cfg.original_resolution, [intrinsic], f"subject {subject} (of dataset.camera_path)",
                                  subject)
    else:
        check_original_resolution(cfg.original_resolution, [intrinsic], f"dataset.camera_path {path}")


def _read_camera(path: Path) -> Dict[str, np.ndarray]:
    return read_npz(path, CAMERA_SHAPES)
