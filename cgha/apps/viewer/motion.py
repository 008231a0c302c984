"""What moves the avatar in the viewer: a driver sequence (a subject folder, or a video tracked into one) and the
head-pose controls, both applied relative to the avatar's own neutral pose and scale (cgha/apps/pose_transfer.py),
as reenactment does.

    driver = load_driver(Path("data/synthetic/id1"), avatar, DriverVideoOptions(device="cpu"))
    driver.expression[t], driver.pose[t], driver.scale[t]     # [D], [6], [1] of frame t, on the avatar
    pose = turned_pose(driver.pose[t], yaw=10, pitch=0, roll=0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch

from cgha.apps.driver_video import DriverVideoOptions, track_driver_video
from cgha.apps.pose_transfer import relative_pose_transfer
from cgha.avatar.inference import Avatar
from cgha.config import DatasetConfig
from cgha.dataset.expression_basis import check_driver_basis, read_expression_basis
from cgha.dataset.reenactment_dataset import ReenactmentDataset
from cgha.errors import DataError
from cgha.utils.rotations import axis_angle_to_matrix, matrix_to_axis_angle


@dataclass(frozen=True)
class Reference:
    """The avatar's neutral head pose [6] (axis-angle, translation) and scale, which the viewer's head motion is
    relative to."""
    pose: torch.Tensor
    scale: float


@dataclass
class DriverSequence:
    """A driver's frames moved onto the avatar. expression [F, D]; pose [F, 6] and scale [F, 1]: the driver's head
    motion since its first frame applied to the avatar's neutral pose, at the avatar's scale."""
    root: Path
    expression: torch.Tensor
    pose: torch.Tensor
    scale: torch.Tensor

    def __len__(self) -> int:
        return self.expression.shape[0]


def avatar_reference(avatar: Avatar, driver_root: Optional[Path] = None) -> Reference:
    """The avatar's recorded neutral pose; for an avatar that records none (GHA's runs), the first frame of the
    driver given, else a DataError saying what to pass."""
    if avatar.subject is not None:
        return Reference(torch.tensor(avatar.subject.reference_pose, dtype=torch.float32),
                         float(avatar.subject.reference_scale))
    if driver_root is None:
        raise DataError("the avatar records no neutral head pose (a GHA run, or one from before such records): pass "
                        "--driver with a sequence of its own subject to place the head")
    dataset = ReenactmentDataset(_driver_dataset(driver_root), expected_exp_dim=avatar.model.expression_dim)
    return Reference(dataset.pose[0].float(), float(dataset.scale[0].reshape(-1)[0]))


def _driver_dataset(root: Path) -> DatasetConfig:
    return DatasetConfig(dataroot=str(root), param_files="params/*/params.npz")


def load_driver(source: Path, avatar: Avatar, options: DriverVideoOptions, allow_basis_mismatch: bool = False
                ) -> DriverSequence:
    """The driver at `source`: a subject folder (params/*/params.npz), or a video file / webcam index tracked into one
    (cgha/apps/driver_video.py). Its expression basis must be the avatar's (as in reenactment)."""
    root = Path(source)
    if not root.is_dir():
        root = track_driver_video(str(source), options).root
    dataset = ReenactmentDataset(_driver_dataset(root), expected_exp_dim=avatar.model.expression_dim,
                                 exp_dim_key="the avatar's expression dimension")
    avatar_basis = avatar.subject.expression_basis if avatar.subject is not None else None
    check_driver_basis(avatar_basis, read_expression_basis(root), root, allow_basis_mismatch)
    reference = avatar_reference(avatar, root)
    pose, scale = relative_pose_transfer(dataset.pose.float(), dataset.scale.float().reshape(-1, 1),
                                         reference.pose, reference.scale)
    return DriverSequence(root, dataset.exp_coeff.float(), pose, scale)


def turned_pose(pose: torch.Tensor, yaw: float, pitch: float, roll: float) -> torch.Tensor:
    """pose [6] turned in place by the head-pose controls (degrees: yaw about world y, pitch about x, roll about z,
    applied in that order after the pose's own rotation): -> [6], translation kept."""
    angles = [math.radians(value) for value in (yaw, pitch, roll)]
    axes = torch.eye(3, dtype=torch.float32)
    turn = torch.eye(3)
    for axis, angle in zip((axes[1], axes[0], axes[2]), angles):
        turn = turn @ axis_angle_to_matrix((axis * angle)[None])[0]
    rotation = turn @ axis_angle_to_matrix(pose[None, :3].float())[0]
    return torch.cat([matrix_to_axis_angle(rotation[None])[0], pose[3:].float()])


def neutral_inputs(avatar: Avatar, reference: Reference) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The avatar at rest: expression [D] zeros, its neutral pose [6], its scale [1]."""
    return (torch.zeros(avatar.model.expression_dim), reference.pose.clone(),
            torch.tensor([reference.scale], dtype=torch.float32))


def expression_names(avatar: Avatar) -> list:
    """One label per expression coefficient: the avatar's recorded basis names, else `exp_00`, `exp_01`, ..."""
    basis = avatar.subject.expression_basis if avatar.subject is not None else None
    dim = avatar.model.expression_dim
    if basis is not None and len(basis.names) == dim:
        return list(basis.names)
    return [f"exp_{index:02d}" for index in range(dim)]
