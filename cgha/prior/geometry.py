"""The face-model geometry a prior and its avatars are bound to: every identity is the face model's mesh (one
topology, one expression space) with its own identity code, fitted to the subject's 3D landmarks.

    arrays = face_geometry_arrays(face_model)              # buffers of a prior / an avatar
    code = fit_identity_code(face_model, landmarks, exp, pose, scale)     # [C]
    vertices = expressed_vertices(rest, basis, exp, pose, scale)          # [B, V, 3] world

Why landmarks and not the subject's `vertices.npy`: a tracked photo gives landmarks (the tracker writes the face
model's own landmarks), so training identities and one-shot subjects get their shape the same way.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Tuple

import torch

from cgha.errors import DataError
from cgha.synthetic.expression import ExpressionBasis
from cgha.synthetic.head_model import apply_pose
from cgha.tracking.face_model import FaceModel, face_model_arrays
from cgha.utils.rotations import axis_angle_to_matrix

# Ridge weight of the identity fit, relative to the data term's scale: the components are scaled to one standard
# deviation, so this keeps badly constrained directions near the mean without pulling well-seen ones.
_RIDGE = 1e-4

BASIS_BUFFERS = ("blend", "jaw_weight", "mouth_push", "hinge")
GEOMETRY_BUFFERS = ("faces", "mean", "components") + BASIS_BUFFERS


def load_face_model(num_samples: int, num_components: int, cache_dir: Optional[os.PathLike] = None
                    ) -> Tuple[FaceModel, Dict[str, torch.Tensor]]:
    """(the tracker's face model of this build on the CPU, the arrays a prior keeps of it): faces [F, 3] int64,
    mean [V, 3], components [C, V, 3] and its expression basis blend [D, V, 3], jaw_weight [V], mouth_push [V],
    hinge [3] (float32). Built once and cached (cgha.tracking.face_model); nothing is downloaded."""
    arrays = face_model_arrays(num_samples, num_components, cache_dir)
    tensors = {name: torch.from_numpy(arrays[name]) if name == "faces" else torch.from_numpy(arrays[name]).float()
               for name in GEOMETRY_BUFFERS}
    return FaceModel(arrays=arrays), tensors


def expression_basis(module: torch.nn.Module) -> ExpressionBasis:
    """The expression basis held by a module's buffers named as BASIS_BUFFERS."""
    return ExpressionBasis(module.blend, module.jaw_weight, module.mouth_push, module.hinge)


def canonical_landmarks(landmarks: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """World landmarks [T, L, 3] of frames with pose [T, 6] and scale [T, 1] -> canonical [T, L, 3]
    (S^-1 R^T (x - t), the inverse of apply_pose)."""
    rotation = axis_angle_to_matrix(pose[:, :3].double())
    centred = landmarks.double() - pose[:, None, 3:].double()
    return ((centred @ rotation) / scale.double().reshape(-1, 1, 1)).float()


@torch.no_grad()
def fit_identity_code(face_model: FaceModel, landmarks: torch.Tensor, exp: torch.Tensor, pose: torch.Tensor,
                      scale: torch.Tensor, source: str = "landmarks") -> torch.Tensor:
    """The face model's identity code [C] whose landmarks best match a subject's world landmarks [T, 68, 3] of T
    frames with their expressions exp [T, D], poses [T, 6] and scales [T, 1] (ridge least squares; the model's
    landmarks are affine in the code for a fixed expression, so this is exact, not iterative)."""
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 3):
        raise DataError(f"{source}: the prior needs iBUG-68 landmarks [T, 68, 3], got {list(landmarks.shape)}")
    device = face_model.device
    target = canonical_landmarks(landmarks, pose, scale).to(device)
    exp = exp.to(device=device, dtype=face_model.dtype)
    count = face_model.num_identity
    base = face_model.landmarks(None, exp)                                           # [T, 68, 3]
    unit = torch.eye(count, dtype=face_model.dtype, device=device)
    columns = torch.stack([face_model.landmarks(unit[k], exp) - base for k in range(count)], -1)  # [T, 68, 3, C]
    A = columns.reshape(-1, count).double()
    b = (target - base).reshape(-1).double()
    normal = A.T @ A
    ridge = _RIDGE * normal.diagonal().mean() * torch.eye(count, dtype=normal.dtype, device=device)
    return torch.linalg.solve(normal + ridge, A.T @ b).float().cpu()


def expressed_vertices(rest: torch.Tensor, basis: ExpressionBasis, exp: torch.Tensor, pose: torch.Tensor,
                       scale: torch.Tensor) -> torch.Tensor:
    """World vertices [B, V, 3] of one identity's neutral canonical vertices rest [V, 3] with expressions exp [B, D],
    head poses pose [B, 6] and scales scale [B, 1]."""
    return apply_pose(basis.deform(rest, exp), pose, scale)
