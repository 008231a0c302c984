"""One subject folder: frames, cameras, splits, validated per-frame parameters and cameras.

Building a `Subject` checks everything the training stages will read, once, and fails with one `DataError`
listing the problems (missing or unreadable files, wrong array shapes, NaN/inf values, an expression dimension
that does not match the config). Parameters and cameras are small, so they are loaded here once and kept in
memory; datasets then only decode images per item.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from cgha.config import DatasetConfig
from cgha.dataset.arrays import CAMERA_SHAPES, read_npy_rows, read_npz
from cgha.dataset.layout import SubjectLayout
from cgha.dataset.validation import Problems, add_jpeg_problems, check_original_resolution, read_params
from cgha.errors import DataError
from cgha.utils.rotations import axis_angle_to_matrix

SPLITS = ("train", "test_cameras", "test_frames", "out_of_rig", "all")
# iBUG-68, or the 66 points Multiview-3DMM-Fitting (GHA's tracker) writes: iBUG-68 without the mouth corners
# 48 and 54. Both keep the mouth at rows 48..65, which is all the models index by position.
LANDMARK_COUNTS = (66, 68)
VERTEX_STRIDE = 100  # GHA supervises landmarks + every 100th tracked vertex
# Where meta.json keeps the recommended held-out sets: ours is {"splits": {"eval_camera_ids": [...], ...}}; other
# tools write {"split": {"test_cameras": [...], "test_frames": [...]}} or put the lists at the top level. Containers
# are searched in this order (None = the top level), and in each the first alias present wins.
_META_SPLIT_CONTAINERS = ("splits", "split", None)
_META_SPLIT_ALIASES = {
    "eval_camera_ids": ("eval_camera_ids", "test_cameras", "test_camera_ids", "eval_cameras", "held_out_cameras"),
    "eval_frame_ids": ("eval_frame_ids", "test_frames", "test_frame_ids", "eval_frames", "held_out_frames"),
}
_META_KEYS_LISTED = 12
# Where meta.json names the evaluation-only cameras outside the training rig (synthetic subjects from generator 1.1.0).
_META_OUT_OF_RIG_KEY = "out_of_rig_camera_ids"


def read_landmarks(path: Path) -> np.ndarray:
    """A frame's 3D landmarks [K, 3], K in LANDMARK_COUNTS."""
    landmarks = read_npy_rows(path, (None, 3))
    if landmarks.shape[0] not in LANDMARK_COUNTS:
        raise DataError(f"{path}: shape {list(landmarks.shape)}, expected [68, 3] (iBUG-68) or [66, 3] "
                        f"(Multiview-3DMM-Fitting's iBUG-68 without the mouth corners)")
    return landmarks


def _find_meta_list(meta: Dict, key: str, path: Path) -> Optional[List[str]]:
    """The list meta.json gives for `key` (eval_camera_ids / eval_frame_ids) under any known form, else None."""
    for container in _META_SPLIT_CONTAINERS:
        node = meta if container is None else meta.get(container)
        if not isinstance(node, dict):
            continue
        for alias in _META_SPLIT_ALIASES[key]:
            if alias in node:
                values = node[alias]
                where = alias if container is None else f"{container}.{alias}"
                if not isinstance(values, list) or not all(isinstance(v, (str, int)) for v in values):
                    raise DataError(f"{path}: '{where}' must be a list of ids, got {values!r}")
                return [str(v) for v in values]
    return None


def _describe_keys(meta: Dict) -> str:
    """meta.json's keys, one level of nesting deep (e.g. 'name, split.test_cams, split.train_cams')."""
    keys: List[str] = []
    for name, value in meta.items():
        keys += [f"{name}.{sub}" for sub in value] if isinstance(value, dict) and value else [name]
    listed = ", ".join(keys[:_META_KEYS_LISTED])
    return listed + (f" and {len(keys) - _META_KEYS_LISTED} more" if len(keys) > _META_KEYS_LISTED else "") or "none"


@dataclass(frozen=True)
class Split:
    """Which frames and cameras a dataset iterates over."""
    frames: Tuple[str, ...]
    cameras: Tuple[str, ...]


