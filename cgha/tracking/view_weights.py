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

from .view_calibration import head_directions


def view_angles_deg(pose: np.ndarray, viewmats: np.ndarray) -> np.ndarray:
    """Angle (degrees) between the head's frontal direction and the direction to each camera, per frame.

    Args:
        pose: [T, 6] head pose per frame (axis-angle + translation; world = R @ x + t, the face looks along +z of
            its own frame, as the face model and ``pipeline._head_frame_angles`` define it).
        viewmats: [C, 4, 4] world-to-camera matrices.
    Returns:
        [T, C] angles in [0, 180].
    """
    cosine = head_directions(pose, viewmats)[..., 2]
    return np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0)))


def oblique_view_weights(angles_deg: np.ndarray, half_weight_deg: float) -> np.ndarray:
    """Inverse-variance weight of a view at `angles_deg` [...] from frontal: (1 + (a / a0)^2)^-2, a0 =
    `half_weight_deg` (> 0; at a0 the error's deviation doubles, the weight is a quarter)."""
    if not half_weight_deg > 0:
        raise ValueError(f"half_weight_deg must be > 0, got {half_weight_deg}")
    ratio = np.asarray(angles_deg, dtype=np.float64) / float(half_weight_deg)
    return (1.0 + ratio ** 2) ** -2
