"""The image region of the head and neck, from the fitted face model: what a head avatar's masks keep.

A person mask (selfie segmentation, background plates) also holds the shoulders and torso, and MediaPipe's selfie
segmentation adds a torso under a neck even where there is none (``cgha/tracking/segmentation.py``). A head avatar
has Gaussians for the head and neck only: a torso in its masks is a target it cannot follow (it does not move with
the head) and costs quality everywhere the optimiser spends capacity on it. On the synthetic subjects the invented
torso alone cost the re-tracked avatars most of their gap to the ground truth (docs/tracking.md, issue 17).

The cut (``head_region_mask``): the fitted face model's neck ends in a ring of vertices (canonical ``y`` within
``band`` of its lowest vertex). Seen from a camera, a pixel can be head when it lies on the head's side of the line
through the ring's *highest* projected point (perpendicular to the projected up axis of the head), or inside the
fitted mesh's silhouette widened by a small margin: at the neck's height only the neck itself is head. Of what the
person mask keeps there, only the connected parts that touch the mesh's silhouette stay: a patch of torso or
background beside the neck, cut off from the head, goes. Hair, ears and anything else above the line stay as the
person mask has them.

Tracker 1.2.0-1.6.0 cut along the line through the ring's *lowest* point only (``head_side_of_neck``): on views from
below or from the side that line slants under the neck and kept a band of invented torso beside it (on the
full-scale synthetic rig the composited held-out images then differed from the renderer's by 26.3 dB PSNR; 28.0 dB
with this cut, docs/tracking.md).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from cgha.render.mesh import rasterize_mesh
from cgha.utils.cameras import extrinsic_to_viewmat, project_points
from cgha.utils.rotations import axis_angle_to_matrix

__all__ = ["neck_base_ring", "head_side_of_neck", "head_region_mask"]

NECK_BAND = 0.05  # canonical units (the neutral head is about 2 wide): the last few rows of the neck's vertices
# Margin of the mesh's silhouette at the neck, as a fraction of the image side: room for a fitted neck a few pixels
# off the real one (2.5 px at 512^2).
SILHOUETTE_MARGIN = 0.005
# Faces with a vertex closer to the camera than this (world units; the head is about 0.25 wide) are left out.
NEAR = 1e-3
SOFT_EDGE_PX = 2  # the soft border of a kept part of the mask (values below 0.5) stays within this distance


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
    return _ring_side(vertices, ring, pose, viewmat, K, size, highest=False)


def _ring_side(vertices: np.ndarray, ring: np.ndarray, pose: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
               size: int, highest: bool) -> np.ndarray:
    """[size, size] bool: the head's side of the line through the ring's lowest (or highest) projected point."""
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
    along = (uv[:-2] - uv[-2]) @ direction
    cut = float(along.max() if highest else along.min())
    centres = np.arange(size, dtype=np.float64) + 0.5
    u, v = np.meshgrid(centres, centres)
    return (u - uv[-2, 0]) * direction[0] + (v - uv[-2, 1]) * direction[1] >= cut


def mesh_silhouette(vertices: np.ndarray, faces: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
                    size: int) -> np.ndarray:
    """[size, size] bool: the pixel centres a triangle of the mesh in front of the camera covers.

    Args:
        vertices: [V, 3] world vertices; faces: [F, 3] vertex indices; viewmat: [4, 4] (or [3, 4]) world-to-camera;
        K: [3, 3] intrinsics in pixels at ``size``.
    """
    # The project's z-buffer rasterizer (CPU) fills the union of the triangles. cv2.fillPoly, given all triangles
    # at once, fills by the even-odd rule: every pixel two faces cover (the front and the back of the head) was
    # left empty, and trackers 1.7.0-1.8.0 saw a speckled silhouette that only the margin's dilation held together.
    view = extrinsic_to_viewmat(np.asarray(viewmat, np.float32)[:3])
    with torch.no_grad():
        out = rasterize_mesh(torch.from_numpy(np.asarray(vertices, np.float32))[None],
                             torch.from_numpy(np.asarray(faces, np.int64)), None,
                             torch.from_numpy(view)[None], torch.from_numpy(np.asarray(K, np.float32))[None],
                             size, size, near=NEAR, soft=False, backend="torch")
    return out["mask"][0, 0].numpy() > 0.5


def head_region_mask(person: np.ndarray, vertices: np.ndarray, faces: np.ndarray, ring: np.ndarray,
                     pose: np.ndarray, viewmat: np.ndarray, K: np.ndarray,
                     margin: float = SILHOUETTE_MARGIN) -> np.ndarray:
    """The person mask of one view reduced to the head and neck (the module's docstring says how).

    Args:
        person: [S, S] the person mask, uint8 in [0, 255] or float in [0, 1] (soft borders allowed).
        vertices: [V, 3] world vertices of the fitted mesh in this frame; faces: [F, 3] its triangles.
        ring: [N] indices of the neck's last ring (``neck_base_ring``); pose: [6] the frame's head pose.
        viewmat: [4, 4] (or [3, 4]) world-to-camera; K: [3, 3] intrinsics in pixels at S.
        margin: the silhouette's margin at the neck, as a fraction of S (at least one pixel).
    Returns:
        [S, S] mask of ``person``'s dtype: ``person`` where it is head, 0 elsewhere. Unchanged when the mesh is not
        in front of the camera.
    """
    size = person.shape[0]
    half = 127.5 if person.dtype == np.uint8 else 0.5
    silhouette = mesh_silhouette(vertices, faces, viewmat, K, size)
    if not silhouette.any():
        return person
    radius = max(1, int(round(margin * size)))
    widened = cv2.dilate(silhouette.astype(np.uint8),
                         cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))).astype(bool)
    region = np.where(_ring_side(vertices, ring, pose, viewmat, K, size, highest=True) | widened, person, 0)
    _, labels = cv2.connectedComponents((region > half).astype(np.uint8), connectivity=8)
    touching = np.unique(labels[silhouette & (labels > 0)])
    parts = np.isin(labels, touching).astype(np.uint8)
    parts = cv2.dilate(parts, np.ones((2 * SOFT_EDGE_PX + 1,) * 2, np.uint8))
    return np.where(parts > 0, region, 0).astype(person.dtype)
