"""The capture rig: NeRSemble-like cameras on a frontal arc around the head.

Cameras sit about one world unit from the head centre, spread over azimuth -75..+75 degrees (subject's right to
left) on three elevation rows (-12, +6, +22 degrees), and look at the head centre. The rig is the same for every
identity and seed; its focal length is chosen once so that the head under every pose the trajectories can produce
stays inside every view with a margin.

Evaluation-only cameras outside the training arc (`out_of_rig_cameras`) see the head from above (+35 degrees), from
the sides (azimuth -90 / +90 degrees) and from 1.3x closer and 1.3x farther than the rig: views and scales a model
trained on the rig never saw.

The monocular preset (`monocular_cameras`) has one training camera straight ahead at head height, as a phone or
webcam films, and one evaluation-only camera to the side and above; their shared focal length keeps the head in
both views under the preset's wider head rotation (`trajectory.MONOCULAR_POSE_LIMITS_DEG`).
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import numpy as np
import torch

from cgha.utils.cameras import intrinsics_from_focal, look_at_world_to_camera, project_points

from .head_model import DEFAULT_SCALE, HeadModel
from .trajectory import MONOCULAR_POSE_LIMITS_DEG, POSE_LIMITS_DEG, TRANSLATION_LIMIT, euler_to_matrix

__all__ = ["CameraRig", "camera_rig", "camera_ids", "frontal_camera", "out_of_rig_cameras", "monocular_cameras",
           "HEAD_CENTRE", "AZIMUTH_RANGE_DEG", "ELEVATION_ROWS_DEG", "OUT_OF_RIG_PLACEMENT", "MONOCULAR_PLACEMENT"]

AZIMUTH_RANGE_DEG = 75.0
ELEVATION_ROWS_DEG = (-12.0, 6.0, 22.0)
CAMERA_DISTANCE = 1.0
# World point the cameras look at: the centre of the head-and-neck box of the neutral head.
HEAD_CENTRE = (0.0, -0.025, 0.0)
# Margin kept free on each side of the image (fraction of the image size) under the most extreme poses.
_MARGIN = 0.05
# Headroom for identities larger than the reference identity used to fit the focal length.
_IDENTITY_HEADROOM = 1.08
# Out-of-rig cameras as (azimuth deg, elevation deg, distance / CAMERA_DISTANCE): above the top row, beyond both ends
# of the arc, and a frontal camera 1.3x closer and 1.3x farther. Ids "oor00".. sort after the rig's "camNN".
OUT_OF_RIG_PLACEMENT = ((0.0, 35.0, 1.0), (-90.0, 0.0, 1.0), (90.0, 0.0, 1.0), (0.0, 0.0, 1.0 / 1.3), (0.0, 0.0, 1.3))
# The monocular preset, same form: the training camera "cam00" straight ahead, and the evaluation-only "oor00" 30 deg
# to the subject's right (the lit side) and 10 deg above: a view between those the head turns show to the camera.
MONOCULAR_PLACEMENT = ((0.0, 0.0, 1.0), (-30.0, 10.0, 1.0))


def camera_ids(num_cameras: int) -> list[str]:
    """Camera ids ``cam00``, ``cam01``, ..."""
    return [f"cam{i:02d}" for i in range(num_cameras)]


@dataclasses.dataclass
class CameraRig:
    """Cameras of one capture.

    Attributes:
        ids: camera ids.
        viewmats: [C, 4, 4] float32 world-to-camera (OpenCV).
        Ks: [C, 3, 3] float32 intrinsics in pixels of ``resolution``.
        azimuth_deg, elevation_deg, distance: per-camera placement.
        resolution: image side in pixels.
        focal_fraction: focal length divided by the image side.
    """

    ids: list[str]
    viewmats: torch.Tensor
    Ks: torch.Tensor
    azimuth_deg: list[float]
    elevation_deg: list[float]
    distance: list[float]
    resolution: int
    focal_fraction: float

    def most_frontal(self) -> int:
        """Index of the camera closest to straight ahead (smallest angle to +z)."""
        ang = [math.hypot(a, e) for a, e in zip(self.azimuth_deg, self.elevation_deg)]
        return int(np.argmin(ang))


def _placement(num_cameras: int):
    if num_cameras == 1:
        az = np.array([0.0])
    else:
        az = np.linspace(-AZIMUTH_RANGE_DEG, AZIMUTH_RANGE_DEG, num_cameras)
    rows = np.array(ELEVATION_ROWS_DEG)
    # Row order 1, 0, 2 cycling: neighbours differ in height; a single camera sits on the middle row.
    el = rows[[(1, 0, 2)[i % 3] for i in range(num_cameras)]]
    # Small fixed irregularities, as in a real rig.
    i = np.arange(num_cameras)
    dist = CAMERA_DISTANCE * (1.0 + 0.025 * np.sin(1.7 * i + 0.3))
    el = el + 1.5 * np.sin(2.3 * i + 1.1)
    return az, el, dist


def _eye(az_deg, el_deg, dist):
    a, e = np.radians(az_deg), np.radians(el_deg)
    c = np.asarray(HEAD_CENTRE)
    return c + dist[:, None] * np.stack([np.sin(a) * np.cos(e), np.sin(e), np.cos(a) * np.cos(e)], axis=-1)


def _viewmats(az, el, dist) -> torch.Tensor:
    eye = torch.from_numpy(_eye(az, el, dist))
    target = torch.tensor(HEAD_CENTRE, dtype=torch.float64).expand_as(eye)
    up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64).expand_as(eye)
    return look_at_world_to_camera(eye, target, up)


def _worst_offsets(az, el, dist, pose_limits_deg=POSE_LIMITS_DEG) -> np.ndarray:
    """Per camera, the largest |u| or |v| (in focal units from the principal point) of the reference head under all
    extreme poses (|yaw|, |pitch|, |roll| up to ``pose_limits_deg`` and every combination of their signs)."""
    head = HeadModel(0, dtype=torch.float64)
    extremes = [head.expression(), head.expression(jaw_open=1.0, jaw_left=1.0)]
    canon = torch.cat([head.canonical_vertices(e) for e in extremes])[:, ::4] * _IDENTITY_HEADROOM
    canon = canon.reshape(1, -1, 3)
    yaw, pitch, roll = (math.radians(d) for d in pose_limits_deg)
    poses = []
    for sy, sp, sr, st in itertools.product((-1, 0, 1), (-1, 0, 1), (-1, 0, 1), (-1, 1)):
        R = euler_to_matrix(sy * yaw, sp * pitch, sr * roll)
        poses.append((R, st * TRANSLATION_LIMIT))
    views = _viewmats(az, el, dist)
    K1 = intrinsics_from_focal(1.0, 0, 0, dtype=torch.float64)  # principal point at 0: offsets in focal units
    worst = np.zeros(len(az))
    for R, t in poses:
        world = (DEFAULT_SCALE * canon[0]) @ R.T + torch.full((3,), t, dtype=torch.float64)
        uv, _ = project_points(world[None].expand(len(az), -1, -1), views, K1.expand(len(az), 3, 3))
        worst = np.maximum(worst, uv.abs().flatten(1).amax(dim=1).numpy())
    return worst


@functools.lru_cache(maxsize=8)
def _focal_fraction(num_cameras: int) -> float:
    """Largest focal/size such that the reference head under all extreme poses keeps the margin in every view."""
    return float((0.5 - _MARGIN) / _worst_offsets(*_placement(num_cameras)).max())


def _out_of_rig_placement():
    az, el, dist = (np.array(column) for column in zip(*OUT_OF_RIG_PLACEMENT))
    return az, el, CAMERA_DISTANCE * dist


@functools.lru_cache(maxsize=8)
def _out_of_rig_focal_fractions(num_cameras: int) -> tuple[float, ...]:
    """The rig's focal/size, narrowed only where the head under the extreme poses would leave the image: the closer
    camera. These views are only evaluated, so the head may touch the border there (no margin) and shows as large
    as it can."""
    fitted = 0.5 / _worst_offsets(*_out_of_rig_placement())
    return tuple(float(f) for f in np.minimum(_focal_fraction(num_cameras), fitted))


def camera_rig(num_cameras: int, resolution: int, device="cpu") -> CameraRig:
    """The rig for ``num_cameras`` cameras rendering ``resolution x resolution`` images."""
    if num_cameras < 1:
        raise ValueError(f"num_cameras must be >= 1, got {num_cameras}")
    az, el, dist = _placement(num_cameras)
    ff = _focal_fraction(num_cameras)
    K = intrinsics_from_focal(ff * resolution, resolution, resolution, dtype=torch.float32, device=device)
    return CameraRig(
        ids=camera_ids(num_cameras),
        viewmats=_viewmats(az, el, dist).to(dtype=torch.float32, device=device),
        Ks=K.expand(num_cameras, 3, 3).clone(),
        azimuth_deg=[float(round(a, 6)) for a in az],
        elevation_deg=[float(round(e, 6)) for e in el],
        distance=[float(round(d, 6)) for d in dist],
        resolution=resolution,
        focal_fraction=float(ff),
    )


def out_of_rig_cameras(num_cameras: int, resolution: int, device="cpu") -> CameraRig:
    """The evaluation-only cameras beside the rig of ``num_cameras`` cameras, at the same image size; ids ``oor00``..

    ``focal_fraction`` is the smallest of them (the closer camera's); ``Ks`` holds each camera's own focal length.
    """
    az, el, dist = _out_of_rig_placement()
    fractions = _out_of_rig_focal_fractions(num_cameras)
    Ks = torch.stack([intrinsics_from_focal(f * resolution, resolution, resolution, dtype=torch.float32,
                                            device=device) for f in fractions])
    return CameraRig(
        ids=[f"oor{i:02d}" for i in range(len(az))],
        viewmats=_viewmats(az, el, dist).to(dtype=torch.float32, device=device),
        Ks=Ks,
        azimuth_deg=[float(round(a, 6)) for a in az],
        elevation_deg=[float(round(e, 6)) for e in el],
        distance=[float(round(d, 6)) for d in dist],
        resolution=resolution,
        focal_fraction=min(fractions),
    )


@functools.lru_cache(maxsize=1)
def _monocular_focal_fraction() -> float:
    """Largest focal/size keeping the margin in both monocular views under the preset's extreme poses."""
    az, el, dist = (np.array(column) for column in zip(*MONOCULAR_PLACEMENT))
    return float((0.5 - _MARGIN) / _worst_offsets(az, el, CAMERA_DISTANCE * dist, MONOCULAR_POSE_LIMITS_DEG).max())


def monocular_cameras(resolution: int, device="cpu") -> tuple[CameraRig, CameraRig]:
    """The monocular preset's cameras at ``resolution x resolution``: (the training camera ``cam00``, the
    evaluation-only camera ``oor00``), one focal length for both."""
    az, el, dist = (np.array(column) for column in zip(*MONOCULAR_PLACEMENT))
    dist = CAMERA_DISTANCE * dist
    ff = _monocular_focal_fraction()
    K = intrinsics_from_focal(ff * resolution, resolution, resolution, dtype=torch.float32, device=device)
    views = _viewmats(az, el, dist).to(dtype=torch.float32, device=device)
    rigs = []
    for i, camera_id in enumerate(("cam00", "oor00")):
        rigs.append(CameraRig(
            ids=[camera_id], viewmats=views[i:i + 1].clone(), Ks=K[None].clone(),
            azimuth_deg=[float(round(az[i], 6))], elevation_deg=[float(round(el[i], 6))],
            distance=[float(round(dist[i], 6))], resolution=resolution, focal_fraction=ff))
    return rigs[0], rigs[1]


def frontal_camera(resolution: int, device="cpu", elevation_deg: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A straight-ahead camera of the rig's kind (same distance and focal fraction), for tests and previews.

    Returns:
        viewmat [1, 4, 4], K [1, 3, 3] (float32).
    """
    ff = _focal_fraction(16)
    vm = _viewmats(np.array([0.0]), np.array([elevation_deg]), np.array([CAMERA_DISTANCE]))
    K = intrinsics_from_focal(ff * resolution, resolution, resolution, dtype=torch.float32, device=device)
    return vm.to(dtype=torch.float32, device=device), K[None]
