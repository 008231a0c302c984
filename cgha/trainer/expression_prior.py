"""The mesh head's expression prior (ours; off by default, GHA has none): before the photometric schedule, fit the
expression deformation MLP to the shipped face model's expression deformation of the subject's own shape.

Why: GHA learns what each expression coefficient does only from the training frames. A short schedule on few
frames cannot tell apart coefficients whose events overlap in time, nor fit a rare wide-open jaw (the CPU demo's
avatar kept its mouth closed: docs/results.md). Subjects in the face model's expression basis (synthetic identities
and everything `preprocess/track.py` writes) come with their tracked meshes, so the face model, fitted to the
subject's shape (cgha/rigged/mesh.py, as the rigged avatar does), says how every point of that face moves for *any*
code. Fitting the MLP on codes drawn independently per coefficient makes each coefficient's motion identifiable; the
photometric training then refines it; as a loss term (`train.loss_weights.expression_prior`, mesh head and GHA's
Gaussian head) it keeps the motion while few frames show it. On synthetic subjects the face model is the
generator's own expression model, so there the prior is exact; on a real face it is the tracker's model of that face.

    prior = SubjectExpressionPrior.build(subject, frames, build=(128, 24), device=device)
    targets = PriorTargets.of(prior, landmarks, near, far, generator)      # a bank of codes and their motions
    fit_expression_prior(mesh_head, targets, steps=600, lr=1e-3, generator=generator)   # warm start (mesh head)
    losses["expression_prior"] = targets.loss(module.pos_embedding, module.exp_deform_mlp, deform_scale)  # regulariser
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch

from cgha.dataset.expression_basis import ExpressionBasis, read_expression_basis
from cgha.errors import DataError
from cgha.module.mesh_head import MeshHeadModule, blend_weights
from cgha.rigged.mesh import canonical_mesh, fit_subject_shape, read_subject_faces, shared_face_model
from cgha.tracking.face_model import FaceModel

log = logging.getLogger(__name__)

# Codes per step and face-model vertices per code: the loss sees CODES_PER_STEP x POINTS_PER_CODE points a step,
# cheap enough for a few hundred steps in seconds on a CPU.
CODES_PER_STEP = 8
POINTS_PER_CODE = 512
# Codes whose targets are computed once (PriorTargets).
CODE_BANK = 256
# Probability that a coefficient is active in a random code (amplitude uniform in [0, 1]): a few at once, as in real
# expressions, and each independent of the others.
ACTIVE_PROBABILITY = 0.25


@dataclass
class SubjectExpressionPrior:
    """The face model with the subject's fitted shape.

    face_model: the shipped face model; identity [K], offset [V, 3]: the subject's shape (cgha/rigged/mesh.py);
    neutral [V, 3]: its canonical neutral vertices; frame_codes [F, D]: the training frames' expression codes;
    fit_error: mean distance (canonical units) between the fitted and the tracked meshes.
    """
    face_model: FaceModel
    identity: torch.Tensor
    offset: torch.Tensor
    neutral: torch.Tensor
    frame_codes: torch.Tensor
    fit_error: float

    @classmethod
    def build(cls, subject, frames: Sequence[str], build: Tuple[int, int],
              device: torch.device) -> "SubjectExpressionPrior":
        """The prior of `subject` (a cgha.dataset.Subject) fitted on its tracked meshes of `frames`; `build` is the
        face model's (identities sampled, identity components). DataError when the subject is not in the face
        model's expression basis or lacks its meshes."""
        root = subject.layout.root
        face_model = shared_face_model(build[0], build[1], device)
        expected = ExpressionBasis(face_model.expression_model, tuple(face_model.expression_names))
        basis = read_expression_basis(root)
        if basis != expected:
            found = basis.describe() if basis is not None else "none recorded in its meta.json"
            raise DataError(f"{root}: train.deform_prior_iters fits the expression deformation to the face model "
                            f"{expected.describe()}, but the subject's expression basis is {found}; set "
                            f"train.deform_prior_iters=0 for subjects of another face model")
        read_subject_faces(root, face_model.num_vertices)
        shape = fit_subject_shape(face_model, subject, frames)
        identity, offset = shape.identity.to(device), shape.offset.to(device)
        neutral = canonical_mesh(face_model, identity, offset, torch.zeros(1, face_model.exp_dim, device=device))[0]
        codes = torch.from_numpy(subject.exp_coeff[[subject.frame_index[f] for f in frames]]).float().to(device)
        return cls(face_model, identity, offset, neutral, codes, shape.mean_error)

    def displaced(self, exp: torch.Tensor, vertex_ids: torch.Tensor) -> torch.Tensor:
        """Expressed canonical positions of the chosen vertices: exp [B, D], vertex_ids [B, P] -> [B, P, 3]."""
        expressed = canonical_mesh(self.face_model, self.identity, self.offset, exp)      # [B, V, 3]
        return torch.gather(expressed, 1, vertex_ids[..., None].expand(-1, -1, 3))


