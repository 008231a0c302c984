"""Progressive resolution: train on downsampled views first (0.5, 0.75, then 1.0 of the resolution at milestones
of the run), cheaper early steps at the cost of detail learnt later."""
from __future__ import annotations

from typing import Dict, Sequence

import torch
import torch.nn.functional as F

IMAGE_KEYS = ("images", "masks", "visibles")


def resolution_scale(iteration: int, total: int, scales: Sequence[float], milestones: Sequence[float]) -> float:
    """The scale of the step after `iteration` steps of a `total`-step run."""
    progress = iteration / max(total, 1)
    return float(scales[sum(progress >= m for m in milestones)])


def downsampled_batch(batch: Dict[str, torch.Tensor], scale: float) -> Dict[str, torch.Tensor]:
    """A copy of a training batch at `scale` of its resolution (rounded to a multiple of COARSE_FACTOR, the coarse
    copies COARSE_FACTOR smaller), intrinsics scaled to match; the batch itself when nothing changes."""
    from cgha.dataset.gaussian_dataset import COARSE_FACTOR  # the dataset imports the config: import it late

    full = batch["images"].shape[-1]
    size = max(COARSE_FACTOR, round(full * scale / COARSE_FACTOR) * COARSE_FACTOR)
    if size == full:
        return batch
    out = dict(batch)
    for suffix, side in (("", size), ("_coarse", size // COARSE_FACTOR)):
        ratio = side / batch[f"images{suffix}"].shape[-1]
        for key in IMAGE_KEYS:
            out[f"{key}{suffix}"] = F.interpolate(batch[f"{key}{suffix}"], size=(side, side), mode="area")
        intrinsics = batch[f"intrinsics{suffix}"].clone()
        intrinsics[:, :2] *= ratio
        out[f"intrinsics{suffix}"] = intrinsics
    return out
