"""Region-adaptive loss weights: a per-pixel weight map, higher on eyes, mouth and nose, from the frame's iBUG-68
landmarks projected into the view. Multiplied into the batch's `visibles` masks, the L1 losses |w (render -
target)| become weighted L1 and everything else is unchanged."""
from __future__ import annotations

from typing import Dict

import torch

# iBUG-68 index ranges of each region (right eye, left eye, mouth, nose).
REGIONS = {"eye": [range(36, 42), range(42, 48)], "mouth": [range(48, 68)], "nose": [range(27, 36)]}
MIN_RADIUS_PX = 2.0  # an ellipse is at least this wide, so a closed eye's thin landmark line still has a region


def project(points: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """World points [B, P, 3] -> pixel coordinates [B, P, 2] (viewmat [B, 4, 4], K [B, 3, 3] of the image)."""
    cam = points @ viewmat[:, :3, :3].transpose(1, 2) + viewmat[:, None, :3, 3]
    pix = cam @ K.transpose(1, 2)
    return pix[..., :2] / pix[..., 2:].clamp_min(1e-6)


def region_weight_map(landmarks: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor, size: int,
                      weights: Dict[str, float], margin: float) -> torch.Tensor:
    """Weights [B, 1, size, size]: 1, or a region's weight inside its ellipse (the largest where they overlap).
    landmarks [B, >=68, 3] world (the first 68 iBUG-68); K in pixels of the size x size image."""
    pix = project(landmarks[:, :68], viewmat, K)                                     # [B, 68, 2]
    coords = torch.arange(size, device=pix.device, dtype=pix.dtype) + 0.5
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    out = torch.ones(pix.shape[0], 1, size, size, device=pix.device, dtype=pix.dtype)
    for name, ranges in REGIONS.items():
        for indices in ranges:
            points = pix[:, list(indices)]                                             # [B, P, 2]
            centre = points.mean(1)                                                    # [B, 2]
            radii = ((points - centre[:, None]).abs().amax(1) * margin).clamp_min(MIN_RADIUS_PX)
            dx = (grid_x[None] - centre[:, 0, None, None]) / radii[:, 0, None, None]
            dy = (grid_y[None] - centre[:, 1, None, None]) / radii[:, 1, None, None]
            inside = (dx ** 2 + dy ** 2 <= 1.0)[:, None]
            out = torch.where(inside, torch.maximum(out, torch.full_like(out, weights[name])), out)
    return out


def weighted_batch(batch: Dict[str, torch.Tensor], weights: Dict[str, float], margin: float
                   ) -> Dict[str, torch.Tensor]:
    """A copy of a training batch whose `visibles` and `visibles_coarse` carry the region weights."""
    out = dict(batch)
    for suffix in ("", "_coarse"):
        visible = batch[f"visibles{suffix}"]
        out[f"visibles{suffix}"] = visible * region_weight_map(batch["landmarks_3d"], batch["viewmat"],
                                                               batch[f"intrinsics{suffix}"], visible.shape[-1],
                                                               weights, margin)
    return out
