"""MeshDataset: frames with several low-resolution views each, for the mesh-head stage (GHA's MeshDataset)."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch.utils.data import Dataset

from cgha.config import DatasetConfig
from cgha.dataset.loader import DatasetKey, resolve_key
from cgha.dataset.subject import Subject
from cgha.dataset.views import frame_params, load_view
from cgha.errors import ConfigError


class MeshDataset(Dataset):
    """One item per frame of `split`: `num_sample_view` random cameras of that split, read from the low-res copies.

    Item (V = num_sample_view, R = dataset.resolution, K = 68 landmarks + every 100th tracked vertex):
        images [V, 3, R, R] multiplied by the mask (black background, as GHA), masks [V, 1, R, R],
        visibles [V, 1, R, R], intrinsics [V, 3, 3] (pixels at R), viewmats [V, 4, 4], extrinsics [V, 3, 4],
        view_ids [V] (indices into `self.cameras`), pose [6], scale [1], exp_coeff [D], landmarks_3d [K, 3], exp_id.
    Views are drawn with the generator of the key: seeded by the training sampler's `Draw` (so runs and resumes
    are reproducible with any number of workers), torch's global one for a plain index.
    """

    def __init__(self, cfg: DatasetConfig, split: str = "train", expected_exp_dim: Optional[int] = None,
                 exp_dim_key: str = "the config", subject: Optional[Subject] = None):
        self.subject = subject or Subject(cfg, expected_exp_dim, exp_dim_key, lowres=True)
        chosen = self.subject.split(split)
        self.frames, self.cameras = chosen.frames, chosen.cameras
        self.resolution = cfg.resolution
        self.num_sample_view = min(cfg.num_sample_view, len(self.cameras))
        if split == "train" and cfg.num_sample_view > len(self.cameras):
            raise ConfigError(f"'dataset.num_sample_view' is {cfg.num_sample_view} but the train split has only "
                              f"{len(self.cameras)} camera(s): {list(self.cameras)}")
        self.init_landmarks_3d_neutral = torch.from_numpy(self.subject.neutral_landmarks())

    @property
    def num_frames(self) -> int:
        """All frames of the subject (the size of per-frame tables such as delta poses)."""
        return len(self.subject.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key: DatasetKey) -> Dict[str, torch.Tensor]:
        index, generator = resolve_key(key)
        views = torch.randperm(len(self.cameras), generator=generator)[: self.num_sample_view]
        return self._item(self.frames[index], views)

    def landmark_targets(self) -> Dict[str, torch.Tensor]:
        """Every frame of the split at once, without images: exp_coeff [F, D], pose [F, 6], scale [F, 1],
        landmarks_3d [F, K, 3] (world)."""
        params = [frame_params(self.subject, frame) for frame in self.frames]
        return {key: torch.stack([entry[key] for entry in params])
                for key in ("exp_coeff", "pose", "scale", "landmarks_3d")}

    def all_views(self, index: int) -> Dict[str, torch.Tensor]:
        """Like an item, but with every camera of the split in order (for evaluation)."""
        return self._item(self.frames[index], torch.arange(len(self.cameras)))

    def _item(self, frame: str, view_ids: torch.Tensor) -> Dict[str, torch.Tensor]:
        views = [load_view(self.subject, frame, self.cameras[i], self.resolution, lowres=True) for i in view_ids]
        masks = torch.stack([view["mask"] for view in views])
        item = {
            "images": torch.stack([view["image"] for view in views]) * masks,
            "masks": masks,
            "visibles": torch.stack([view["visible"] for view in views]),
            "intrinsics": torch.stack([view["intrinsics"] for view in views]),
            "viewmats": torch.stack([view["viewmat"] for view in views]),
            "extrinsics": torch.stack([view["extrinsics"] for view in views]),
            "view_ids": view_ids,
        }
        item.update(frame_params(self.subject, frame))
        return item
