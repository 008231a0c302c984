"""Foreground masks from a background plate (classical background subtraction with an alpha-refined edge).

Steps, for one RGB image and the same camera's plate of the empty studio:

1. Colour difference in CIELAB (a roughly perceptual space: equal distances look about equally different), with
   the lightness difference down-weighted (``lightness_weight``) because shading and soft shadows on the background
   change lightness much more than chroma; the difference channels get a small Gaussian blur against noise.
2. A robust noise scale from the image itself: the ``noise_quantile`` quantile of the distance map is taken to be
   background (at least that fraction of every view is background) and converted to the scale of a 3-D Gaussian
   whose distance distribution has that quantile.
3. Hysteresis thresholding (as in Canny's edge detector): pixels above the high threshold seed the foreground and
   every connected pixel above the low threshold joins; thresholds are ``k * noise`` with a floor in ΔE units
   (2.3 ΔE is a just-noticeable difference), so clean synthetic plates do not get absurdly low thresholds.
4. Morphological opening then closing (removes speckle, closes cracks), the largest connected component, and holes
   filled when smaller than ``max_hole_fraction`` of the foreground (a head has no holes; a larger enclosed
   background region is more likely real, e.g. between an arm and the body).
5. Edge refinement in a thin band around the boundary with the compositing equation I = a F + (1 - a) B: B is the
   plate and F the colour of the nearest sure-foreground pixel, so a = <I - B, F - B> / |F - B|^2 gives a soft
   alpha with sub-pixel boundary placement, on luma first (full resolution in video and JPEG) and on RGB where the
   luma contrast is too small. Where both are (foreground that looks like the background) the binary mask is kept.

Pixel sizes in ``MaskParams`` are for a 512-pixel image side and scale with the image. None of the parameters are
fitted to a test image; they are set from the reasoning above and documented in docs/preprocessing.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from cgha.utils import metrics

__all__ = ["MaskParams", "lab_distance", "noise_scale", "subtract_background", "mask_iou"]

# Smallest half-width of the refined band in pixels, whatever the resolution: 4:2:0 video and JPEG store chroma per
# 2x2 block, so the binary mask can sit up to two pixels off the true silhouette.
MIN_BAND = 2


@dataclass(frozen=True)
class MaskParams:
    """Background-subtraction settings (pixel sizes for a 512-pixel image side)."""

    lightness_weight: float = 0.5  # weight of ΔL* against Δa*, Δb*
    blur_px: float = 0.7  # sigma of the blur of the Lab difference
    noise_quantile: float = 0.25  # fraction of every view assumed to be background
    low_sigmas: float = 5.0  # low / high hysteresis thresholds in noise units ...
    high_sigmas: float = 10.0
    min_low: float = 4.0  # ... and their floors in ΔE units
    min_high: float = 10.0
    morph_px: float = 1.5  # radius of the opening and closing
    max_hole_fraction: float = 0.02  # holes smaller than this fraction of the foreground are filled
    band_px: float = 2.5  # half-width of the refined edge band
    min_contrast: float = 0.08  # |F - B| (RGB in [0, 1]) below which the edge keeps the binary mask


def lab_distance(image: np.ndarray, plate: np.ndarray, lightness_weight: float = 0.5,
                 blur_sigma: float = 0.0) -> np.ndarray:
    """Per-pixel CIELAB distance between two RGB uint8 images [H, W, 3] -> float32 [H, W] (ΔE units)."""
    diff = (cv2.cvtColor(_float(image), cv2.COLOR_RGB2Lab) - cv2.cvtColor(_float(plate), cv2.COLOR_RGB2Lab))
    diff[..., 0] *= lightness_weight
    if blur_sigma > 0:
        diff = cv2.GaussianBlur(diff, (0, 0), blur_sigma)
    return np.sqrt((diff * diff).sum(-1))


def _chi3_quantile(q: float) -> float:
    """Quantile of the distance |x| of a standard 3-D Gaussian x (the Maxwell distribution), by bisection."""
    def cdf(r: float) -> float:
        return math.erf(r / math.sqrt(2.0)) - math.sqrt(2.0 / math.pi) * r * math.exp(-0.5 * r * r)

    low, high = 0.0, 10.0
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if cdf(mid) < q else (low, mid)
    return 0.5 * (low + high)


def noise_scale(distance: np.ndarray, quantile: float = 0.25) -> float:
    """Per-channel noise sigma implied by the ``quantile`` of a distance map, assuming those pixels are background."""
    return float(np.quantile(distance, quantile)) / _chi3_quantile(quantile)


def _disk(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def _hysteresis(distance: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint8 {0, 1}: connected regions above ``low`` that reach above ``high`` somewhere."""
    count, labels = cv2.connectedComponents((distance > low).astype(np.uint8), connectivity=8)
    seeded = np.zeros(count, dtype=bool)
    seeded[np.unique(labels[distance > high])] = True
    seeded[0] = False
    return seeded[labels].astype(np.uint8)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return np.zeros_like(mask)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return (labels == largest).astype(np.uint8)


