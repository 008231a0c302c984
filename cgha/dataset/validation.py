"""Checks shared by every reader of subject data: the training stages (`Subject`) and reenactment drivers.

One implementation per check, so a file that training rejects is rejected by reenactment with the same words:
JPEG integrity, a frame's parameters and expression dimension, and the resolution the intrinsics are given at.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from cgha.dataset.arrays import PARAMS_SHAPES, read_npz
from cgha.dataset.layout import SubjectLayout
from cgha.errors import ConfigError, DataError
from cgha.utils.image_io import jpeg_problem

_MAX_LISTED = 8
# Without a recorded resolution, the principal point decides: in pixels of the image the intrinsics belong to, it
# sits near the centre (GHA's NeRSemble crop puts it at ~0.43 of the side, our centred crop and the synthetic rig at
# ~0.5). A wrong original_resolution moves it proportionally: 2x too large puts a centred one at 0.25, 4x at 0.125,
# 2x too small at 1.0. Outside this band (as a fraction of original_resolution) the intrinsics cannot belong to an
# original_resolution^2 image; inside it, a principal point up to 20 % of the side off centre is accepted.
PRINCIPAL_POINT_BAND = (0.3, 0.7)


class Problems:
    """Collects data problems of one folder and raises them as one readable error."""

    def __init__(self, root: Path, kind: str = "subject"):
        self.root = root
        self.kind = kind
        self.items: List[str] = []

    def add(self, path: Path | str, what: str) -> None:
        self.items.append(f"{self._short(path)}: {what}")

    def add_error(self, error: DataError) -> None:
        self.items.append(str(error).replace(str(self.root) + os.sep, ""))

    def _short(self, path: Path | str) -> str:
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        listed = "; ".join(self.items[:_MAX_LISTED])
        more = f"; and {len(self.items) - _MAX_LISTED} more" if len(self.items) > _MAX_LISTED else ""
        raise DataError(f"{self.kind} {self.root}: {len(self.items)} problem(s): {listed}{more}")


def add_jpeg_problems(problems: Problems, paths: Sequence[Path]) -> None:
    """Missing, empty, foreign or truncated JPEGs among `paths`, checked without decoding them."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        for path, problem in zip(paths, pool.map(jpeg_problem, paths)):
            if problem is not None:
                problems.add(path, problem)


def exp_dim_problem(params: Dict[str, np.ndarray], exp_dim: int, exp_dim_origin: str) -> Optional[str]:
    """What is wrong with a frame's exp_coeff [1, D] when D is not `exp_dim` (named by `exp_dim_origin`: a config
    key or a frame), else None."""
    have = params["exp_coeff"].shape[1]
    return None if have == exp_dim else f"exp_coeff has {have} coefficients but {exp_dim_origin} expects {exp_dim}"


def read_params(path: Path, exp_dim: Optional[int] = None, exp_dim_origin: str = "the config") -> Dict[str, np.ndarray]:
    """A frame's params.npz: pose [1, 6], scale [1], exp_coeff [1, D]. DataError naming the file when it is
    unreadable or malformed, or (given `exp_dim`) has another expression dimension."""
    params = read_npz(path, PARAMS_SHAPES)
    problem = exp_dim_problem(params, exp_dim, exp_dim_origin) if exp_dim is not None else None
    if problem is not None:
        raise DataError(f"{path}: {problem}")
    return params


# ------------------------------------------------------------------------------------------------ resolution
def recorded_resolution(root: Path) -> Optional[tuple[int, str]]:
    """(resolution of the intrinsics, where it is recorded) from the subject's own files, or None.

    meta.json's `original_resolution` (cgha.synthetic) or preprocess.json's `settings.size`
    (preprocess/preprocess_nersemble.py) state the resolution the intrinsics were written at. The image files do
    not: GHA's layout stores images at any size (low-res copies, downsized full-res images) and resizes on read.
    """
    layout = SubjectLayout(root)
    meta = _read_json(layout.meta_path)
    if _is_resolution(meta.get("original_resolution")):
        return meta["original_resolution"], f"{layout.meta_path.name} original_resolution"
    settings = _read_json(layout.preprocess_manifest_path).get("settings")
    if isinstance(settings, dict) and _is_resolution(settings.get("size")):
        return settings["size"], f"{layout.preprocess_manifest_path.name} settings.size"
    return None


def check_original_resolution(original_resolution: int, intrinsics: Iterable[np.ndarray], owner: str,
                              subject_root: Optional[Path] = None) -> None:
    """ConfigError when `dataset.original_resolution` is not the resolution the intrinsics [3, 3] are in pixels of.

    The resolution recorded in `subject_root` (the intrinsics' subject folder) decides when there is one; otherwise
    the intrinsics' principal point, which must lie in PRINCIPAL_POINT_BAND of an original_resolution^2 image.
    `owner` says whose intrinsics they are in the message (e.g. 'subject data/id0').
    """
    recorded = recorded_resolution(subject_root) if subject_root is not None else None
    if recorded is not None:
        value, where = recorded
        if value != original_resolution:
            raise ConfigError(f"dataset.original_resolution is {original_resolution} but {owner} records {value} "
                              f"({where}), the resolution its intrinsics are in pixels of: set "
                              f"dataset.original_resolution={value}")
        return
    centres = np.array([[float(K[0, 2]), float(K[1, 2])] for K in intrinsics])
    if not len(centres):
        return
    centre = np.median(centres, axis=0)
    relative = centre / original_resolution
    low, high = PRINCIPAL_POINT_BAND
    if np.all((relative >= low) & (relative <= high)):
        return
    implied = int(round(centre.mean() * 2))
    raise ConfigError(f"dataset.original_resolution is {original_resolution} but the intrinsics of {owner} "
                      f"have their principal point at ({centre[0]:.1f}, {centre[1]:.1f}) px, near the centre of a "
                      f"~{implied}^2 image rather than of a {original_resolution}^2 one: set "
                      f"dataset.original_resolution to the resolution its intrinsics are given at")


def _is_resolution(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _read_json(path: Path) -> dict:
    """A JSON object file's contents; {} when the file is absent or holds no object."""
    if not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    return loaded if isinstance(loaded, dict) else {}
