"""cgha.tracking.mask_edges: the guided filter moves a soft, misplaced mask edge onto the frame's colour edge and
leaves flat regions alone."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from cgha.tracking.mask_edges import default_radius, guided_filter, refine_mask_edges


def _disc_scene(size: int = 128, radius: float = 40.0, seed: int = 0):
    """A textured disc (the head) on a smooth background: (uint8 RGB frame, exact mask in [0, 1])."""
    rng = np.random.default_rng(seed)
    centres = np.arange(size) + 0.5
    u, v = np.meshgrid(centres, centres)
    inside = ((u - size / 2) ** 2 + (v - size / 2) ** 2 <= radius ** 2).astype(np.float32)
    background = np.stack([0.45 + 0.2 * u / size, 0.55 + 0.1 * v / size, 0.65 * np.ones_like(u)], -1)
    head = np.array([0.85, 0.6, 0.45]) + 0.05 * rng.standard_normal((size, size, 3))
    frame = inside[..., None] * head + (1 - inside[..., None]) * background
    return (np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8), inside


def _composite_psnr(frame: np.ndarray, mask: np.ndarray, truth: np.ndarray) -> float:
    """PSNR of the frame composited on white with `mask` against the same with `truth` (what training targets see)."""
    image = frame.astype(np.float64) / 255.0
    a, b = (image * m[..., None] + (1 - m[..., None]) for m in (mask, truth))
    return float(10 * np.log10(1 / ((a - b) ** 2).mean()))


def test_a_soft_shifted_edge_moves_onto_the_colour_edge():
    frame, truth = _disc_scene(size=256, radius=80.0)
    # What a 256^2 segmentation resized to a larger frame looks like: 2 px too large and soft.
    coarse = cv2.GaussianBlur(cv2.dilate(truth, np.ones((5, 5), np.uint8)), (0, 0), 1.5)
    refined = refine_mask_edges(frame, coarse)
    assert refined.dtype == np.float32 and refined.shape == truth.shape
    assert 0.0 <= refined.min() and refined.max() <= 1.0

    def radius(mask):  # of the disc the mask covers at 0.5
        return float(np.sqrt((mask > 0.5).sum() / np.pi))

    assert radius(coarse) - radius(truth) > 2.0 and abs(radius(refined) - radius(truth)) < 0.5
    assert _composite_psnr(frame, refined, truth) > _composite_psnr(frame, coarse, truth) + 2.0


def test_flat_regions_and_a_constant_mask_are_kept():
    frame = np.full((64, 64, 3), 120, np.uint8)
    ones = np.ones((64, 64), np.float32)
    np.testing.assert_allclose(refine_mask_edges(frame, ones), ones, atol=1e-4)
    ramp = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1))
    # With no colour edge to follow, the filter only averages: a linear ramp away from the border is unchanged.
    np.testing.assert_allclose(refine_mask_edges(frame, ramp, radius=4)[:, 8:-8], ramp[:, 8:-8], atol=1e-3)


def test_guided_filter_checks_its_inputs_and_the_default_radius():
    with pytest.raises(ValueError, match="guide must be"):
        guided_filter(np.zeros((8, 8)), np.zeros((8, 8)), 2)
    with pytest.raises(ValueError, match="radius"):
        guided_filter(np.zeros((8, 8, 3)), np.zeros((8, 8)), 0)
    assert default_radius(512) == 13 and default_radius(256) == 6 and default_radius(16) == 1