def _fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    """Fill background regions that do not touch the image border and are smaller than ``max_area`` pixels."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(1 - mask, connectivity=4)
    height, width = mask.shape
    x, y, w, h, area = (stats[:, i] for i in range(5))
    touches = (x == 0) | (y == 0) | (x + w == width) | (y + h == height)
    fill = ~touches & (area < max_area)
    fill[0] = False  # label 0 is the foreground itself
    return np.where(fill[labels], 1, mask).astype(np.uint8)


def _refine_edge(image: np.ndarray, plate: np.ndarray, mask: np.ndarray, band: float,
                 min_contrast: float) -> np.ndarray:
    """Soft alpha float32 [H, W]: the binary mask, with alpha from I = a F + (1 - a) B inside the edge band.

    F is the (5x5-averaged) colour of the nearest sure-foreground pixel, not a wide average: silhouettes are often
    shaded darker than the interior (grazing light), and a wide average would be biased toward the interior.
    """
    alpha = mask.astype(np.float32)
    r = max(MIN_BAND, int(round(band)))
    edge = cv2.dilate(mask, _disk(r)) > cv2.erode(mask, _disk(r))
    core = cv2.erode(mask, _disk(r + 1))
    if not core.any() or not edge.any():
        return alpha
    distance, labels = cv2.distanceTransformWithLabels(1 - core, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    # Band pixels whose nearest core pixel is farther than the band could reach belong to thin parts: left binary.
    ys, xs = np.nonzero(edge & (distance <= 2 * r + 2))
    if not len(ys):
        return alpha
    core_f = core.astype(np.float32)
    colour_sum = cv2.boxFilter(image.astype(np.float32) * core_f[..., None], -1, (5, 5), normalize=False)
    count = cv2.boxFilter(core_f, -1, (5, 5), normalize=False)
    core_ys, core_xs = np.nonzero(core)  # raster order: DIST_LABEL_PIXEL numbers the core pixels 1, 2, ... alike
    nearest = labels[ys, xs] - 1
    cy, cx = core_ys[nearest], core_xs[nearest]
    F = colour_sum[cy, cx] / (255.0 * count[cy, cx, None])
    I = image[ys, xs].astype(np.float32) / 255.0
    B = plate[ys, xs].astype(np.float32) / 255.0
    estimate = np.ones(len(ys), dtype=np.float32)
    undecided = np.ones(len(ys), dtype=bool)
    # Luma first: video and JPEG keep it at full resolution, while their half-resolution chroma smears the
    # foreground's colour a pixel past the silhouette. Full colour where the luma contrast is too small.
    for weights in (np.array([0.299, 0.587, 0.114], dtype=np.float32), None):
        d, dI = F - B, I - B
        if weights is not None:
            d, dI = d @ weights[:, None], dI @ weights[:, None]
        contrast = (d * d).sum(-1)
        reliable = undecided & (contrast > min_contrast ** 2)
        estimate[reliable] = ((dI * d).sum(-1) / np.maximum(contrast, 1e-12))[reliable]
        undecided &= ~reliable
    keep = ~undecided
    alpha[ys[keep], xs[keep]] = np.clip(estimate[keep], 0.0, 1.0)
    return alpha


def subtract_background(image: np.ndarray, plate: np.ndarray, params: MaskParams = MaskParams()) -> np.ndarray:
    """Foreground alpha of one view.

    Args:
        image, plate: RGB uint8 [H, W, 3] of the same camera and size.
    Returns:
        float32 [H, W] in [0, 1] (binary away from the silhouette's edge).
    """
    if image.shape != plate.shape or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image and plate must both be [H, W, 3], got {image.shape} and {plate.shape}")
    scale = max(image.shape[:2]) / 512.0
    distance = lab_distance(image, plate, params.lightness_weight, params.blur_px * scale)
    sigma = noise_scale(distance, params.noise_quantile)
    low = max(params.min_low, params.low_sigmas * sigma)
    high = max(params.min_high, params.high_sigmas * sigma, low)
    mask = _hysteresis(distance, low, high)
    kernel = _disk(params.morph_px * scale)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    mask = _largest_component(mask)
    mask = _fill_small_holes(mask, params.max_hole_fraction * float(mask.sum()))
    return _refine_edge(image, plate, mask, params.band_px * scale, params.min_contrast)


def mask_iou(mask: np.ndarray, reference: np.ndarray, threshold: float = 0.5) -> float:
    """Intersection over union of two [H, W] masks thresholded at ``threshold`` (uint8 masks as 0..255, others as
    0..1); `cgha.utils.metrics.mask_iou` on numpy arrays."""
    return float(metrics.mask_iou(torch.from_numpy(_unit(mask)), torch.from_numpy(_unit(reference)), threshold))


def _unit(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.float32) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float32)


def _float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0
