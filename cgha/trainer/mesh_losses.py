"""Losses of the mesh-head stage (GHA's terms)."""
from __future__ import annotations

import torch


def laplacian_loss(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """GHA's uniform Laplacian regulariser: mean squared offset of each vertex from the mean of its face neighbours.

    verts [B, M, 3], faces [F, 3] -> scalar. Each face contributes its two other corners to each corner (so an
    edge shared by two faces counts twice, as in GHA).
    """
    batch, count, _ = verts.shape
    # index_select, not verts[:, faces]: every vertex is a corner of several faces, and the backward of indexing
    # (index_put_ with accumulate) adds them with unordered atomics on multi-threaded CPUs at demo-size meshes.
    corners = verts.index_select(1, faces.reshape(-1)).view(batch, -1, 3, 3)  # [B, F, 3, 3]
    total = torch.zeros_like(verts)
    degree = torch.zeros(count, device=verts.device, dtype=verts.dtype)
    for corner in range(3):
        first, second = [c for c in range(3) if c != corner]
        offset = corners[:, :, first] + corners[:, :, second] - 2 * corners[:, :, corner]  # [B, F, 3]
        total.index_add_(1, faces[:, corner], offset)
        degree.index_add_(0, faces[:, corner], torch.full_like(faces[:, corner], 2, dtype=verts.dtype))
    return (total / degree.clamp(min=1.0)[None, :, None]).pow(2).mean()


def soft_iou_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - mean soft IoU over images (kaolin's mask_iou). predicted, target [..., H, W] in [0, 1]."""
    predicted = predicted.flatten(-2)
    target = target.flatten(-2)
    intersection = (predicted * target).sum(-1)
    union = (predicted + target - predicted * target).sum(-1).clamp(min=1e-6)
    return 1.0 - (intersection / union).mean()
