"""cgha.utils.cameras: look-at, intrinsics, projection and camera centres (OpenCV conventions)."""
import math

import numpy as np
import pytest
import torch

from cgha.utils.cameras import (
    camera_center,
    extrinsic_to_viewmat,
    intrinsics_from_focal,
    intrinsics_from_fov,
    look_at_world_to_camera,
    project_points,
    scale_intrinsics,
    world_to_camera,
)


def test_look_at_axes_opencv():
    eye = torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64)
    view = look_at_world_to_camera(eye, torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 1.0, 0.0]))
    R, t = view[:3, :3], view[:3, 3]
    # z (forward) points from the eye to the target; y (down in the image) is world -y for up = +y.
    assert torch.allclose(R[2], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64))
    assert torch.allclose(R[1], torch.tensor([0.0, -1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(R[0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert torch.allclose(t, torch.tensor([0.0, 0.0, 2.0], dtype=torch.float64))
    assert torch.equal(view[3], torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    K = intrinsics_from_focal(100.0, 64, 64, dtype=torch.float64)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.5, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64)
    uv, z = project_points(pts, view, K)
    assert torch.allclose(uv[0], torch.tensor([32.0, 32.0], dtype=torch.float64))  # target at the image centre
    assert uv[1, 1] < 32.0  # a point above the target appears higher up (smaller v)
    assert uv[2, 0] > 32.0  # world +x is image right for a camera on +z looking at -z
    assert torch.allclose(z, torch.full((3,), 2.0, dtype=torch.float64))


def test_look_at_rotation_is_proper_and_centre_roundtrips():
    gen = torch.Generator().manual_seed(0)
    eyes = torch.randn(32, 3, generator=gen, dtype=torch.float64) * 3.0
    targets = torch.randn(32, 3, generator=gen, dtype=torch.float64) * 0.2
    views = look_at_world_to_camera(eyes, targets, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    R = views[:, :3, :3]
    eye3 = torch.eye(3, dtype=torch.float64).expand(32, 3, 3)
    assert torch.allclose(R @ R.transpose(1, 2), eye3, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(32, dtype=torch.float64))
    assert torch.allclose(camera_center(views), eyes, atol=1e-12)
    assert torch.allclose(camera_center(views[:, :3, :]), eyes, atol=1e-12)
    # The target lies on the optical axis, in front of the camera.
    cam = world_to_camera(targets[:, None, :], views)[:, 0]
    assert torch.allclose(cam[:, :2], torch.zeros(32, 2, dtype=torch.float64), atol=1e-12)
    assert bool((cam[:, 2] > 0).all())


def test_look_at_rejects_parallel_up():
    with pytest.raises(ValueError):
        look_at_world_to_camera([0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0])


def test_projection_roundtrip():
    gen = torch.Generator().manual_seed(1)
    view = look_at_world_to_camera(torch.tensor([0.3, 0.2, 1.5], dtype=torch.float64),
                                   torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 1.0, 0.0]))
    K = intrinsics_from_fov(40.0, 320, 240, dtype=torch.float64)
    pts = torch.randn(100, 3, generator=gen, dtype=torch.float64) * 0.3
    uv, z = project_points(pts, view, K)
    # Back-project: camera point = z * K^-1 [u, v, 1], world = R^T (cam - t).
    hom = torch.cat([uv, torch.ones(100, 1, dtype=torch.float64)], dim=1)
    cam = (hom @ torch.linalg.inv(K).T) * z[:, None]
    world = (cam - view[:3, 3]) @ view[:3, :3]
    assert torch.allclose(world, pts, atol=1e-10)


def test_intrinsics_and_scaling():
    K = intrinsics_from_fov(90.0, 200, 100, dtype=torch.float64)
    assert K[0, 0] == pytest.approx(50.0)
    assert K[1, 1] == pytest.approx(50.0)
    assert (K[0, 2], K[1, 2]) == (100.0, 50.0)
    half = scale_intrinsics(K, 0.5)
    assert torch.allclose(half[:2], K[:2] * 0.5)
    assert torch.equal(half[2], K[2])
    with pytest.raises(ValueError):
        intrinsics_from_fov(0.0, 10, 10)


def test_numpy_in_numpy_out():
    view = look_at_world_to_camera(np.array([0.0, 0.0, 1.0]), np.zeros(3), np.array([0.0, 1.0, 0.0]))
    assert isinstance(view, np.ndarray) and view.shape == (4, 4)
    E = view[:3].astype(np.float32)
    assert np.allclose(extrinsic_to_viewmat(E), view)
    K = intrinsics_from_focal(10.0, 8, 8).numpy()
    uv, z = project_points(np.array([[0.0, 0.0, 0.0]], dtype=np.float32), E, K)
    assert isinstance(uv, np.ndarray) and uv.dtype == np.float32
    assert np.allclose(uv, [[4.0, 4.0]]) and np.allclose(z, [1.0])
    assert np.allclose(camera_center(E), [0.0, 0.0, 1.0], atol=1e-6)
    assert math.isclose(float(np.linalg.det(view[:3, :3])), 1.0, rel_tol=1e-9)