def sample_codes(frame_codes: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` expression codes [count, D]: the first half drawn from the training frames' codes, the rest random
    (each coefficient active with ACTIVE_PROBABILITY, amplitude uniform in [0, 1]), on frame_codes' device."""
    device, dim = frame_codes.device, frame_codes.shape[1]
    from_frames = count // 2
    picks = torch.randint(frame_codes.shape[0], (from_frames,), generator=generator)
    random = torch.rand(count - from_frames, dim, generator=generator)
    random = random * (torch.rand(count - from_frames, dim, generator=generator) < ACTIVE_PROBABILITY)
    return torch.cat([frame_codes[picks.to(device)], random.to(device)])


@dataclass
class PriorTargets:
    """A bank of expression codes and, for each, where the face model moves the subject's vertices that a module's
    expression deformation reaches (blend weight > 0).

    codes [N, D]; points [R, 3] neutral canonical vertices; weights [R] their blend weights; targets [N, R, 3] their
    expressed positions. The face model deforms all its vertices per code, which costs more than an MLP step, so
    the targets are computed once and each step draws from the bank.
    """
    codes: torch.Tensor
    points: torch.Tensor
    weights: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def of(cls, prior: SubjectExpressionPrior, landmarks: torch.Tensor, near: float, far: float,
           generator: torch.Generator) -> "PriorTargets":
        """Targets for a module whose expression deformation is weighted by `blend_weights(points, landmarks
        [K, 3], near, far)` (the mesh head's and the Gaussian head's rule)."""
        with torch.no_grad():
            weights = blend_weights(prior.neutral, landmarks.detach(), near, far)[:, 0]          # [V]
            reached = torch.nonzero(weights > 0).flatten()
            if reached.numel() == 0:
                raise DataError("the expression prior: no face-model vertex lies within dist_threshold_far of the "
                                "neutral landmarks, so the expression deformation acts nowhere")
            codes = sample_codes(prior.frame_codes, CODE_BANK, generator)                          # [N, D]
            targets = torch.cat([prior.displaced(chunk, reached[None].expand(chunk.shape[0], -1))
                                 for chunk in codes.split(CODES_PER_STEP)])                         # [N, R, 3]
        return cls(codes, prior.neutral[reached], weights[reached], targets)

    def loss(self, pos_embedding: torch.nn.Module, exp_deform_mlp: torch.nn.Module, deform_scale: float,
             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """MSE (canonical units squared) between the module's expression deformation of CODES_PER_STEP x
        POINTS_PER_CODE drawn (code, vertex) pairs, `points + mlp([pos_embedding(points), code]) x weight x
        deform_scale`, and the face model's. `generator`: a CPU generator, or None for torch's global one (which a
        training state saves, so a resumed run draws the same pairs)."""
        device = self.points.device
        rows = torch.randint(self.codes.shape[0], (CODES_PER_STEP,), generator=generator).to(device)       # [B]
        cols = torch.randint(self.points.shape[0], (CODES_PER_STEP, POINTS_PER_CODE),
                             generator=generator).to(device)                                               # [B, P]
        codes, points = self.codes[rows], self.points[cols]                                     # [B, D], [B, P, 3]
        exp_input = torch.cat([pos_embedding(points), codes[:, None].expand(-1, points.shape[1], -1)], -1)
        moved = points + exp_deform_mlp(exp_input) * self.weights[cols][..., None] * deform_scale
        return torch.nn.functional.mse_loss(moved, self.targets[rows[:, None], cols])


def subject_prior_targets(dataset, train, landmarks: torch.Tensor, near: float, far: float,
                          device: torch.device) -> PriorTargets:
    """What both trainers use: the prior of a training dataset's subject and frames (face model build
    `train.deform_prior_face_model`), with a bank drawn from `train.seed`, for a module weighted by `landmarks`
    [K, 3], `near`, `far` (its blend rule). Logs the shape fit's error."""
    prior = SubjectExpressionPrior.build(dataset.subject, dataset.frames, tuple(train.deform_prior_face_model), device)
    log.info("expression prior: the face model fitted to the subject's meshes (mean distance %.2g)", prior.fit_error)
    return PriorTargets.of(prior, landmarks, near, far, torch.Generator().manual_seed(train.seed))


def fit_expression_prior(module: MeshHeadModule, targets: PriorTargets, steps: int, lr: float,
                         generator: torch.Generator) -> float:
    """Fit `module.exp_deform_mlp` alone so that the mesh head's expression deformation (MLP x blend weight x
    deform_scale, as `MeshHeadModule.reconstruct` applies it) moves the subject's neutral face-model vertices where
    the face model moves them (`targets`). Returns the final MSE (canonical units squared). `generator` (CPU) draws
    the (code, vertex) pairs, so a seed gives one result."""
    optimizer = torch.optim.Adam(module.exp_deform_mlp.parameters(), lr=lr)
    loss = torch.zeros((), device=targets.points.device)
    for _ in range(steps):
        loss = targets.loss(module.pos_embedding, module.exp_deform_mlp, module.cfg.deform_scale, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())