class Subject:
    """A validated subject folder.

    Attributes (F = all frames, C = all cameras of the subject, D = expression dim, K = landmarks + vertices):
        frames: sorted frame names, F of them; `frame_index[name]` is the stable per-frame id (GHA's exp_id).
        cameras: camera ids in use (config's camera_ids, or all found) plus held-out ones, without out-of-rig ones.
        out_of_rig_cameras: evaluation-only cameras outside the training rig (config's out_of_rig_camera_ids, or
            meta.json's splits.out_of_rig_camera_ids); never trained on, never in test_cameras or `all`.
        pose [F, 6], scale [F, 1], exp_coeff [F, D], landmarks [F, K, 3] (float32 numpy).
        intrinsics: {(frame, camera): [3, 3]} pixels at original_resolution; extrinsics: same keys, [3, 4].
    """

    def __init__(self, cfg: DatasetConfig, expected_exp_dim: Optional[int] = None,
                 exp_dim_key: str = "the config", lowres: bool = False, check_images: bool = True):
        if not cfg.dataroot:
            raise DataError("dataset.dataroot is empty: set it to a subject folder")
        self.cfg = cfg
        self.layout = SubjectLayout(Path(cfg.dataroot))
        self.lowres = lowres
        self.frames = self.layout.frames()
        self.frame_index = {name: i for i, name in enumerate(self.frames)}
        found_cameras = self.layout.cameras_in(self.frames[0])
        if not found_cameras:
            raise DataError(f"{self.layout.frame_dir(self.frames[0])} has no image_*.jpg files")
        self.meta_split = self._read_meta_split()
        self.out_of_rig_cameras = self._out_of_rig_cameras(found_cameras)
        self.train_cameras, self.eval_cameras = self._camera_split(found_cameras)
        self.train_frames, self.eval_frames = self._frame_split()
        self._check_meta_split_not_empty()
        self.cameras = tuple(self.train_cameras) + tuple(self.eval_cameras)

        # Every camera whose files are checked and loaded; `cameras` (the rig's) is what `all` iterates over.
        self.loaded_cameras = self.cameras + tuple(self.out_of_rig_cameras)

        problems = Problems(self.layout.root)
        self._check_files(problems, check_images)
        problems.raise_if_any()
        self._load_params(problems, expected_exp_dim, exp_dim_key)
        self._load_cameras(problems)
        problems.raise_if_any()
        check_original_resolution(cfg.original_resolution, self.intrinsics.values(), f"subject {self.layout.root}",
                                  self.layout.root)

    # ----------------------------------------------------------------------------------------- splits
    def _read_meta_split(self) -> Dict[str, List[str]]:
        """Held-out lists from meta.json for the config's empty eval_*_ids, when dataset.split_from_meta is on.

        A subject whose meta.json keeps no split under a known key is an error naming the keys it has: reading
        nothing would train on every view and leave evaluation nothing to measure, without a word."""
        wanted = [key for key in _META_SPLIT_ALIASES if not getattr(self.cfg, key)]
        if not (self.cfg.split_from_meta and wanted):
            return {}
        meta = self.layout.meta()
        path = self.layout.meta_path
        if meta is None:
            raise DataError(f"dataset.split_from_meta is true but {path} does not exist: set dataset.eval_camera_ids "
                            f"and dataset.eval_frame_ids, or dataset.split_from_meta=false")
        if not isinstance(meta, dict):
            raise DataError(f"{path}: expected a JSON object, got {type(meta).__name__}")
        found = {key: _find_meta_list(meta, key, path) for key in wanted}
        if all(values is None for values in found.values()):
            expected = " or ".join(f"{container}.{_META_SPLIT_ALIASES['eval_camera_ids'][i]} / "
                                   f"{container}.{_META_SPLIT_ALIASES['eval_frame_ids'][i]}"
                                   for container, i in (("splits", 0), ("split", 1)))
            raise DataError(f"dataset.split_from_meta is true but {path} has no held-out split under a known key "
                            f"(it has: {_describe_keys(meta)}; expected {expected}): set dataset.eval_camera_ids / "
                            f"eval_frame_ids instead")
        return {key: values for key, values in found.items() if values is not None}

    def _out_of_rig_cameras(self, found: List[str]) -> List[str]:
        """Out-of-rig cameras from the config, else from meta.json whatever dataset.split_from_meta says: a subject
        that names them must never have them trained on."""
        listed = list(self.cfg.out_of_rig_camera_ids) or self._meta_out_of_rig()
        unknown = [c for c in listed if c not in found]
        if unknown:
            raise DataError(f"{self.layout.frame_dir(self.frames[0])}: no images for out-of-rig camera(s) {unknown} "
                            f"(dataset.out_of_rig_camera_ids or meta.json splits.{_META_OUT_OF_RIG_KEY}); "
                            f"available: {found}")
        return listed

    def _meta_out_of_rig(self) -> List[str]:
        meta = self.layout.meta()
        splits = meta.get("splits") if isinstance(meta, dict) else None
        if not isinstance(splits, dict) or _META_OUT_OF_RIG_KEY not in splits:
            return []
        values = splits[_META_OUT_OF_RIG_KEY]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise DataError(f"{self.layout.meta_path}: 'splits.{_META_OUT_OF_RIG_KEY}' must be a list of camera ids, "
                            f"got {values!r}")
        return values

    def _meta_split(self, key: str) -> List[str]:
        return list(self.meta_split.get(key, []))

    def _check_meta_split_not_empty(self) -> None:
        """Held-out sets were asked for (split_from_meta), so ending up with none is an error, not a silent
        training on everything."""
        if self.cfg.split_from_meta and not self.eval_cameras and not self.eval_frames:
            raise DataError(f"dataset.split_from_meta is true but the held-out split is empty: {self.layout.meta_path} "
                            f"lists no held-out cameras or frames; set dataset.eval_camera_ids / eval_frame_ids, or "
                            f"dataset.split_from_meta=false to train on every view")

    def _camera_split(self, found: List[str]) -> Tuple[List[str], List[str]]:
        pool = list(self.cfg.camera_ids) or found
        unknown = [c for c in pool if c not in found]
        held_out = list(self.cfg.eval_camera_ids) or self._meta_split("eval_camera_ids")
        unknown += [c for c in held_out if c not in found]
        if unknown:
            raise DataError(f"{self.layout.frame_dir(self.frames[0])}: no images for camera(s) {unknown} "
                            f"(dataset.camera_ids / eval_camera_ids); available: {found}")
        both = [c for c in held_out if c in self.out_of_rig_cameras]
        if both:
            raise DataError(f"camera(s) {both} are both held-out rig cameras (dataset.eval_camera_ids) and out-of-rig "
                            f"cameras ({self.out_of_rig_cameras}); a camera belongs to one split")
        train = [c for c in pool if c not in held_out and c not in self.out_of_rig_cameras]
        if not train:
            raise DataError(f"every camera is held out (dataset.eval_camera_ids={held_out}); nothing to train on")
        return train, held_out

    def _frame_split(self) -> Tuple[List[str], List[str]]:
        held_out = [self._frame_name(f) for f in (list(self.cfg.eval_frame_ids) or self._meta_split("eval_frame_ids"))]
        unknown = [f for f in held_out if f not in self.frame_index]
        if unknown:
            raise DataError(f"dataset.eval_frame_ids names frame(s) {unknown} that are not under "
                            f"{self.layout.root / 'images'} (first frames: {self.frames[:3]})")
        train = [f for f in self.frames if f not in held_out]
        if not train:
            raise DataError("every frame is held out (dataset.eval_frame_ids); nothing to train on")
        return train, held_out

    def _frame_name(self, frame: str) -> str:
        """A frame id as its folder name. Config ids are the text written (cgha/config.py keeps an unquoted 0036 as
        '0036', never the octal number 30); an id without its leading zeros (36, or a number in meta.json) names the
        one frame folder with that number ('0036')."""
        if frame in self.frame_index or not frame.isdigit():
            return frame
        matches = [name for name in self.frames if name.isdigit() and int(name) == int(frame)]
        return matches[0] if len(matches) == 1 else frame

    def split(self, name: str) -> Split:
        """Frames x cameras of a named split: train, test_cameras, test_frames, out_of_rig or all (the rig's cameras).

        out_of_rig is like test_cameras: the training frames, seen from the out-of-rig cameras (empty without them)."""
        if name == "train":
            return Split(tuple(self.train_frames), tuple(self.train_cameras))
        if name == "test_cameras":
            return Split(tuple(self.train_frames), tuple(self.eval_cameras))
        if name == "test_frames":
            return Split(tuple(self.eval_frames), tuple(self.train_cameras))
        if name == "out_of_rig":
            return Split(tuple(self.train_frames), tuple(self.out_of_rig_cameras))
        if name == "all":
            return Split(tuple(self.frames), tuple(self.cameras))
        raise DataError(f"unknown split '{name}'; expected one of {', '.join(SPLITS)}")

    # ------------------------------------------------------------------------------------------ checks
    def _check_files(self, problems: Problems, check_images: bool) -> None:
        """Every file the stage will read exists; JPEGs are checked for truncation without decoding them."""
        required: List[Path] = []
        for frame in self.frames:
            for camera in self.loaded_cameras:
                required += [self.layout.image(frame, camera, self.lowres), self.layout.mask(frame, camera, self.lowres)]
        if check_images:
            add_jpeg_problems(problems, required)
        for frame in self.frames:
            paths = [self.layout.params(frame), self.layout.landmarks(frame), self.layout.vertices(frame)]
            paths += [self.layout.camera(frame, camera) for camera in self.loaded_cameras]
            for path in paths:
                if not path.is_file():
                    problems.add(path, "missing")

    def _load_params(self, problems: Problems, expected_exp_dim: Optional[int], exp_dim_key: str) -> None:
        poses, scales, exps, landmarks = [], [], [], []
        exp_dim = expected_exp_dim
        origin = exp_dim_key if expected_exp_dim is not None else f"frame {self.frames[0]}"
        for frame in self.frames:
            try:
                params = read_params(self.layout.params(frame), exp_dim, origin)
                lmk = read_landmarks(self.layout.landmarks(frame))
                verts = read_npy_rows(self.layout.vertices(frame), (None, 3), stride=VERTEX_STRIDE)
            except DataError as error:
                problems.add_error(error)
                continue
            exp = params["exp_coeff"]
            if exp_dim is None:
                exp_dim = exp.shape[1]
            poses.append(params["pose"][0])
            scales.append(params["scale"])
            exps.append(exp[0])
            landmarks.append(np.concatenate([lmk, verts], 0))
        problems.raise_if_any()
        counts = {len(item) for item in landmarks}
        if len(counts) != 1:
            problems.add(self.layout.root / "params", f"vertices.npy differ in length between frames ({sorted(counts)})")
            problems.raise_if_any()
        self.pose = np.stack(poses).astype(np.float32)
        self.scale = np.stack(scales).astype(np.float32)
        self.exp_coeff = np.stack(exps).astype(np.float32)
        self.landmarks = np.stack(landmarks).astype(np.float32)
        self.exp_dim = int(self.exp_coeff.shape[1])

    def _load_cameras(self, problems: Problems) -> None:
        keys = [(frame, camera) for frame in self.frames for camera in self.loaded_cameras]
        paths = [self.layout.camera(frame, camera) for frame, camera in keys]
        def read(path: Path) -> Optional[Dict[str, np.ndarray]]:
            try:
                return read_npz(path, CAMERA_SHAPES)
            except DataError as error:
                problems.add_error(error)
                return None

        with ThreadPoolExecutor(max_workers=8) as pool:
            loaded = list(pool.map(read, paths))
        self.intrinsics: Dict[Tuple[str, str], np.ndarray] = {}
        self.extrinsics: Dict[Tuple[str, str], np.ndarray] = {}
        for key, path, arrays in zip(keys, paths, loaded):
            if arrays is None:
                continue
            rotation = arrays["extrinsic"][:, :3].astype(np.float64)
            if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-3) or np.linalg.det(rotation) < 0:
                problems.add(path, "extrinsic[:, :3] is not a rotation matrix")
                continue
            self.intrinsics[key] = arrays["intrinsic"].astype(np.float32)
            self.extrinsics[key] = arrays["extrinsic"].astype(np.float32)

    # --------------------------------------------------------------------------------------- accessors
    def camera_matrices(self, frame: str, camera: str, resolution: int) -> Tuple[np.ndarray, np.ndarray]:
        """(K [3, 3] in pixels of a `resolution`^2 image, world-to-camera viewmat [4, 4])."""
        scale = resolution / self.cfg.original_resolution
        intrinsic = self.intrinsics[(frame, camera)].copy()
        intrinsic[:2] *= scale
        viewmat = np.eye(4, dtype=np.float32)
        viewmat[:3] = self.extrinsics[(frame, camera)]
        return intrinsic, viewmat

    def neutral_landmarks(self) -> np.ndarray:
        """First frame's landmarks mapped back to canonical space: S^-1 R^T (x - T). Shape [K, 3]."""
        rotation = axis_angle_to_matrix(torch.from_numpy(self.pose[0, :3]).double()).numpy()
        centred = self.landmarks[0].astype(np.float64) - self.pose[0, 3:]
        return ((centred @ rotation) / self.scale[0]).astype(np.float32)
