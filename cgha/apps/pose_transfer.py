"""Head motion of a driver moved onto an avatar.

A driver's `pose` [axis-angle, translation] and `scale` place *its* head in *its* world: another person's head sits
elsewhere and has another size (an avatar trained at scale 0.1 driven at 0.125 renders 1.25x too large). Relative
transfer keeps the avatar's own neutral pose and scale and applies the driver's motion since its first frame:

    R_t' = (R_t R_0^T) R_a,   T_t' = T_a + (S_a / S_0) (T_t - T_0),   S_t' = S_a

with (R_t, T_t, S_t) the driver's frame t, (R_a, T_a, S_a) the avatar's reference (the first frame of its training
subject). Translations are rescaled so that a head turn or nod of the driver moves the avatar's head as far, relative
to its size.
"""
from __future__ import annotations

from typing import Tuple

import torch

from cgha.utils.rotations import axis_angle_to_matrix, matrix_to_axis_angle


def relative_pose_transfer(pose: torch.Tensor, scale: torch.Tensor, reference_pose: torch.Tensor,
                           reference_scale: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """pose [F, 6] and scale [F, 1] of the driver, reference_pose [6] of the avatar -> (pose [F, 6], scale [F, 1])
    that move the avatar as the driver moved since its frame 0."""
    rotation = axis_angle_to_matrix(pose[:, :3])  # [F, 3, 3]
    since_first = rotation @ rotation[0].transpose(0, 1)
    moved = since_first @ axis_angle_to_matrix(reference_pose[None, :3])[0]
    ratio = reference_scale / scale[0, 0]
    translation = reference_pose[None, 3:] + ratio * (pose[:, 3:] - pose[:1, 3:])
    return (torch.cat([matrix_to_axis_angle(moved), translation], dim=1),
            torch.full_like(scale, reference_scale))
