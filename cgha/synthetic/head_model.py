"""The synthetic head of one identity: fixed-topology mesh + expression deformation + head pose + landmarks.

    head = HeadModel(identity=0)
    verts = head.posed_vertices(exp, pose, scale)    # [B, V, 3] world
    lmk = head.landmarks(verts, exp)                   # [B, 68, 3]

World = R(pose[:3]) @ (scale * x_canonical) + pose[3:] (see docs/conventions.md).
"""
from __future__ import annotations

import functools

import torch

from cgha.utils.rotations import axis_angle_to_matrix

from .expression import EXP_DIM, EXPRESSION_NAMES, build_expression_basis, expression_batch, named_expression
from .identity import IdentityParams, identity_params
from .landmarks import build_landmarks
from .layout import FaceLayout, face_layout
from .shape import rest_shape
from .topology import template_sphere, vertex_normals

__all__ = ["HeadModel", "apply_pose", "MESH_FREQ", "DEFAULT_SCALE"]

# Geodesic frequency of the template: 10 * 40**2 + 2 = 16002 vertices, 32000 faces.
MESH_FREQ = 40
# Template vertices are gathered toward the face centre (about 3x denser there than on average).
_FACE_POLE = (0.0, -0.25, 1.0)
_WARP_K = 0.55
# Canonical-to-world scale: the head (about 2 canonical units wide) becomes ~0.25 world units wide.
DEFAULT_SCALE = 0.125


def apply_pose(points: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Canonical -> world: ``R(pose[:3]) @ (scale * x) + pose[3:]``.

    Args:
        points: [B, N, 3] canonical points.
        pose: [B, 6] axis-angle (radians) + translation.
        scale: [B] or [B, 1] scale.
    Returns:
        [B, N, 3] world points.
    """
    if points.dim() != 3 or pose.shape != (points.shape[0], 6):
        raise ValueError(f"apply_pose: points [B, N, 3] and pose [B, 6] expected, got {tuple(points.shape)}, "
                         f"{tuple(pose.shape)}")
    pose = pose.to(points.dtype)
    R = axis_angle_to_matrix(pose[:, :3])
    s = scale.to(points.dtype).reshape(-1, 1, 1)
    return (s * points) @ R.transpose(-1, -2) + pose[:, None, 3:]


@functools.lru_cache(maxsize=8)
def _build(identity: int):
    """Float64 CPU geometry of one identity (cached: building takes about a second)."""
    idp = identity_params(identity)
    lay = face_layout(idp)
    dirs, faces = template_sphere(MESH_FREQ, _FACE_POLE, _WARP_K)
    dirs = torch.from_numpy(dirs)
    faces = torch.from_numpy(faces)
    rest, tex = rest_shape(dirs, idp, lay)
    basis = build_expression_basis(tex, lay)
    tex_normals = vertex_normals(tex[None], faces)[0]
    lmk = build_landmarks(tex, tex_normals, idp, lay)
    return idp, lay, faces, rest, tex, basis, lmk


class HeadModel:
    """Synthetic head of one identity.

    Attributes:
        identity: identity index.
        params: IdentityParams (shape and colours).
        layout: FaceLayout (feature positions in canonical space).
        faces: [F, 3] int64, counter-clockwise seen from outside.
        rest: [V, 3] neutral canonical vertices.
        tex: [V, 3] texture coordinates (the unsqueezed rest positions; equal to ``rest`` away from the mouth).
        expression_names: names of the D expression coefficients.
    """

    def __init__(self, identity: int = 0, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        idp, lay, faces, rest, tex, basis, lmk = _build(int(identity))
        self.identity = int(identity)
        self.params: IdentityParams = idp
        self.layout: FaceLayout = lay
        self.device = torch.device(device)
        self.dtype = dtype
        self.faces = faces.to(self.device)
        self.rest = rest.to(dtype=dtype, device=self.device)
        self.tex = tex.to(dtype=dtype, device=self.device)
        self.basis = basis.to(dtype=dtype, device=self.device)
        self.landmark_spec = lmk.to(self.device)
        self.expression_names = EXPRESSION_NAMES

    @property
    def num_vertices(self) -> int:
        return self.rest.shape[0]

    @property
    def exp_dim(self) -> int:
        return EXP_DIM

    def _exp(self, exp) -> torch.Tensor:
        return expression_batch(exp, self.dtype, self.device)

    def expression(self, **coeffs: float) -> torch.Tensor:
        """A [D] coefficient vector from names, e.g. ``head.expression(jaw_open=1.0, blink_left=0.5)``."""
        return named_expression(coeffs, self.dtype, self.device)

    def canonical_vertices(self, exp) -> torch.Tensor:
        """Expressed canonical vertices [B, V, 3] for coefficients ``exp`` [B, D] (or [D])."""
        return self.basis.deform(self.rest, self._exp(exp))

    def posed_vertices(self, exp, pose, scale) -> torch.Tensor:
        """World vertices [B, V, 3] for ``exp`` [B, D], ``pose`` [B, 6], ``scale`` [B] (unbatched inputs allowed)."""
        exp = self._exp(exp)
        pose = torch.as_tensor(pose, dtype=self.dtype, device=self.device).reshape(-1, 6)
        scale = torch.as_tensor(scale, dtype=self.dtype, device=self.device).reshape(-1)
        return apply_pose(self.canonical_vertices(exp), pose, scale)

    def vertex_normals(self, verts: torch.Tensor) -> torch.Tensor:
        """Smooth vertex normals [B, V, 3] of vertices [B, V, 3]."""
        return vertex_normals(verts, self.faces)

    def landmarks(self, verts: torch.Tensor, exp) -> torch.Tensor:
        """68 iBUG landmarks [B, 68, 3] on vertices ``verts`` [B, V, 3] (same space as ``verts``)."""
        return self.landmark_spec.positions(verts, self._exp(exp))
