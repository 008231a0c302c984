"""The rigged avatar's mesh: the face model (cgha.tracking.face_model) driven by expression codes, with the
subject's own shape.

The shape is fitted once, at initialisation, to the subject's tracked meshes (`params/*/vertices.npy`, triangles
`faces.npy`): an identity code [K] by least squares over training frames, plus a static per-vertex offset [V, 3]
(the mean remaining difference, as GaussianAvatars' FLAME static offset), so that the driven mesh reproduces the
tracked one. Training, evaluation, reenactment and novel expressions all use this one mesh source, so Gaussians move
in reenactment exactly as they moved in training; another identity's codes drive it unchanged.

    face_model = shared_face_model(samples, components, device)
    shape = fit_subject_shape(face_model, subject, frames)     # SubjectShape(identity [K], offset [V, 3], errors)
    verts = posed_mesh(face_model, identity, offset, exp, pose, scale)   # [B, V, 3] world
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, NamedTuple, Sequence, Tuple

import numpy as np
import torch

from cgha.errors import DataError
from cgha.rigged.binding import check_faces
from cgha.synthetic.head_model import apply_pose
from cgha.tracking.face_model import FaceModel
from cgha.utils.rotations import axis_angle_to_matrix

FACES_FILE = "faces.npy"
# Frames used to fit the identity (evenly spaced over the training frames): the fit has K unknowns and every frame
# gives V * 3 equations, so a few frames determine it; more only cost memory ([frames, V, 3, K]).
FIT_FRAMES = 8

_FACE_MODELS: Dict[Tuple[int, int, str], FaceModel] = {}


def shared_face_model(samples: int, components: int, device: torch.device) -> FaceModel:
    """The face model of these build settings on `device`, loaded (or built and cached) once per process."""
    key = (samples, components, str(device))
    if key not in _FACE_MODELS:
        _FACE_MODELS[key] = FaceModel(device=device, num_samples=samples, num_components=components)
    return _FACE_MODELS[key]


class SubjectShape(NamedTuple):
    """identity [K] face-model identity code; offset [V, 3] static canonical offset; mean_error / max_error:
    distance (canonical units) between the fitted and the tracked meshes over the fitted frames."""
    identity: torch.Tensor
    offset: torch.Tensor
    mean_error: float
    max_error: float


def read_subject_faces(root: Path, num_vertices: int) -> torch.Tensor:
    """The subject's `faces.npy` [F, 3] int64, checked against its meshes of `num_vertices` vertices."""
    path = Path(root) / FACES_FILE
    if not path.is_file():
        raise DataError(f"{path}: missing; the rigged avatar binds Gaussians to the subject's mesh triangles. "
                        f"Tracked subjects (preprocess/track.py) and synthetic subjects of generator 1.2.0 or later "
                        f"write it: regenerate the subject (make_synthetic.py --force) or re-track it")
    try:
        faces = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: unreadable .npy ({type(error).__name__}: {error})") from None
    return check_faces(faces, num_vertices, str(path))


def canonical_tracked_vertices(subject, frames: Sequence[str]) -> torch.Tensor:
    """The subject's tracked meshes of `frames` mapped to canonical space, S^-1 R^T (x - T): -> [F, V, 3] float64."""
    meshes = []
    for frame in frames:
        path = subject.layout.vertices(frame)
        verts = np.load(path, allow_pickle=False)
        if verts.ndim != 2 or verts.shape[1] != 3:
            raise DataError(f"{path}: shape {list(verts.shape)}, expected [V, 3]")
        index = subject.frame_index[frame]
        rotation = axis_angle_to_matrix(torch.from_numpy(subject.pose[index, :3]).double())
        centred = torch.from_numpy(verts).double() - torch.from_numpy(subject.pose[index, 3:]).double()
        meshes.append(centred @ rotation / float(subject.scale[index, 0]))
    return torch.stack(meshes)


@torch.no_grad()
def fit_subject_shape(face_model: FaceModel, subject, frames: Sequence[str]) -> SubjectShape:
    """Identity code and static offset that make the face model, driven by the subject's expression codes,
    reproduce its tracked meshes of `frames` (at most FIT_FRAMES of them, evenly spaced, are used).

    The expressed mesh is affine in the identity code (the expression deformation is affine in the rest shape), so
    the code is a linear least-squares solution; the offset is the mean residual."""
    if subject.exp_dim != face_model.exp_dim:
        raise DataError(f"{subject.layout.root}: expression codes have {subject.exp_dim} coefficients but the face "
                        f"model takes {face_model.exp_dim}; the rigged avatar needs a subject in the face model's "
                        f"expression space (synthetic or tracked by preprocess/track.py)")
    picks = np.unique(np.linspace(0, len(frames) - 1, num=min(FIT_FRAMES, len(frames))).round().astype(int))
    chosen = [frames[i] for i in picks]
    tracked = canonical_tracked_vertices(subject, chosen)                       # [F, V, 3]
    if tracked.shape[1] != face_model.num_vertices:
        raise DataError(f"{subject.layout.vertices(chosen[0])}: {tracked.shape[1]} vertices, but the face model has "
                        f"{face_model.num_vertices}; the rigged avatar needs meshes of the face model's topology")
    model = face_model.to(dtype=torch.float64) if face_model.dtype != torch.float64 else face_model
    exp = torch.from_numpy(subject.exp_coeff[[subject.frame_index[f] for f in chosen]]).to(model.device).double()
    K = model.num_identity
    base = model.canonical_vertices(None, exp).cpu()                            # [F, V, 3]
    eye = torch.eye(K, dtype=torch.float64, device=model.device)
    columns = torch.stack([model.canonical_vertices(eye[k], exp).cpu() - base for k in range(K)], -1)  # [F, V, 3, K]
    A = columns.reshape(-1, K)
    b = (tracked - base).reshape(-1)
    identity = torch.linalg.solve(A.T @ A + 1e-9 * torch.eye(K, dtype=A.dtype), A.T @ b)
    fitted = base + columns @ identity
    offset = (tracked - fitted).mean(0)
    error = (tracked - fitted - offset).norm(dim=-1)
    return SubjectShape(identity.float(), offset.float(), float(error.mean()), float(error.max()))


def canonical_mesh(face_model: FaceModel, identity: torch.Tensor, offset: torch.Tensor,
                   exp: torch.Tensor) -> torch.Tensor:
    """Expressed canonical vertices of the subject: identity [K], offset [V, 3], exp [B, D] -> [B, V, 3]."""
    return face_model.canonical_vertices(identity, exp) + offset


def posed_mesh(face_model: FaceModel, identity: torch.Tensor, offset: torch.Tensor, exp: torch.Tensor,
               pose: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """World vertices R(pose[:3]) (scale x) + pose[3:]: identity [K], offset [V, 3], exp [B, D], pose [B, 6],
    scale [B, 1] -> [B, V, 3]."""
    return apply_pose(canonical_mesh(face_model, identity, offset, exp), pose, scale)
