"""The image region of the head and neck, from the fitted face model: what a head avatar's masks keep.

A person mask (selfie segmentation, background plates) also holds the shoulders and torso, and MediaPipe's selfie
segmentation adds a torso under a neck even where there is none (``cgha/tracking/segmentation.py``). A head avatar
has Gaussians for the head and neck only: a torso in its masks is a target it cannot follow (it does not move with
the head) and costs quality everywhere the optimiser spends capacity on it. On the synthetic subjects the invented
torso alone cost the re-tracked avatars most of their gap to the ground truth (docs/tracking.md, issue 17).

The cut: the fitted face model's neck ends in a ring of vertices (canonical ``y`` within ``band`` of its lowest
vertex). Seen from a camera, the head keeps every pixel on the head's side of the line through the ring's lowest
projected point, perpendicular to the projected up axis of the head; everything below is background. Hair, ears and
anything else above that line stay as the person mask has them.
"""
from __future__ import annotations

import numpy as np
import torch

from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix

__all__ = ["neck_base_ring", "head_side_of_neck"]

NECK_BAND = 0.05  # canonical units (the neutral head is about 2 wide): the last few rows of the neck's vertices


def neck_base_ring(canonical_vertices: torch.Tensor, band: float = NECK_BAND) -> torch.Tensor:
    """Indices of the neck's last ring: vertices within ``band`` of the lowest canonical ``y`` (y is up).

    Args:
        canonical_vertices: [V, 3] the subject's neutral canonical mesh.
    Returns:
        [N] int64 indices (N >= 1).
    """
    y = canonical_vertices[:, 1]
    return torch.nonzero(y <= y.min() + band).squeeze(1)


def head_side_of_neck(vertices: np.ndarray, ring: np.ndarray, pose: np.ndarray, viewmat: np.ndarray,
                      K: np.ndarray, size: int) -> np.ndarray:
    """Which pixels of one view lie on the head's side of the neck's end.

    Args:
        vertices: [V, 3] world vertices of the fitted mesh in this frame.
        ring: [N] indices of the neck's last ring (``neck_base_ring``).
        pose: [6] the frame's head pose (axis-angle, translation): its rotation gives the head's up axis.
        viewmat: [4, 4] (or [3, 4]) world-to-camera; K: [3, 3] intrinsics in pixels at ``size``.
        size: the square image's side.
    Returns:
        [size, size] bool, True on the head's side. All True when the ring is not in front of the camera or the
        head's up axis points along the view direction (no line to cut along).
    """
    base = vertices[ring].astype(np.float64)
    up = axis_angle_to_matrix(torch.as_tensor(pose[:3], dtype=torch.float64)).numpy()[:, 1]
    extent = float(np.linalg.norm(vertices.max(0) - vertices.min(0)))
    centre = base.mean(0)
    points = np.concatenate([base, centre[None], (centre + 0.25 * extent * up)[None]])
    uv, z = project_points(points, np.asarray(viewmat, np.float64), np.asarray(K, np.float64))
    keep = np.ones((size, size), bool)
    if (z <= 0).any():
        return keep
    direction = uv[-1] - uv[-2]
    length = float(np.linalg.norm(direction))
    if length < 1e-6 * size:
        return keep
    direction /= length
    cut = float(((uv[:-2] - uv[-2]) @ direction).min())
    centres = np.arange(size, dtype=np.float64) + 0.5
    u, v = np.meshgrid(centres, centres)
    return (u - uv[-2, 0]) * direction[0] + (v - uv[-2, 1]) * direction[1] >= cut
