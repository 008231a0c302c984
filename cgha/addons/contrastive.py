"""Contrastive adjacent-view regularisation: the render's descriptor (its RGB pooled to 16 x 16, mean removed) is
pulled toward the descriptors of cached recent renders from adjacent views (camera axes within a maximum angle,
another camera), by one minus their cosine similarity. The cache holds detached descriptors of the last renders."""
from __future__ import annotations

import math
from collections import deque
from typing import Optional

import torch
import torch.nn.functional as F

DESCRIPTOR_SIZE = 16


def descriptor(render: torch.Tensor) -> torch.Tensor:
    """render [B, C >= 3, H, W] -> [B, 3 * 16 * 16] pooled RGB with each image's mean removed."""
    pooled = F.adaptive_avg_pool2d(render[:, :3].float(), DESCRIPTOR_SIZE).flatten(1)
    return pooled - pooled.mean(1, keepdim=True)


class AdjacentViewCache:
    def __init__(self, size: int, max_angle_deg: float):
        self.entries = deque(maxlen=size)  # (descriptor [3*16*16], camera axis [3], view id)
        self.cos_max = math.cos(math.radians(max_angle_deg))

    def loss(self, render: torch.Tensor, viewmat: torch.Tensor, view_id: torch.Tensor) -> Optional[torch.Tensor]:
        """Mean (1 - cosine) between each render and the cached adjacent ones (None when none is adjacent); then
        the batch's renders join the cache."""
        current = descriptor(render)
        axes = viewmat[:, 2, :3]  # camera z axis in world coordinates (rows of the world-to-camera rotation)
        terms = []
        for index in range(render.shape[0]):
            for cached, axis, view in self.entries:
                if view != int(view_id[index]) and float(axes[index] @ axis) >= self.cos_max:
                    terms.append(1.0 - F.cosine_similarity(current[index], cached, dim=0))
        for index in range(render.shape[0]):
            self.entries.append((current[index].detach(), axes[index].detach(), int(view_id[index])))
        return torch.stack(terms).mean() if terms else None
