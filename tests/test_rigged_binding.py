"""Binding math of cgha.rigged.binding: bound Gaussians follow their triangles exactly."""
import math

import pytest
import torch

from cgha.errors import DataError
from cgha.rigged.binding import (barycentric_points, check_faces, local_means_of, pose_gaussians,
                                 triangle_frames)
from cgha.utils.rotations import axis_angle_to_matrix, quaternion_to_matrix


def _mesh(dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    verts = torch.randn(1, 6, 3, generator=gen, dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [2, 3, 4], [1, 4, 5], [0, 5, 3]])
    return verts, faces


def _similarity(verts, axis_angle, scale, shift):
    R = axis_angle_to_matrix(torch.tensor(axis_angle, dtype=verts.dtype))
    return scale * verts @ R.T + torch.tensor(shift, dtype=verts.dtype)


def test_frames_are_rotations_and_scale_matches_definition():
    verts, faces = _mesh()
    frames = triangle_frames(verts, faces)
    R = frames.rotation
    eye = torch.eye(3, dtype=R.dtype).expand_as(R)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(1, 4, dtype=R.dtype), atol=1e-12)
    v0, v1, v2 = verts[0, faces[0]]
    normal = torch.linalg.cross(v1 - v0, v2 - v0)
    area = 0.5 * normal.norm()
    edge = (v1 - v0).norm()
    assert frames.scale[0, 0] == pytest.approx(0.5 * (edge + 2 * area / edge).item(), rel=1e-12)
    assert torch.allclose(R[0, 0, :, 1], normal / normal.norm(), atol=1e-12)  # y is the normal
    assert torch.allclose(frames.origin[0, 0], (v0 + v1 + v2) / 3, atol=1e-12)


def test_gaussian_at_barycentric_coordinates_follows_moved_triangle_exactly():
    verts, faces = _mesh()
    gen = torch.Generator().manual_seed(1)
    binding = torch.tensor([0, 1, 1, 2, 3, 3, 0])
    bary = torch.rand(7, 3, generator=gen, dtype=verts.dtype)
    bary = bary / bary.sum(-1, keepdim=True)
    rest = barycentric_points(verts, faces, binding, bary)
    frames = triangle_frames(verts, faces)
    local = local_means_of(frames, binding, rest)[0]
    # Local quats/scales of arbitrary Gaussians: their world versions must turn and grow with the triangle.
    local_quats = torch.nn.functional.normalize(torch.randn(7, 4, generator=gen, dtype=verts.dtype), dim=-1)
    local_scales = torch.rand(7, 3, generator=gen, dtype=verts.dtype) + 0.1
    means0, quats0, scales0 = pose_gaussians(frames, binding, local, local_quats, local_scales)
    assert torch.allclose(means0, rest, atol=1e-12)

    axis_angle, s = [0.3, -1.1, 0.7], 2.5
    moved = _similarity(verts, axis_angle, s, [0.4, -2.0, 1.5])
    means1, quats1, scales1 = pose_gaussians(triangle_frames(moved, faces), binding, local, local_quats,
                                             local_scales)
    # Same barycentric coordinates on the moved triangles.
    assert torch.allclose(means1, barycentric_points(moved, faces, binding, bary), atol=1e-12)
    R = axis_angle_to_matrix(torch.tensor(axis_angle, dtype=verts.dtype))
    assert torch.allclose(quaternion_to_matrix(quats1), R @ quaternion_to_matrix(quats0), atol=1e-12)
    assert torch.allclose(scales1, s * scales0, atol=1e-12)
    # Off the surface too: a point along the normal keeps its height relative to the triangle's size.
    lifted = local + torch.tensor([0.0, 0.7, 0.0], dtype=verts.dtype)
    up0 = pose_gaussians(frames, binding, lifted, local_quats, local_scales)[0]
    up1 = pose_gaussians(triangle_frames(moved, faces), binding, lifted, local_quats, local_scales)[0]
    assert torch.allclose(up1, s * up0 @ R.T + torch.tensor([0.4, -2.0, 1.5], dtype=verts.dtype), atol=1e-12)


def test_batched_frames_and_per_frame_local_means():
    verts, faces = _mesh()
    batch = torch.cat([verts, _similarity(verts, [0.0, math.pi / 2, 0.0], 0.5, [1.0, 0.0, 0.0])])
    frames = triangle_frames(batch, faces)
    assert frames.origin.shape == (2, 4, 3) and frames.rotation.shape == (2, 4, 3, 3) and frames.scale.shape == (2, 4)
    binding = torch.tensor([3, 0])
    local = torch.randn(2, 2, 3, dtype=verts.dtype)
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2, dtype=verts.dtype)
    means, _, _ = pose_gaussians(frames, binding, local, quats, torch.ones(2, 3, dtype=verts.dtype))
    assert torch.allclose(local_means_of(frames, binding, means), local, atol=1e-12)


def test_degenerate_triangle_gives_finite_frames():
    verts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]])
    frames = triangle_frames(verts, torch.tensor([[0, 1, 2]]))
    assert all(torch.isfinite(t).all() for t in frames)


def test_check_faces_names_the_source_and_the_value():
    assert check_faces([[0, 1, 2]], 3, "s/faces.npy").dtype == torch.int64
    with pytest.raises(DataError, match=r"s/faces.npy: face indices span \[0, 5\].*3 vertices"):
        check_faces([[0, 1, 5]], 3, "s/faces.npy")
    with pytest.raises(DataError, match=r"s/faces.npy: faces must be a non-empty \[F, 3\].*\[2, 2\]"):
        check_faces([[0, 1], [1, 2]], 3, "s/faces.npy")
    with pytest.raises(DataError, match="integer"):
        check_faces([[0.0, 1.0, 2.0]], 3, "s/faces.npy")
