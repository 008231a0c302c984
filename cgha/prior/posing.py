"""Gaussians bound to face-model triangles, shared by the prior and its avatars: what the decoders output per
Gaussian (in its triangle's local frame, cgha.rigged.binding) and how that becomes posed world Gaussians.

Decoder outputs, by name and width: the identity decoder gives `offset` (3, local mean), `rotation` (4, added to the
identity quaternion), `log_scale` (3, added to the Gaussian's base log-scale), `opacity` (1, logit, added to
OPACITY_BIAS) and `color` (3, logit); the expression decoder gives `color` (3) and `offset` (3), added to those.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from cgha.avatar.gaussians import Gaussians
from cgha.rigged.binding import TriangleFrames, pose_gaussians, triangle_frames

STATIC_OUTPUTS = (("offset", 3), ("rotation", 4), ("log_scale", 3), ("opacity", 1), ("color", 3))
DYNAMIC_OUTPUTS = (("color", 3), ("offset", 3))
# A fresh decoder outputs zeros: opacity sigmoid(2) = 0.88 covers the head from the start.
OPACITY_BIAS = 2.0
_IDENTITY_QUATERNION = (1.0, 0.0, 0.0, 0.0)


def split_outputs(values: torch.Tensor, layout) -> Dict[str, torch.Tensor]:
    """[..., sum of widths] -> {name: [..., width]} in `layout`'s order ((name, width) pairs)."""
    names, widths = zip(*layout)
    return dict(zip(names, values.split(list(widths), dim=-1)))


def local_rotation(delta: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (wxyz) of a decoder's rotation output delta [..., 4] (identity at zero)."""
    base = delta.new_tensor(_IDENTITY_QUATERNION)
    return torch.nn.functional.normalize(base + delta, dim=-1)


def bound_frames(vertices: torch.Tensor, bound_faces: torch.Tensor) -> TriangleFrames:
    """Frames of the N triangles Gaussians are bound to: vertices [B, V, 3], bound_faces [N, 3] (row i: Gaussian i's
    triangle) -> frames of B x N triangles (Gaussian i uses triangle i: binding = arange(N))."""
    return triangle_frames(vertices, bound_faces)


def posed_gaussians(frames: TriangleFrames, local_means: torch.Tensor, local_quats: torch.Tensor,
                    local_scales: torch.Tensor, opacities: torch.Tensor, colors: torch.Tensor,
                    extras: Dict[str, torch.Tensor]) -> Gaussians:
    """World Gaussians [B, N] from local attributes: local_means [B|1, N, 3], local_quats [B|1, N, 4] (unit),
    local_scales [B|1, N, 3] (positive, triangle units), opacities [B|1, N] in (0, 1), colors [B, N, 3] in
    [0, 1]."""
    batch, count = frames.origin.shape[:2]
    binding = torch.arange(count, device=frames.origin.device)
    means, quats, scales = pose_gaussians(frames, binding, local_means, local_quats, local_scales)
    return Gaussians(means=means, quats=quats, scales=scales, opacities=opacities.expand(batch, count),
                     features=colors, extras=extras)


def canonical_from_local(frames: TriangleFrames, local_means: torch.Tensor, local_quats: torch.Tensor,
                         local_scales: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Local attributes [1, N, ...] on a neutral canonical mesh's frames [1, N] -> canonical (xyz [N, 3], unit
    rotation [N, 4], scales [N, 3])."""
    binding = torch.arange(frames.origin.shape[1], device=frames.origin.device)
    means, quats, scales = pose_gaussians(frames, binding, local_means, local_quats, local_scales)
    return means[0], quats[0], scales[0]
