"""Image metrics (computed, never estimated): PSNR and silhouette IoU."""
from __future__ import annotations

import torch


def mask_iou(predicted: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard IoU per image of binarised masks [..., H, W] -> [...] (1 when both are empty)."""
    predicted = (predicted > threshold).flatten(-2)
    target = (target > threshold).flatten(-2)
    intersection = (predicted & target).sum(-1).float()
    union = (predicted | target).sum(-1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def psnr(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of [..., C, H, W] tensors in [0, 1] -> [...]."""
    mse = (predicted - target).pow(2).flatten(-3).mean(-1).clamp(min=1e-12)
    return -10.0 * torch.log10(mse)
