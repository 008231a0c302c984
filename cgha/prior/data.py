"""Identities for the prior: synthetic subjects generated on demand, sharded over processes, their views held in
memory (uint8) as one block per identity.

    paths = ensure_identities(cfg.data, shard_identities(all_ids, rank, world))
    views = load_views(path, resolution)                 # every training frame x camera
    batch = views.batch(torch.tensor([0, 5]), device)    # float images and cameras of two views
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from cgha.config import DatasetConfig
from cgha.dataset.subject import Subject
from cgha.dataset.validation import recorded_resolution
from cgha.dataset.views import frame_params, load_view
from cgha.errors import DataError
from cgha.prior.config import PriorDataSection


def identity_dir(root: str | Path, identity: int) -> Path:
    """Folder of generator identity `identity` under the data root: {root}/id{identity:04d}."""
    return Path(root) / f"id{identity:04d}"


def prior_identities(data: PriorDataSection) -> List[int]:
    """The K generator identities of a prior config, in order."""
    return list(range(data.first_identity, data.first_identity + data.num_identities))


def shard_identities(identities: Sequence[int], rank: int, world: int) -> List[int]:
    """The identities process `rank` of `world` owns: every world-th one from position rank."""
    return list(identities[rank::world])


def ensure_identities(data: PriorDataSection, identities: Sequence[int], progress: bool = True) -> List[Path]:
    """The subject folders of `identities`, generating missing ones when data.generate (else DataError naming the
    first missing folder)."""
    from cgha.synthetic import generate_subject

    paths = []
    for identity in identities:
        path = identity_dir(data.root, identity)
        if not (path / "meta.json").is_file():
            if not data.generate:
                raise DataError(f"identity {identity}: {path} has no subject (meta.json); set data.generate=true or "
                                f"make it with preprocess/make_synthetic.py --identity {identity} --out {path}")
            generate_subject(path, identity=identity, frames=data.frames, cameras=data.cameras,
                             resolution=data.resolution, seed=data.seed, progress=progress)
        paths.append(path)
    return paths


@dataclass
class Views:
    """M views of one subject. images [M, 3, R, R] uint8 composited on white; Ks [M, 3, 3] in pixels of R;
    viewmats [M, 4, 4]; pose [M, 6]; scale [M, 1]; exp [M, D]; landmarks [M, L, 3] (world); frames, cameras: the
    frame and camera id of each view."""
    images: torch.Tensor
    Ks: torch.Tensor
    viewmats: torch.Tensor
    pose: torch.Tensor
    scale: torch.Tensor
    exp: torch.Tensor
    landmarks: torch.Tensor
    frames: List[str]
    cameras: List[str]

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device) -> "Views":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Views(**{key: value.to(device) if isinstance(value, torch.Tensor) else value
                        for key, value in moved.items()})

    def batch(self, index: torch.Tensor, device: torch.device) -> Dict[str, torch.Tensor]:
        """Views `index` [B] as float tensors on `device`: image [B, 3, R, R] in [0, 1], Ks, viewmats, pose, scale,
        exp."""
        index = index.to(self.images.device)
        out = {"image": self.images.index_select(0, index).float().div_(255.0)}
        for key in ("Ks", "viewmats", "pose", "scale", "exp"):
            out[key] = getattr(self, key).index_select(0, index)
        return {key: value.to(device, non_blocking=True) for key, value in out.items()}


def open_subject(root: str | Path, resolution: int) -> Subject:
    """A subject folder read at `resolution` (its intrinsics' resolution from meta.json); its `all` split is every
    frame and rig camera (the out-of-rig cameras stay apart)."""
    root = Path(root)
    recorded = recorded_resolution(root)
    if recorded is None:
        raise DataError(f"{root}: no recorded intrinsics resolution (meta.json original_resolution); not a "
                        f"synthetic or tracked subject")
    cfg = DatasetConfig(dataroot=str(root), original_resolution=recorded[0], resolution=resolution,
                        split_from_meta=False, num_workers=0)
    return Subject(cfg)


def load_views(root: str | Path, resolution: int, frames: Optional[Sequence[str]] = None,
               cameras: Optional[Sequence[str]] = None, subject: Optional[Subject] = None) -> Views:
    """Every (frame, camera) view of a subject at resolution^2: all its frames and rig cameras unless `frames` /
    `cameras` name some (out-of-rig cameras included)."""
    subject = subject or open_subject(root, resolution)
    split = subject.split("all")
    frames = list(frames) if frames is not None else list(split.frames)
    cameras = list(cameras) if cameras is not None else list(split.cameras)
    unknown = [f for f in frames if f not in subject.frame_index]
    known_cameras = set(subject.cameras) | set(subject.out_of_rig_cameras)
    unknown += [c for c in cameras if c not in known_cameras]
    if unknown:
        raise DataError(f"{subject.layout.root}: no frame or camera named {', '.join(unknown)}")
    images, columns = [], {key: [] for key in ("Ks", "viewmats", "pose", "scale", "exp", "landmarks")}
    names, cams = [], []
    for frame in frames:
        params = frame_params(subject, frame)
        for camera in cameras:
            view = load_view(subject, frame, camera, resolution)
            image = view["image"] * view["mask"] + (1.0 - view["mask"])  # on white, as the renders are
            images.append((image * 255.0 + 0.5).clamp(0, 255).to(torch.uint8))
            for key, value in (("Ks", view["intrinsics"]), ("viewmats", view["viewmat"]), ("pose", params["pose"]),
                               ("scale", params["scale"]), ("exp", params["exp_coeff"]),
                               ("landmarks", params["landmarks_3d"])):
                columns[key].append(value.float())
            names.append(frame)
            cams.append(camera)
    return Views(torch.stack(images), *(torch.stack(columns[key]) for key in
                                        ("Ks", "viewmats", "pose", "scale", "exp", "landmarks")), names, cams)
