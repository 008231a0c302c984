"""Image metrics (computed, never estimated): PSNR, SSIM (full and masked) and silhouette IoU."""
from __future__ import annotations

import torch


def mask_iou(predicted: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Hard IoU per image of masks [..., H, W] in [0, 1] binarised at >= threshold -> [...] (1 when both are
    empty)."""
    predicted = (predicted >= threshold).flatten(-2)
    target = (target >= threshold).flatten(-2)
    intersection = (predicted & target).sum(-1).float()
    union = (predicted | target).sum(-1).float()
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def psnr(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image of [..., C, H, W] tensors in [0, 1] -> [...]."""
    mse = (predicted - target).pow(2).flatten(-3).mean(-1).clamp(min=1e-12)
    return -10.0 * torch.log10(mse)


def _gaussian_window(size: int, sigma: float, channels: int, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    kernel = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    return (kernel[:, None] * kernel[None, :]).expand(channels, 1, size, size).contiguous()


def ssim(predicted: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """SSIM per image (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1),
    averaged over channels and valid window positions. predicted, target [B, C, H, W] in [0, 1] -> [B]."""
    channels = predicted.shape[1]
    kernel = _gaussian_window(window, sigma, channels, predicted)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(x, kernel, groups=channels)

    mu_x, mu_y = blur(predicted), blur(target)
    var_x = blur(predicted * predicted) - mu_x**2
    var_y = blur(target * target) - mu_y**2
    cov = blur(predicted * target) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return score.flatten(1).mean(1)


def masked_psnr(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image with the MSE taken over mask pixels only (soft masks weight pixels).

    predicted, target [B, C, H, W] in [0, 1], mask [B, 1, H, W] in [0, 1] -> [B]; an empty mask gives the PSNR of a
    zero error (clamped like `psnr`)."""
    weighted = ((predicted - target).pow(2) * mask).flatten(1).sum(1)
    count = (mask.expand_as(predicted)).flatten(1).sum(1)
    mse = (weighted / count.clamp(min=1e-12)).clamp(min=1e-12)
    return -10.0 * torch.log10(mse)


def composite_on_white(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """image [B, C, H, W] * mask [B, 1, H, W] + (1 - mask): everything outside the mask becomes white."""
    return image * mask + (1.0 - mask)


def masked_ssim(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SSIM per image of both images composited with the mask on white: [B, C, H, W] x2, [B, 1, H, W] -> [B].

    SSIM has no per-pixel form that a mask can select, so the background is made identical (white) in both images
    instead; the score then reflects only the head, but it is still averaged over the whole image."""
    return ssim(composite_on_white(predicted, mask), composite_on_white(target, mask))


IBUG_MOUTH = slice(48, 68)  # outer and inner lips of the iBUG-68 landmarks
MOUTH_BOX_MARGIN = 0.25  # of the lips' box size on every side: an opening jaw stays inside


def mouth_box_mask(landmarks_px: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A box around the lips: landmarks_px [B, K >= 68, 2] in pixels (iBUG-68 order first) -> mask [B, 1, H, W].

    The box bounds the 20 lip landmarks, widened by MOUTH_BOX_MARGIN of its size on each side and clipped to the
    image (empty when the mouth is outside it)."""
    if landmarks_px.shape[-2] < 68:
        raise ValueError(f"a mouth box needs the 68 iBUG landmarks first, got {landmarks_px.shape[-2]} points")
    lips = landmarks_px[:, IBUG_MOUTH]
    low, high = lips.amin(1), lips.amax(1)  # [B, 2]
    margin = (high - low) * MOUTH_BOX_MARGIN
    low, high = low - margin, high + margin
    u = torch.arange(width, device=landmarks_px.device, dtype=landmarks_px.dtype) + 0.5
    v = torch.arange(height, device=landmarks_px.device, dtype=landmarks_px.dtype) + 0.5
    inside_u = (u[None] >= low[:, :1]) & (u[None] <= high[:, :1])  # [B, W]
    inside_v = (v[None] >= low[:, 1:]) & (v[None] <= high[:, 1:])  # [B, H]
    return (inside_v[:, :, None] & inside_u[:, None, :]).to(landmarks_px.dtype)[:, None]
