"""Person-mask edges snapped to the image: a colour guided filter (He, Sun and Tang, "Guided Image Filtering",
ECCV 2010 / TPAMI 2013) of the segmentation's soft mask, guided by the frame itself.

MediaPipe's selfie segmentation sees every frame at 256^2 (``cgha/tracking/segmentation.py``); resized back to a
512^2 (or larger) frame its edges are soft and lie a pixel or two off the real silhouette, all around the head. The
guided filter fits, in every window, the mask as an affine function of the frame's colour: where the head's colour
differs from the background's, the mask's edge moves onto the colour edge and sharpens; inside flat regions it stays
as it was. The tracker applies it after the head cut (``cgha/tracking/head_region.py``), whose straight edges at the
neck it also snaps.

Measured as the PSNR between each held-out image composited on white with the tracker's mask and with the renderer's
exact mask (the training target a perfect avatar would be scored against; ``bench_retracked.mask_agreement``):
radius chosen on identity 0 at 512^2 (every fifth training frame of the held-out cameras: 8 px 30.7 dB, 12 px 31.1,
16 px 31.3, 24 px 31.2, 32 px 30.8, unfiltered 28.0; eps 1e-3) as 1/40 of the side, on that plateau; then, with
tracker 1.8.0 on all held-out images, unfiltered -> filtered: identity 0 at 512^2 27.97 -> 31.18 dB (held-out
cameras), identity 1 at 512^2 (not used for the choice) 28.74 -> 31.22, identity 2 at 256^2 28.64 -> 29.72
(docs/tracking.md, "Masks").
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["guided_filter", "refine_mask_edges", "DEFAULT_EPS", "default_radius"]

DEFAULT_EPS = 1e-3  # regularises flat windows (colour variance << eps): the mask is only smoothed there
RADIUS_FRACTION = 1.0 / 40.0


def default_radius(size: int) -> int:
    """The filter's window radius for a frame of side ``size``: 1/40 of it (13 px at 512^2), at least 1."""
    return max(1, int(round(size * RADIUS_FRACTION)))


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2 radius + 1)^2 window around every pixel (windows clipped at the border are renormalised)."""
    return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float = DEFAULT_EPS) -> np.ndarray:
    """The colour guided filter of ``source`` by ``guide``.

    Args:
        guide: [H, W, 3] float in [0, 1] (the frame, RGB).
        source: [H, W] float (the soft mask).
        radius: window radius in pixels (>= 1); eps: regulariser of the per-window colour covariance (> 0).
    Returns:
        [H, W] float32, the filtered source (not clipped).
    """
    if guide.ndim != 3 or guide.shape[2] != 3 or source.shape != guide.shape[:2]:
        raise ValueError(f"guided_filter: guide must be [H, W, 3] and source [H, W] of the same H, W; got "
                         f"{guide.shape} and {source.shape}")
    if radius < 1 or eps <= 0:
        raise ValueError(f"guided_filter: radius must be >= 1 and eps > 0, got {radius} and {eps}")
    I = guide.astype(np.float32)
    p = source.astype(np.float32)
    mean_I = _box(I, radius)                                                           # [H, W, 3]
    mean_p = _box(p, radius)                                                           # [H, W]
    cov_Ip = _box(I * p[..., None], radius) - mean_I * mean_p[..., None]               # [H, W, 3]
    # The per-pixel symmetric 3x3 colour covariance (+ eps I), inverted in closed form (adjugate / determinant):
    # a batched np.linalg.solve costs 5x more at 512^2.
    var = {}
    for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)):
        var[i, j] = _box(I[..., i] * I[..., j], radius) - mean_I[..., i] * mean_I[..., j] + (eps if i == j else 0.0)
    rr, rg, rb, gg, gb, bb = (var[0, 0], var[0, 1], var[0, 2], var[1, 1], var[1, 2], var[2, 2])
    inv = {(0, 0): gg * bb - gb * gb, (0, 1): gb * rb - rg * bb, (0, 2): rg * gb - gg * rb,
           (1, 1): rr * bb - rb * rb, (1, 2): rb * rg - rr * gb, (2, 2): rr * gg - rg * rg}
    det = rr * inv[0, 0] + rg * inv[0, 1] + rb * inv[0, 2]
    c = cov_Ip
    a = np.stack([inv[0, 0] * c[..., 0] + inv[0, 1] * c[..., 1] + inv[0, 2] * c[..., 2],
                  inv[0, 1] * c[..., 0] + inv[1, 1] * c[..., 1] + inv[1, 2] * c[..., 2],
                  inv[0, 2] * c[..., 0] + inv[1, 2] * c[..., 1] + inv[2, 2] * c[..., 2]], -1) / det[..., None]
    b = mean_p - (a * mean_I).sum(-1)
    return (_box(a, radius) * I).sum(-1) + _box(b, radius)


def refine_mask_edges(image: np.ndarray, mask: np.ndarray, radius: int | None = None,
                      eps: float = DEFAULT_EPS) -> np.ndarray:
    """A soft person mask with its edges moved onto the frame's colour edges.

    Args:
        image: [S, S, 3] uint8 RGB frame; mask: [S, S] float in [0, 1].
        radius: window radius in pixels; None = ``default_radius(S)``. eps: see ``guided_filter``.
    Returns:
        [S, S] float32 in [0, 1].
    """
    radius = default_radius(max(image.shape[:2])) if radius is None else radius
    refined = guided_filter(image.astype(np.float32) / 255.0, mask, radius, eps)
    return np.clip(refined, 0.0, 1.0)
