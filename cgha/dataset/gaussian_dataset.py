"""GaussianDataset: single full-resolution views composited on white, for the Gaussian-head stage."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cgha.config import DatasetConfig
from cgha.dataset.loader import DatasetKey, resolve_key
from cgha.dataset.subject import Subject
from cgha.dataset.views import frame_params, load_view
from cgha.errors import ConfigError

COARSE_FACTOR = 4  # the Gaussians are rendered at 1/4 of the output resolution, then super-resolved


class GaussianDataset(Dataset):
    """Views of `split` at `dataset.resolution` plus 1/4-resolution copies.

    `views="random"` (training, GHA): one item per frame, with one random camera, drawn with the key's generator
    (cgha.dataset.loader.Draw; torch's global one for a plain index). `views="all"` (evaluation): one item per
    (frame, camera) pair, in a fixed order.

    Item (R = dataset.resolution, r = R / 4): images [3, R, R] composited on white with the mask (as GHA),
    masks [1, R, R], visibles [1, R, R], images_coarse [3, r, r], masks_coarse, visibles_coarse [1, r, r],
    intrinsics [3, 3] (pixels at R), intrinsics_coarse [3, 3] (pixels at r), viewmat [4, 4], extrinsics [3, 4],
    view_id, pose [6], scale [1], exp_coeff [D], landmarks_3d [K, 3], exp_id.
    """

    def __init__(self, cfg: DatasetConfig, split: str = "train", views: str = "random",
                 expected_exp_dim: Optional[int] = None, exp_dim_key: str = "the config",
                 subject: Optional[Subject] = None):
        if cfg.resolution % COARSE_FACTOR:
            raise ConfigError(f"'dataset.resolution' must be divisible by {COARSE_FACTOR} for the Gaussian stage, "
                              f"got {cfg.resolution}")
        if views not in ("random", "all"):
            raise ValueError(f"views must be 'random' or 'all', got {views!r}")
        self.subject = subject or Subject(cfg, expected_exp_dim, exp_dim_key)
        chosen = self.subject.split(split)
        self.frames, self.cameras = chosen.frames, chosen.cameras
        self.views = views
        self.resolution = cfg.resolution

    @property
    def num_frames(self) -> int:
        return len(self.subject.frames)

    def __len__(self) -> int:
        return len(self.frames) * (len(self.cameras) if self.views == "all" else 1)

    def __getitem__(self, key: DatasetKey) -> Dict[str, torch.Tensor]:
        index, generator = resolve_key(key)
        if self.views == "all":
            frame, view_id = self.frames[index // len(self.cameras)], index % len(self.cameras)
        else:
            frame, view_id = self.frames[index], int(torch.randint(len(self.cameras), (), generator=generator))
        view = load_view(self.subject, frame, self.cameras[view_id], self.resolution)
        mask = view["mask"]
        image = view["image"] * mask + (1.0 - mask)
        coarse = F.interpolate(torch.cat([image, mask, view["visible"]])[None], scale_factor=1 / COARSE_FACTOR,
                               mode="area")[0]
        intrinsics_coarse = view["intrinsics"].clone()
        intrinsics_coarse[:2] /= COARSE_FACTOR
        item = {
            "images": image,
            "masks": mask,
            "visibles": view["visible"],
            "images_coarse": coarse[:3],
            "masks_coarse": coarse[3:4],
            "visibles_coarse": coarse[4:5],
            "intrinsics": view["intrinsics"],
            "intrinsics_coarse": intrinsics_coarse,
            "viewmat": view["viewmat"],
            "extrinsics": view["extrinsics"],
            "view_id": torch.tensor(view_id, dtype=torch.long),
        }
        item.update(frame_params(self.subject, frame))
        return item
