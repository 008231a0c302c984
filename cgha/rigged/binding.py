"""Gaussians bound to mesh triangles (GaussianAvatars): every triangle of a posed mesh carries a local frame, and a
Gaussian bound to it stores its position, rotation and scale in that frame, scaled by the triangle's size, so it
moves, turns and grows with the triangle.

    frames = triangle_frames(vertices, faces)                      # vertices [B, V, 3], faces [F, 3]
    means, quats, scales = pose_gaussians(frames, binding, local_means, local_quats, local_scales)

Frame of triangle (v0, v1, v2), a rotation whose columns are the local axes in world space:
    x = unit(v1 - v0)               the first edge
    y = unit((v1 - v0) x (v2 - v0))  the normal (counter-clockwise faces: pointing out of the surface)
    z = x x y                        in the plane, completing a right-handed frame
    origin = (v0 + v1 + v2) / 3      the centroid
    scale  = (|v1 - v0| + height of v2 over that edge) / 2
World position = origin + scale * R @ local_mean; world rotation = R * local rotation; world scale = scale *
local scale. Every quantity is invariant to the triangle's similarity transforms (rotation, translation, uniform
scaling), so a bound Gaussian follows a triangle that moves rigidly and scales uniformly exactly; under shear or
stretch it follows the triangle's frame, as in GaussianAvatars.
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np
import torch

from cgha.errors import DataError
from cgha.utils.rotations import matrix_to_quaternion, quaternion_multiply

__all__ = ["TriangleFrames", "check_faces", "triangle_frames", "pose_gaussians", "local_means_of",
           "barycentric_points"]

# Lengths below this (in world units) are treated as zero when normalising: degenerate triangles get a finite,
# if arbitrary, frame instead of NaNs (a tracked mesh may collapse a sliver triangle for a frame).
_EPS = 1e-12


class TriangleFrames(NamedTuple):
    """Local frames of the F triangles of B posed meshes.

    origin [B, F, 3] triangle centroids (world); rotation [B, F, 3, 3] local axes as columns (world from local);
    scale [B, F] positive triangle sizes (world units).
    """
    origin: torch.Tensor
    rotation: torch.Tensor
    scale: torch.Tensor


def check_faces(faces, num_vertices: int, source: str) -> torch.Tensor:
    """`faces` as an int64 tensor [F, 3] after checking it indexes a mesh of `num_vertices` vertices; DataError
    naming `source` (the file or key it came from) and the offending value otherwise."""
    array = np.asarray(faces.cpu() if isinstance(faces, torch.Tensor) else faces)
    if array.ndim != 2 or array.shape[1] != 3 or array.shape[0] == 0:
        raise DataError(f"{source}: faces must be a non-empty [F, 3] array of vertex indices, got shape "
                        f"{list(array.shape)}")
    if not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{source}: faces must be integer vertex indices, got dtype {array.dtype}")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= num_vertices:
        raise DataError(f"{source}: face indices span [{low}, {high}] but the mesh has {num_vertices} vertices "
                        f"(valid: 0..{num_vertices - 1})")
    return torch.from_numpy(array.astype(np.int64))


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def triangle_frames(vertices: torch.Tensor, faces: torch.Tensor) -> TriangleFrames:
    """Frames of every triangle (see the module docstring).

    vertices [B, V, 3] posed world positions; faces [F, 3] int64 vertex indices on the same device.
    """
    if vertices.ndim != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be [B, V, 3], got {list(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be [F, 3], got {list(faces.shape)}")
    corners = vertices[:, faces]                     # [B, F, 3 corners, 3]
    v0, v1, v2 = corners.unbind(dim=2)
    edge, across = v1 - v0, v2 - v0
    x = _unit(edge)
    y = _unit(torch.cross(edge, across, dim=-1))
    z = torch.cross(x, y, dim=-1)
    rotation = torch.stack([x, y, z], dim=-1)        # columns
    height = (across * z).sum(-1).abs()
    scale = 0.5 * (edge.norm(dim=-1) + height)
    return TriangleFrames(corners.mean(dim=2), rotation, scale)


def _gather(values: torch.Tensor, binding: torch.Tensor) -> torch.Tensor:
    """values [B, F, ...] at each Gaussian's triangle binding [N] -> [B, N, ...]."""
    return values.index_select(1, binding)


def pose_gaussians(frames: TriangleFrames, binding: torch.Tensor, local_means: torch.Tensor,
                   local_quats: torch.Tensor, local_scales: torch.Tensor
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World means, rotations and scales of Gaussians bound to triangles.

    frames: of B meshes with F triangles; binding [N] int64 triangle of each Gaussian; local_means [N, 3] or
    [B, N, 3] in units of the triangle's scale; local_quats [N, 4] or [B, N, 4] wxyz (unit; not normalised here);
    local_scales [N, 3] or [B, N, 3] positive, in units of the triangle's scale.
    Returns means [B, N, 3], quats [B, N, 4] (wxyz, unit when the local ones are), scales [B, N, 3].
    """
    if binding.ndim != 1:
        raise ValueError(f"binding must be [N], got {list(binding.shape)}")
    rotation = _gather(frames.rotation, binding)       # [B, N, 3, 3]
    scale = _gather(frames.scale, binding)[..., None]  # [B, N, 1]
    means = _gather(frames.origin, binding) + scale * (rotation @ local_means[..., None]).squeeze(-1)
    quats = quaternion_multiply(matrix_to_quaternion(rotation), local_quats)
    return means, quats, scale * local_scales


def local_means_of(frames: TriangleFrames, binding: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """The inverse of `pose_gaussians` for positions: world means [B, N, 3] of Gaussians bound to `binding` [N]
    -> local means [B, N, 3] (in units of the triangle's scale)."""
    rotation = _gather(frames.rotation, binding)
    offset = means - _gather(frames.origin, binding)
    local = (rotation.transpose(-1, -2) @ offset[..., None]).squeeze(-1)
    return local / _gather(frames.scale, binding)[..., None]


def barycentric_points(vertices: torch.Tensor, faces: torch.Tensor, binding: torch.Tensor,
                       barycentric: torch.Tensor) -> torch.Tensor:
    """Points at barycentric coordinates barycentric [N, 3] of the triangles binding [N] of meshes vertices
    [B, V, 3] with faces [F, 3] -> [B, N, 3]."""
    corners = vertices[:, faces.index_select(0, binding)]    # [B, N, 3 corners, 3]
    return (barycentric[None, :, :, None] * corners).sum(dim=2)
