"""The viewer's camera: what a browser client reports (viser: the camera-to-world rotation as a wxyz quaternion and
the position, both in OpenCV axes: x right, y down, z forward; the vertical field of view) turned into the
world-to-camera `viewmat` and pixel intrinsics the renderer takes, and where the camera starts.

The start is GHA's frontal reenactment camera's field of view (focal 3.5 x the image side,
cgha.dataset.reenactment_dataset) in front of the avatar's own neutral pose, 1.25 units from a head of scale 0.125 (the
synthetic subjects'; GHA's 1 unit fills 90 % of the image with the face and cuts the hair) and farther in proportion
to a larger scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
import torch

from cgha.dataset.reenactment_dataset import FRONTAL_FOCAL
from cgha.utils.cameras import intrinsics_from_fov, look_at_world_to_camera
from cgha.utils.rotations import axis_angle_to_matrix, matrix_to_quaternion, quaternion_to_matrix

FRONTAL_FOV_Y = 2.0 * math.atan(0.5 / FRONTAL_FOCAL)  # radians, GHA's frontal camera (16.3 deg)
FRONTAL_DISTANCE_PER_SCALE = 1.25 / 0.125


@dataclass(frozen=True)
class ViewCamera:
    """A pinhole camera. wxyz: camera-to-world rotation (OpenCV axes); position: its centre in world units;
    fov_y: vertical field of view in radians."""
    wxyz: Tuple[float, float, float, float]
    position: Tuple[float, float, float]
    fov_y: float

    def viewmat(self) -> torch.Tensor:
        """World-to-camera [4, 4] (float32)."""
        rotation = quaternion_to_matrix(torch.tensor(self.wxyz, dtype=torch.float64))
        camera_to_world = torch.eye(4, dtype=torch.float64)
        camera_to_world[:3, :3] = rotation
        camera_to_world[:3, 3] = torch.tensor(self.position, dtype=torch.float64)
        return torch.linalg.inv(camera_to_world).float()

    def intrinsics(self, height: int, width: int) -> torch.Tensor:
        """Centred intrinsics [3, 3] in pixels of a height x width image with this vertical field of view."""
        return intrinsics_from_fov(math.degrees(self.fov_y), width, height)


@dataclass(frozen=True)
class StartView:
    """Where a client's camera starts: position, the point it looks at, the world's up direction (all world), and
    the vertical field of view in radians."""
    position: np.ndarray  # [3]
    look_at: np.ndarray  # [3]
    up: np.ndarray  # [3]
    fov_y: float


def start_view(reference_pose: Sequence[float], reference_scale: float) -> StartView:
    """A frontal view of an avatar whose neutral pose is reference_pose [6] (axis-angle, translation) and scale
    reference_scale: the face's canonical +z and +y axes, posed, give the viewing direction and up."""
    pose = torch.as_tensor(reference_pose, dtype=torch.float64)
    rotation = axis_angle_to_matrix(pose[None, :3])[0].numpy()
    centre = pose[3:].numpy()
    distance = FRONTAL_DISTANCE_PER_SCALE * float(reference_scale)
    front, up = rotation @ np.array([0.0, 0.0, 1.0]), rotation @ np.array([0.0, 1.0, 0.0])
    return StartView(centre + distance * front, centre, up, FRONTAL_FOV_Y)


def look_at_camera(view: StartView) -> ViewCamera:
    """The ViewCamera of a StartView (what a client reports after being placed there)."""
    viewmat = torch.as_tensor(look_at_world_to_camera(view.position, view.look_at, view.up), dtype=torch.float64)
    camera_to_world = torch.linalg.inv(viewmat)
    wxyz = matrix_to_quaternion(camera_to_world[:3, :3]).tolist()
    return ViewCamera(tuple(wxyz), tuple(view.position.tolist()), view.fov_y)
