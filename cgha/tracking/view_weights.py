"""Landmark weights by how obliquely a camera sees the face.

MediaPipe's points disagree with the face model's landmarks more the further a view turns from frontal: on the
calibration identities the disagreement left after the calibration is about 4.6 px (at 512²) within 30° of frontal,
14 px at 45-60° and 27 px beyond 60° (docs/tracking.md). A least-squares fit that weighs every view alike lets the
oblique views' larger, view-dependent errors pull the head's rotation. Weighting each view by the inverse variance of
that error model, sigma(a) = sigma0 * (1 + (a / a0)^2), gives w(a) = (1 + (a / a0)^2)^-2: 1 frontal, 0.44 at a0 / 2,
0.25 at a0, 0.04 at 2 a0. The angle comes from a first fit; the weighted fit is a second pass started from it.
"""
from __future__ import annotations

import numpy as np
import torch

from cgha.utils.rotations import axis_angle_to_matrix


def view_angles_deg(pose: np.ndarray, viewmats: np.ndarray) -> np.ndarray:
    """Angle (degrees) between the head's frontal direction and the direction to each camera, per frame.

    Args:
        pose: [T, 6] head pose per frame (axis-angle + translation; world = R @ x + t, the face looks along +z of
            its own frame, as the face model and ``pipeline._head_frame_angles`` define it).
        viewmats: [C, 4, 4] world-to-camera matrices.
    Returns:
        [T, C] angles in [0, 180].
    """
    pose = np.asarray(pose, dtype=np.float64)
    viewmats = np.asarray(viewmats, dtype=np.float64)
    if pose.ndim != 2 or pose.shape[1] != 6 or viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"need pose [T, 6] and viewmats [C, 4, 4], got {pose.shape} and {viewmats.shape}")
    R = axis_angle_to_matrix(torch.from_numpy(pose[:, :3])).numpy()  # [T, 3, 3] head -> world
    eyes = -np.einsum("cji,cj->ci", viewmats[:, :3, :3], viewmats[:, :3, 3])  # [C, 3] camera centres (world)
    to_camera = eyes[None, :, :] - pose[:, None, 3:]  # [T, C, 3] world
    in_head = np.einsum("tji,tcj->tci", R, to_camera)  # R^T @ d: the direction in the head's frame
    cosine = in_head[..., 2] / np.maximum(np.linalg.norm(in_head, axis=-1), 1e-12)
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def oblique_view_weights(angles_deg: np.ndarray, half_weight_deg: float) -> np.ndarray:
    """Inverse-variance weight of a view at `angles_deg` [...] from frontal: (1 + (a / a0)^2)^-2, a0 =
    `half_weight_deg` (> 0; at a0 the error's deviation doubles, the weight is a quarter)."""
    if not half_weight_deg > 0:
        raise ValueError(f"half_weight_deg must be > 0, got {half_weight_deg}")
    ratio = np.asarray(angles_deg, dtype=np.float64) / float(half_weight_deg)
    return (1.0 + ratio ** 2) ** -2
