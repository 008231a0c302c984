"""GHA's scale-and-crop augmentation of the (render, target) pair fed to the super-resolution network."""
from __future__ import annotations

import random
from typing import Tuple

import torch
import torch.nn.functional as F

# GHA's zoom range; `train.crop_scale_range` widens it (free-view training, issue 16).
SCALE_RANGE = (0.8, 1.25)


def random_scale_crop(render: torch.Tensor, image: torch.Tensor, visible: torch.Tensor, rng: random.Random,
                      scale_range: Tuple[float, float] = SCALE_RANGE
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zoom the coarse render [B, C, r, r] and the fine target/visibility [B, 3|1, R, R] (R = k r) by one random
    factor in ``scale_range`` (GHA: [0.8, 1.25)), then crop (zoom in) or pad with white (zoom out) back to r and R at
    matching positions.

    The factor is rounded so that r * factor is whole, so both images stay pixel-aligned (as GHA does).
    """
    coarse, fine = render.shape[-1], image.shape[-1]
    ratio = fine // coarse
    size = max(1, int(coarse * rng.uniform(*scale_range)))
    render = F.interpolate(render, size=(size, size), mode="bilinear", align_corners=False)
    image = F.interpolate(image, size=(size * ratio, size * ratio), mode="bilinear", align_corners=False)
    visible = F.interpolate(visible, size=(size * ratio, size * ratio), mode="nearest")
    if size >= coarse:
        top, left = rng.randint(0, size - coarse), rng.randint(0, size - coarse)
        return (render[..., top:top + coarse, left:left + coarse],
                image[..., top * ratio:(top + coarse) * ratio, left * ratio:(left + coarse) * ratio],
                visible[..., top * ratio:(top + coarse) * ratio, left * ratio:(left + coarse) * ratio])
    top, left = rng.randint(0, coarse - size), rng.randint(0, coarse - size)
    return (_paste(render, coarse, top, left), _paste(image, fine, top * ratio, left * ratio),
            _paste(visible, fine, top * ratio, left * ratio))


def _paste(patch: torch.Tensor, size: int, top: int, left: int) -> torch.Tensor:
    """`patch` on a white (ones) canvas of `size` x `size` at (top, left); differentiable w.r.t. the patch."""
    pad = (left, size - left - patch.shape[-1], top, size - top - patch.shape[-2])
    return F.pad(patch - 1.0, pad) + 1.0
