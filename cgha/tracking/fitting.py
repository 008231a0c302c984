"""Batched landmark fit of the face model to frames x cameras: per-frame pose and expression, per-subject identity
and scale.

    result = fit_landmarks(model, lmk2d, conf, Ks, viewmats, image_size=(512, 512), device="cuda")
    result.pose, result.exp, result.identity, result.scale, result.reprojection_px

Objective (sum over frames; see ``FitConfig`` for the weights):
- landmark reprojection: Huber of the 2D landmark distance, in pixels of a ``reference_size`` image (distances are
  rescaled by ``reference_size / max(W, H)`` of their camera, so weights mean the same at any resolution), times
  the landmark's confidence;
- temporal smoothness (frames are taken to be in time order): squared change of the head's angular velocity
  between consecutive frame pairs (zero for a steady turn), squared second differences of translation (in head
  units) and of expression;
- priors: identity code ~ unit Gaussian; expression coefficients pulled lightly toward 0 (neutral), and held in the
  generator's range [0, 1] as bounds; log-scale pulled lightly toward its initial value.

Optimisation: an affine-camera (weak perspective) closed-form pose per frame and camera, keeping per frame the
candidate that reprojects best into all cameras; then projected Levenberg-Marquardt, first rigid (pose and scale,
mean identity and neutral expression), then everything. Each iteration solves the Gauss-Newton system of the whole
objective exactly: per-frame 22 x 22 blocks (landmark term, priors), couplings between frames up to two apart
(smoothness), and an arrow to the shared identity and scale, eliminated by a Schur complement; the block-banded part
is solved by block cyclic reduction, in O(log T) batched steps. First-order methods are no match here: a radian of
head rotation moves the landmarks ~100x more than a unit of ``eye_wide``, some coefficients nearly repeat each other
(``smile`` vs ``smile_left``; ``jaw_left`` is ``jaw_right``'s negative), and the smoothness terms couple all frames
into slowly converging modes (L-BFGS, even with per-frame preconditioning, was still far from the minimum after
hundreds of iterations; this converges in 10-30). The landmark Jacobians are analytic for pose and scale, forward
differences of the face model for expression and identity, and the curvature of the projections is summed over
cameras per landmark first, so the cost of an iteration does not grow with the number of cameras. The gradient is
exact (autograd). Rotations are updated as ``R0 @ exp(delta)`` around the previous iterate, so no axis-angle
singularity is ever near, whatever the world frame of the calibration.

Scale: with one camera, scale and depth are one unknown (a bigger head farther away projects the same), so scale
stays at ``FitConfig.init_scale`` (the synthetic heads' ``DEFAULT_SCALE``) and the translation absorbs the depth;
with several cameras sharing a frame it is fitted (``FitConfig.fit_scale``). Identity size is partly the same
unknown as scale; the identity prior keeps the split well defined.

Frames whose landmarks are all invisible (fewer than ``FitConfig.min_landmarks`` visible over all cameras) are
*kept*: their pose and expression are filled in by the temporal terms from their neighbours, and
``FitResult.observed`` is False for them, so a caller can drop them. No observed frame at all is a ValueError.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from cgha.synthetic.head_model import DEFAULT_SCALE
from cgha.synthetic.landmarks import NUM_LANDMARKS
from cgha.utils.rotations import axis_angle_to_matrix, matrix_to_axis_angle

from .face_model import FaceModel

__all__ = ["FitConfig", "FitResult", "fit_landmarks", "project_landmarks", "rotation_error_deg"]

_POSE_DIM = 6  # per-frame rotation delta (3) + translation in head units (3), then the expression
# Expression coefficients are fitted within the generator's range (0 = neutral, 1 = the full expression).
_EXP_LOW, _EXP_HIGH = 0.0, 1.0
# Finite-difference step of the face model's Jacobians (expression coefficients and identity codes are O(1)).
_DIFFERENCE_STEP = 1e-4
# Frames per chunk when building the Gauss-Newton blocks: bounds the memory of the [frames, 68, 3, 22 + K + 1]
# Jacobians and [frames, C, 68, 3, 3] projection curvatures.
_JACOBIAN_ELEMENTS = 1 << 23


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """Weights and schedule of ``fit_landmarks``. Pixel quantities are at ``reference_size`` (512 px images)."""

    reference_size: float = 512.0  # residuals are expressed in pixels of an image this large (its longer side)
    huber_px: float = 2.0  # Huber transition: quadratic below, linear above (landmark outliers)
    smooth_rotation: float = 2.0e4  # per (radian / frame^2)^2 of angular acceleration
    smooth_translation: float = 2.0e4  # per (head-scale units / frame^2)^2 (translation divided by init_scale)
    smooth_expression: float = 2.0  # per (coefficient / frame^2)^2: light, blinks last about three frames
    identity_prior: float = 1.0  # times |identity|^2 (unit-Gaussian code, one term per subject)
    expression_prior: float = 0.5  # times |exp|^2 per frame (toward neutral, where the landmarks cannot tell)
    scale_prior: float = 10.0  # times log(scale / init_scale)^2 (only when the scale is fitted)
    init_scale: float = DEFAULT_SCALE
    fit_scale: Optional[bool] = None  # None: fitted when at least one frame is seen by two cameras
    fit_identity: bool = True
    min_landmarks: int = 6  # visible landmarks for a frame (all cameras) or a camera's initial pose to count
    rigid_iterations: int = 10  # Levenberg-Marquardt iterations of the rigid stage
    joint_iterations: int = 40  # ... and of the joint stage (fewer when the objective stops falling)
    tolerance: float = 1.0e-7  # a stage stops when an iteration lowers the objective by less than this fraction

    def __post_init__(self):
        for name in ("reference_size", "huber_px", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"FitConfig.{name} must be > 0, got {getattr(self, name)}")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and (not math.isfinite(value) or value < 0):
                raise ValueError(f"FitConfig.{f.name} must be finite and >= 0, got {value}")
        for name, low in (("min_landmarks", 4), ("rigid_iterations", 0), ("joint_iterations", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"FitConfig.{name} must be an int >= {low}, got {value!r}")
        if self.min_landmarks > NUM_LANDMARKS:
            raise ValueError(f"FitConfig.min_landmarks must be <= {NUM_LANDMARKS}, got {self.min_landmarks}")


@dataclasses.dataclass
class FitResult:
    """Fitted parameters (on the fit's device, float32) and how well they explain the landmarks.

    Attributes:
        pose: [T, 6] axis-angle + translation (world = R(pose[:3]) @ (scale * x) + pose[3:]).
        exp: [T, 16] expression coefficients.
        identity: [K] identity code.
        scale: [] canonical-to-world scale.
        landmarks_3d: [T, 68, 3] fitted landmarks, world.
        residuals_px: [T, C, 68, 2] projected minus observed landmark, pixels of each camera's image (0 where
            the landmark is invisible).
        camera_reprojection_px: [T, C] mean landmark distance in pixels per frame and camera (NaN: nothing visible).
        reprojection_px: [T] mean landmark distance in pixels over the frame's visible landmarks (NaN: unobserved).
        observed: [T] bool, frames with at least ``min_landmarks`` visible landmarks.
        scale_fitted: whether the scale was fitted (else it is ``FitConfig.init_scale``).
        losses: objective value after the initial pose and after each stage (``init``, ``rigid``, ``joint``).
        iterations: Gauss-Newton systems solved per stage (``rigid``, ``joint``).
    """

    pose: torch.Tensor
    exp: torch.Tensor
    identity: torch.Tensor
    scale: torch.Tensor
    landmarks_3d: torch.Tensor
    residuals_px: torch.Tensor
    camera_reprojection_px: torch.Tensor
    reprojection_px: torch.Tensor
    observed: torch.Tensor
    scale_fitted: bool
    losses: Dict[str, float]
    iterations: Dict[str, int]


def rotation_error_deg(aa_a: torch.Tensor, aa_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle in degrees [...] between rotations given as axis-angle [..., 3] (for evaluations)."""
    Ra, Rb = axis_angle_to_matrix(aa_a.double()), axis_angle_to_matrix(aa_b.double())
    cos = ((Ra.transpose(-1, -2) @ Rb).diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


def reprojection_errors(uv: torch.Tensor, observed_px: torch.Tensor, visible: torch.Tensor,
                        frames: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How far projected landmarks lie from observed ones.

    Args:
        uv, observed_px: [T, C, N, 2] projected and observed pixels; visible: [T, C, N] bool.
        frames: [T] bool, the frames to report (None: those with a visible landmark).
    Returns:
        residuals [T, C, N, 2] (``uv - observed_px``, 0 where invisible), the mean landmark distance per frame and
        camera [T, C] and per frame [T] over the visible landmarks (NaN where none, or the frame is not reported).
    """
    residuals = torch.where(visible[..., None], uv - observed_px, torch.zeros_like(uv))
    dist = residuals.norm(dim=-1)
    n_cam = visible.sum(-1)
    per_camera = torch.where(n_cam > 0, dist.sum(-1) / n_cam.clamp(min=1), torch.full_like(dist[..., 0], math.nan))
    n_frame = n_cam.sum(-1)
    frames = n_frame > 0 if frames is None else frames
    per_frame = torch.where(frames, dist.sum((1, 2)) / n_frame.clamp(min=1), torch.full_like(dist[:, 0, 0], math.nan))
    return residuals, per_camera, per_frame


def project_landmarks(world: torch.Tensor, Ks: torch.Tensor, viewmats: torch.Tensor) -> torch.Tensor:
    """Pixels [T, C, N, 2] of world points [T, N, 3] in cameras ``Ks`` [C, 3, 3], ``viewmats`` [C, 4, 4] or
    [C, 3, 4] (world-to-camera); the projection the fit uses (depth floored at 1e-3 in front of the camera)."""
    return _project(world, viewmats[:, :3, :3], viewmats[:, :3, 3], Ks)


# ------------------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------------------

def _tensor(x, name: str, device, dtype) -> torch.Tensor:
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be a numeric array: {error}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be a real numeric array, got {t.dtype}")
    return t.to(device=device, dtype=dtype)


def _check_inputs(landmarks, confidence, Ks, viewmats, image_size, init_pose, device, dtype):
    lmk = _tensor(landmarks, "landmarks", device, dtype)
    if lmk.dim() != 4 or lmk.shape[2:] != (NUM_LANDMARKS, 2) or lmk.shape[0] < 1 or lmk.shape[1] < 1:
        raise ValueError(f"landmarks must be [T, C, {NUM_LANDMARKS}, 2] pixels, got {tuple(lmk.shape)}")
    T, C = lmk.shape[:2]
    conf = _tensor(confidence, "confidence", device, dtype)
    if conf.shape != (T, C, NUM_LANDMARKS):
        raise ValueError(f"confidence must be [T={T}, C={C}, {NUM_LANDMARKS}] like landmarks, "
                         f"got {tuple(conf.shape)}")
    if not bool(torch.isfinite(conf).all()) or bool((conf < 0).any()):
        raise ValueError("confidence must be finite and >= 0 (0 = invisible)")
    visible = conf > 0
    if not bool(torch.isfinite(lmk[visible]).all()):
        raise ValueError("landmarks must be finite wherever confidence > 0 (NaN or inf found)")
    # Invisible landmarks may hold anything (NaN from a failed detector): zeroed so no NaN reaches a gradient.
    lmk = torch.where(visible[..., None], lmk, torch.zeros_like(lmk))
    K = _tensor(Ks, "Ks", device, dtype)
    if K.shape != (C, 3, 3):
        raise ValueError(f"Ks must be [C={C}, 3, 3] intrinsics in pixels, got {tuple(K.shape)}")
    if not bool(torch.isfinite(K).all()):
        raise ValueError("Ks must be finite")
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=device)
    if not (bool((K[:, 0, 0] > 0).all()) and bool((K[:, 1, 1] > 0).all()) and bool((K[:, 1, 0] == 0).all())
            and bool((K[:, 2] == bottom).all())):
        raise ValueError("Ks must be pinhole intrinsics [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
    V = _tensor(viewmats, "viewmats", device, dtype)
    if V.shape not in ((C, 4, 4), (C, 3, 4)):
        raise ValueError(f"viewmats must be [C={C}, 4, 4] or [C={C}, 3, 4] world-to-camera, got {tuple(V.shape)}")
    if not bool(torch.isfinite(V).all()):
        raise ValueError("viewmats must be finite")
    Rc = V[:, :3, :3]
    eye = torch.eye(3, dtype=dtype, device=device)
    if bool(((Rc @ Rc.transpose(-1, -2) - eye).abs() > 1e-3).any()) or bool((torch.linalg.det(Rc) <= 0).any()):
        raise ValueError("viewmats: the 3x3 part must be a rotation (world-to-camera, no scale or reflection)")
    size = _tensor(image_size, "image_size", device, dtype)
    if size.shape == (2,):
        size = size.expand(C, 2)
    if size.shape != (C, 2) or not bool(torch.isfinite(size).all()) or not bool((size > 0).all()):
        raise ValueError(f"image_size must be (width, height) or [C={C}, 2], positive, got "
                         f"{tuple(size.shape)} {size.tolist() if size.numel() <= 8 else ''}".rstrip())
    pose0 = None
    if init_pose is not None:
        pose0 = _tensor(init_pose, "init_pose", device, dtype)
        if pose0.shape != (T, 6) or not bool(torch.isfinite(pose0).all()):
            raise ValueError(f"init_pose must be [T={T}, 6] finite (axis-angle + translation), "
                             f"got {tuple(pose0.shape)}")
    return lmk, conf, K, Rc.contiguous(), V[:, :3, 3].contiguous(), size, pose0


# ------------------------------------------------------------------------------------------------------------
# Geometry
# ------------------------------------------------------------------------------------------------------------

def _project(world: torch.Tensor, Rc: torch.Tensor, tc: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixels [T, C, N, 2] of world points [T, N, 3] in cameras (Rc [C, 3, 3], tc [C, 3], K [C, 3, 3])."""
    cam = torch.einsum("cij,tnj->tcni", Rc, world) + tc[None, :, None, :]
    # Points at or behind the camera only occur far from a solution; a floor keeps the gradients finite there.
    z = cam[..., 2].clamp(min=1e-3)
    x, y = cam[..., 0] / z, cam[..., 1] / z
    u = K[None, :, None, 0, 0] * x + K[None, :, None, 0, 1] * y + K[None, :, None, 0, 2]
    v = K[None, :, None, 1, 1] * y + K[None, :, None, 1, 2]
    return torch.stack([u, v], dim=-1)


def _initial_pose(model: FaceModel, lmk, conf, K, Rc, tc, size, cfg: FitConfig) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-frame pose [T, 6] from an affine camera fit of the mean neutral landmarks in each view, keeping per
    frame the view whose pose reprojects best into all views, and [T] bool: frames with such a candidate (a camera
    with ``min_landmarks`` visible landmarks). Frames without one copy the nearest frame that has one."""
    T, C = lmk.shape[:2]
    dtype, device = lmk.dtype, lmk.device
    X = model.landmarks(None, torch.zeros(1, model.exp_dim, dtype=dtype, device=device))[0] * cfg.init_scale
    # Normalised image coordinates (K^-1 applied): the affine fit then needs no focal length.
    Kinv = torch.linalg.inv(K)
    uv1 = torch.cat([lmk, torch.ones_like(lmk[..., :1])], dim=-1)
    xn = torch.einsum("cij,tcnj->tcni", Kinv, uv1)[..., :2]  # [T, C, 68, 2]
    w = conf / conf.sum(-1, keepdim=True).clamp(min=1e-12)
    x_bar = (w[..., None] * xn).sum(-2)  # [T, C, 2]
    X_bar = torch.einsum("tcn,nk->tck", w, X)  # [T, C, 3]
    dX = X[None, None] - X_bar[:, :, None]  # [T, C, 68, 3]
    dx = xn - x_bar[:, :, None]
    # Weighted least squares dx ~ A dX for A [2, 3] per (frame, camera).
    sw = w.sqrt()[..., None]
    G = (sw * dX).transpose(-1, -2) @ (sw * dX) + 1e-9 * torch.eye(3, dtype=dtype, device=device)
    A = torch.linalg.solve(G, (sw * dX).transpose(-1, -2) @ (sw * dx)).transpose(-1, -2)  # [T, C, 2, 3]
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    R12 = U @ Vh  # nearest scaled-orthonormal rows
    r3 = torch.linalg.cross(R12[..., 0, :], R12[..., 1, :])
    R_cam = torch.cat([R12, r3[..., None, :]], dim=-2)  # camera <- canonical (with the scale factored out)
    z = 1.0 / S.mean(-1).clamp(min=1e-9)  # A = (1 / z) R12 for points already multiplied by the scale
    origin_xy = x_bar - (A @ X_bar[..., None])[..., 0]
    t_cam = torch.cat([origin_xy * z[..., None], z[..., None]], dim=-1)  # [T, C, 3]
    R_world = Rc.transpose(-1, -2)[None] @ R_cam  # [T, C, 3, 3]
    t_world = torch.einsum("cji,tcj->tci", Rc, t_cam - tc[None])
    aa = matrix_to_axis_angle(R_world.reshape(-1, 3, 3)).reshape(T, C, 3)

    # Score every candidate in every view; a view with too few landmarks gives no candidate.
    world = X[None, None] @ R_world.transpose(-1, -2) + t_world[:, :, None]  # [T, Cand, 68, 3]
    cand_uv = _project(world.reshape(T * C, NUM_LANDMARKS, 3), Rc, tc, K).reshape(T, C, C, NUM_LANDMARKS, 2)
    ref = cfg.reference_size / size.max(dim=-1).values  # [C]
    r = ((cand_uv - lmk[:, None]).norm(dim=-1) * ref[None, None, :, None]).clamp(max=50.0)
    cost = (conf[:, None] * r).sum((-1, -2)) / conf.sum((-1, -2)).clamp(min=1e-12)[:, None]
    enough = (conf > 0).sum(-1) >= cfg.min_landmarks  # [T, C]
    cost = torch.where(enough & torch.isfinite(cost), cost, torch.full_like(cost, float("inf")))
    best = cost.argmin(dim=1)
    idx = torch.arange(T, device=device)
    pose = torch.cat([aa[idx, best], t_world[idx, best]], dim=-1)
    has_candidate = enough.any(dim=1)
    return _fill_missing(pose, has_candidate), has_candidate


def _fill_missing(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Rows where ``present`` [T] is False replaced by the nearest present row (ties: the earlier one)."""
    if bool(present.all()):
        return values
    t = torch.arange(values.shape[0], device=values.device)
    have = t[present]
    nearest = have[(t[:, None] - have[None]).abs().argmin(dim=1)]
    return values[nearest]


def _second_diff(x: torch.Tensor) -> torch.Tensor:
    return x[2:] - 2.0 * x[1:-1] + x[:-2]


def _skew(v: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] cross-product matrices of v [..., 3]: _skew(v) @ u = v x u."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape + (3,))


def _vee_antisymmetric(M: torch.Tensor) -> torch.Tensor:
    """[..., 3] axial vector of the antisymmetric part of M [..., 3, 3]: sin(angle) * axis for a rotation."""
    return 0.5 * torch.stack([M[..., 2, 1] - M[..., 1, 2], M[..., 0, 2] - M[..., 2, 0],
                              M[..., 1, 0] - M[..., 0, 1]], dim=-1)


# ------------------------------------------------------------------------------------------------------------
# The objective
# ------------------------------------------------------------------------------------------------------------

class _Problem:
    """The objective over packed unknowns, with the data on the fit's device.

    Per frame ``x`` [T, 22]: rotation delta (axis-angle, applied as ``R0 @ exp(delta)``), translation in units of
    ``init_scale``, 16 expression coefficients. Shared ``y`` [K + 1]: identity code, log(scale / init_scale).
    """

    def __init__(self, model: FaceModel, lmk, conf, K, Rc, tc, size, cfg: FitConfig, R0: torch.Tensor):
        self.model, self.cfg = model, cfg
        self.lmk, self.conf, self.K, self.Rc, self.tc = lmk, conf, K, Rc, tc
        self.ref = (cfg.reference_size / size.max(dim=-1).values)[None, :, None]  # [1, C, 1]
        self.T, self.C = lmk.shape[:2]
        self.num_identity = model.num_identity
        self.R0 = R0  # [T, 3, 3], re-based after every accepted step

    def split(self, x: torch.Tensor, y: torch.Tensor):
        K = self.num_identity
        return x[:, :3], x[:, 3:_POSE_DIM], x[:, _POSE_DIM:], y[:K], y[K:]

    def rotations(self, x: torch.Tensor, R0: Optional[torch.Tensor] = None) -> torch.Tensor:
        return (self.R0 if R0 is None else R0) @ axis_angle_to_matrix(x[:, :3])

    def landmarks_world(self, x: torch.Tensor, y: torch.Tensor, R0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[t, 68, 3] world landmarks of the frames in ``x`` [t, 22] (``R0`` [t, 3, 3]: their base rotations)."""
        _, trans_units, exp, identity, log_scale = self.split(x, y)
        scale = self.cfg.init_scale * torch.exp(log_scale)
        canon = self.model.landmarks(identity, exp)
        # Translation is optimised in units of the head's scale, so one unit moves the landmarks about as much
        # as one radian of rotation does.
        return (scale * canon) @ self.rotations(x, R0).transpose(-1, -2) \
            + (trans_units * self.cfg.init_scale)[:, None, :]

    def pixel_errors(self, x, y, frames=slice(None)) -> torch.Tensor:
        """Projected minus observed landmarks [t, C, 68, 2], pixels at the reference size."""
        world = self.landmarks_world(x, y, self.R0[frames])
        uv = _project(world, self.Rc, self.tc, self.K)
        return (uv - self.lmk[frames]) * self.ref[..., None]

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        _, trans_units, exp, identity, log_scale = self.split(x, y)
        r = (self.pixel_errors(x, y).square().sum(-1) + 1e-12).sqrt()  # [T, C, 68]
        d = cfg.huber_px
        huber = torch.where(r < d, 0.5 * r * r, d * (r - 0.5 * d))
        total = (self.conf * huber).sum()
        if self.T >= 3:
            R = self.rotations(x)
            # Angular velocity between consecutive frames in the earlier frame's axes; its change is the
            # acceleration penalised (a steady turn costs nothing, whatever the world frame of the cameras).
            velocity = _vee_antisymmetric(R[:-1].transpose(-1, -2) @ R[1:])
            total = total + cfg.smooth_rotation * (velocity[1:] - velocity[:-1]).square().sum()
            total = total + cfg.smooth_translation * _second_diff(trans_units).square().sum()
            total = total + cfg.smooth_expression * _second_diff(exp).square().sum()
        total = total + cfg.expression_prior * exp.square().sum()
        total = total + cfg.identity_prior * identity.square().sum()
        total = total + cfg.scale_prior * log_scale.square().sum()
        return total

    def rebase(self, x: torch.Tensor) -> torch.Tensor:
        """Fold the rotation deltas into ``R0``; returns ``x`` with zero deltas."""
        self.R0 = self.rotations(x)
        x = x.clone()
        x[:, :3] = 0.0
        return x

    # -- Gauss-Newton -------------------------------------------------------------------------------------------

    def _data_blocks(self, x, y, free_x: List[int], free_y: List[int]):
        """Gauss-Newton blocks of the landmark term at (x, y): per frame A [T, 22, 22], the cross terms of each
        frame with the shared variables B [T, 22, K + 1] and the shared block D [K + 1, K + 1]; zero outside the
        free variables. Needs zero rotation deltas in ``x`` (``rebase`` first).

        With J_w the Jacobian of a world landmark and P that of its weighted projection into camera c, the block
        is sum_l J_w^T (sum_c P^T P) J_w: the 3 x 3 inner sums are formed first, so the cost does not grow with
        the number of cameras. J_w is analytic for pose and scale and comes from forward differences of the face
        model for expression and identity (batched plain evaluations: several times cheaper than forward-mode
        differentiation through the model, and H only steers the steps; the gradient is exact)."""
        nx, ny = x.shape[1], y.shape[0]
        A = torch.zeros(self.T, nx, nx, dtype=x.dtype, device=x.device)
        B = torch.zeros(self.T, nx, ny, dtype=x.dtype, device=x.device)
        D = torch.zeros(ny, ny, dtype=x.dtype, device=x.device)
        if not free_x and not free_y:
            return A, B, D
        if bool((x[:, :3] != 0).any()):
            raise RuntimeError("_data_blocks needs zero rotation deltas (rebase first)")
        ix = torch.tensor(free_x, dtype=torch.long, device=x.device)
        iy = torch.tensor(free_y, dtype=torch.long, device=x.device)
        n = len(free_x)
        columns = nx + ny
        chunk = max(1, _JACOBIAN_ELEMENTS // ((self.model.exp_dim + ny + columns) * NUM_LANDMARKS * 3
                                              + self.C * NUM_LANDMARKS * 9))
        need_exp = any(j >= _POSE_DIM for j in free_x)
        need_identity = any(j < self.num_identity for j in free_y)
        for start in range(0, self.T, chunk):
            frames = slice(start, min(start + chunk, self.T))
            Jw, world = self._world_jacobian(x[frames], y, self.R0[frames], need_exp, need_identity)
            G = self._projection_curvature(world, frames)  # [t, 68, 3, 3]
            Jf = torch.cat([Jw[..., :nx][..., ix], Jw[..., nx:][..., iy]], dim=-1)
            JtJ = torch.einsum("tlaf,tlab,tlbg->tfg", Jf, G, Jf)  # [t, free, free]
            A[frames, ix[:, None], ix[None, :]] = JtJ[:, :n, :n]
            B[frames, ix[:, None], iy[None, :]] = JtJ[:, :n, n:]
            D[iy[:, None], iy[None, :]] += JtJ[:, n:, n:].sum(0)
        return A, B, D

    def _world_jacobian(self, x, y, R0, need_exp: bool = True,
                        need_identity: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """Jacobian [t, 68, 3, 22 + K + 1] of the world landmarks of frames ``x`` [t, 22] (zero rotation deltas,
        base rotations R0 [t, 3, 3]) with respect to (x, y), and the landmarks [t, 68, 3]. The expression and
        identity columns are forward differences (zero unless ``need_exp`` / ``need_identity``)."""
        _, trans_units, exp, identity, log_scale = self.split(x, y)
        t, E, K = x.shape[0], exp.shape[1], identity.shape[0]
        scale = self.cfg.init_scale * torch.exp(log_scale)
        h = _DIFFERENCE_STEP
        canon = self.model.landmarks(identity, exp)  # [t, 68, 3]
        d_exp = canon.new_zeros(t, NUM_LANDMARKS, 3, E)
        d_id = canon.new_zeros(t, NUM_LANDMARKS, 3, K)
        if need_exp:
            # Forward differences: at a coefficient's lower bound 0 (where the fit starts) they see the side the
            # clamped blink interpolation moves on.
            shifted = (exp[None] + h * torch.eye(E, dtype=x.dtype, device=x.device)[:, None]).reshape(-1, E)
            moved = self.model.landmarks(identity, shifted).reshape(E, t, NUM_LANDMARKS, 3)
            d_exp = ((moved - canon) / h).permute(1, 2, 3, 0)
        if need_identity:
            codes = identity[None] + h * torch.eye(K, dtype=x.dtype, device=x.device)
            moved = torch.func.vmap(lambda code: self.model.landmarks(code, exp))(codes)  # [K, t, 68, 3]
            d_id = ((moved - canon) / h).permute(1, 2, 3, 0)
        sR = scale * R0  # [t, 3, 3]
        posed = canon @ sR.transpose(-1, -2)  # [t, 68, 3] world minus translation
        world = posed + (trans_units * self.cfg.init_scale)[:, None, :]
        # d/d delta of s R0 exp(delta) p at delta = 0 is s R0 (delta x p) = -s R0 [p]x delta.
        d_rot = -sR[:, None] @ _skew(canon)  # [t, 68, 3, 3]
        d_trans = (self.cfg.init_scale * torch.eye(3, dtype=x.dtype, device=x.device)).expand(t, NUM_LANDMARKS, 3, 3)
        d_exp = sR[:, None] @ d_exp
        d_id = sR[:, None] @ d_id
        d_log_scale = posed[..., None]
        return torch.cat([d_rot, d_trans, d_exp, d_id, d_log_scale], dim=-1), world

    def _projection_curvature(self, world: torch.Tensor, frames: slice) -> torch.Tensor:
        """sum_c w P^T P [t, 68, 3, 3] for world landmarks [t, 68, 3]: P [2, 3] is the Jacobian of the landmark's
        pixel position (at the reference size) in camera c with respect to its world position, w the landmark's
        confidence times its Huber (IRLS) weight: 1 in the quadratic zone, huber_px / distance beyond."""
        cam = torch.einsum("cij,tnj->tcni", self.Rc, world) + self.tc[None, :, None, :]
        z = cam[..., 2].clamp(min=1e-3)
        in_front = (cam[..., 2] > 1e-3).to(world.dtype)  # _project's depth floor has no depth derivative
        fx, s, fy = (self.K[None, :, None, i, j] for i, j in ((0, 0), (0, 1), (1, 1)))
        x, y = cam[..., 0] / z, cam[..., 1] / z
        zero = torch.zeros_like(z)
        du = torch.stack([fx / z, s / z, -(fx * x + s * y) / z * in_front], dim=-1)
        dv = torch.stack([zero, fy / z, -fy * y / z * in_front], dim=-1)
        P = torch.stack([du, dv], dim=-2) * self.ref[..., None, None]  # [t, C, 68, 2, 3] camera axes
        P = P @ self.Rc[None, :, None]  # world axes
        uv = torch.stack([fx * x + s * y + self.K[None, :, None, 0, 2], fy * y + self.K[None, :, None, 1, 2]], -1)
        r = ((uv - self.lmk[frames]) * self.ref[..., None]).norm(dim=-1)
        w = self.conf[frames] * (self.cfg.huber_px / r.clamp(min=1e-12)).clamp(max=1.0)
        return torch.einsum("tcn,tcnia,tcnib->tnab", w, P, P)

    def normal_equations(self, x, y, free_x: List[int], free_y: List[int]):
        """The Gauss-Newton matrix H of the whole objective at (x, y) for the variables a stage optimises.

        H couples a frame with its shared variables (identity, scale) through the landmarks and with the frames up
        to two steps away through the smoothness terms (second differences), so it is a block-banded matrix with an
        arrow: ``A`` (per frame [T, 22, 22]), the smoothness bands (``band1`` [T - 1] and ``band2`` [T - 2] times
        ``smooth_diag`` [22], the curvature per variable), ``B`` [T, 22, K + 1] and ``D`` [K + 1, K + 1]. The
        rotation smoothness is linearised as a second difference of the rotation deltas (exact for small
        frame-to-frame rotations).

        Returns:
            (A, band1, band2, smooth_diag, B, D).
        """
        cfg, T = self.cfg, self.T
        A, B, D = self._data_blocks(x, y, free_x, free_y)
        nx, ny = A.shape[-1], D.shape[-1]
        main, band1, band2 = _second_diff_bands(T, x.dtype, x.device)
        smooth_diag = torch.zeros(nx, dtype=x.dtype, device=x.device)
        smooth_diag[:3] = 2.0 * cfg.smooth_rotation
        smooth_diag[3:_POSE_DIM] = 2.0 * cfg.smooth_translation
        smooth_diag[_POSE_DIM:] = 2.0 * cfg.smooth_expression
        diag_x = main[:, None] * smooth_diag
        diag_x[:, _POSE_DIM:] += 2.0 * cfg.expression_prior
        diag_y = torch.full((ny,), 2.0 * cfg.identity_prior, dtype=x.dtype, device=x.device)
        diag_y[-1] = 2.0 * cfg.scale_prior
        return A + torch.diag_embed(diag_x), band1, band2, smooth_diag, B, D + torch.diag(diag_y)

    def gauss_newton_step(self, gx, gy, mx: torch.Tensor, my: torch.Tensor, damping: float, system):
        """Levenberg-Marquardt step (dx [T, 22], dy [K + 1]) solving (H + damping diag(H)) d = -g over the free
        variables for the gradient (gx, gy) and the ``system`` of ``normal_equations``.

        Args:
            mx: [T, 22] 1 where a frame's variable may move, 0 where it is held (another stage's variable, or an
                expression coefficient pressed against its bound).
            my: [K + 1] the same for the shared variables.
        """
        A, band1, band2, smooth_diag, B, D = system
        # Held variables: rows and columns cleared, unit diagonal, zero right-hand side, so they stay put.
        A = A * (mx[:, :, None] * mx[:, None, :])
        B = B * (mx[:, :, None] * my[None, None, :])
        D = D * (my[:, None] * my[None, :])
        off1 = band1[:, None] * smooth_diag * mx[:-1] * mx[1:]
        off2 = band2[:, None] * smooth_diag * mx[:-2] * mx[2:]
        # Marquardt damping scales with each variable's own curvature (their units differ by orders of magnitude);
        # a tiny floor keeps a variable that nothing constrains in some frame finite.
        dA = A.diagonal(dim1=-2, dim2=-1)
        floor = 1e-9 * dA.mean(0, keepdim=True) + 1e-12
        A = A + torch.diag_embed((damping * dA + floor) * mx + (1.0 - mx))
        dD = D.diagonal()
        D = D + torch.diag((damping * dD + 1e-9 * dD + 1e-12) * my + (1.0 - my))
        rhs_x, rhs_y = -gx * mx, -gy * my
        # Schur complement on the shared variables: E = A^-1 B, a = A^-1 rhs_x, (D - B^T E) dy = rhs_y - B^T a.
        sol = _banded_solve(A, off1, off2, torch.cat([rhs_x[..., None], B], dim=-1))
        a, E = sol[..., 0], sol[..., 1:]
        S = D - torch.einsum("tij,tik->jk", B, E)
        S = 0.5 * (S + S.T)
        dy = torch.cholesky_solve((rhs_y - torch.einsum("tij,ti->j", B, a))[:, None],
                                  torch.linalg.cholesky(S))[:, 0] * my
        dx = (a - (E @ dy[:, None])[..., 0]) * mx
        return dx, dy


def _mask(n: int, free: List[int], device) -> torch.Tensor:
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    if free:
        mask[torch.tensor(free, device=device)] = True
    return mask


def _second_diff_bands(T: int, dtype, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three bands of D^T D for the second-difference operator D [T - 2, T]: main [T], first off-diagonal
    [T - 1], second [T - 2] (all zero for T < 3)."""
    bands = [torch.zeros(max(T - o, 0), dtype=dtype, device=device) for o in range(3)]
    coeff = (1.0, -2.0, 1.0)
    if T >= 3:
        # Row k of D holds coeff at columns k, k + 1, k + 2: it adds coeff[i] * coeff[j] at (k + i, k + j).
        for i in range(3):
            for j in range(i, 3):
                bands[j - i][i: T - 2 + i] += coeff[i] * coeff[j]
    return bands[0], bands[1], bands[2]


def _banded_solve(A: torch.Tensor, off1: torch.Tensor, off2: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve H u = rhs for the symmetric positive definite block-banded H with diagonal blocks A [T, n, n] and
    diagonal off-diagonal blocks H[t+1, t] = diag(off1[t]), H[t+2, t] = diag(off2[t]) (off1 [T-1, n], off2 [T-2, n]).

    Pairs of frames make H block-tridiagonal (blocks of 2n), which block cyclic reduction solves in
    O(log T) batched steps: no loop over frames, so long sequences and GPUs cost few kernel launches.

    Args:
        rhs: [T, n, r].
    Returns:
        [T, n, r].
    """
    T, n, r = rhs.shape
    if T % 2:
        # A dummy frame (unit diagonal, no coupling, zero right-hand side) makes the frame count even.
        A = torch.cat([A, torch.eye(n, dtype=A.dtype, device=A.device)[None]])
        off1 = torch.cat([off1, off1.new_zeros(1, n)])
        off2 = torch.cat([off2, off2.new_zeros(1, n)])
        rhs = torch.cat([rhs, rhs.new_zeros(1, n, r)])
    S = A.shape[0] // 2
    blocks = A.new_zeros(S, 2 * n, 2 * n)
    blocks[:, :n, :n] = A[0::2]
    blocks[:, n:, n:] = A[1::2]
    inner = torch.diag_embed(off1[0::2])  # frames 2s and 2s + 1
    blocks[:, n:, :n] = inner
    blocks[:, :n, n:] = inner
    upper = A.new_zeros(max(S - 1, 0), 2 * n, 2 * n)  # rows: frames 2s, 2s + 1; columns: frames 2s + 2, 2s + 3
    if S > 1:
        upper[:, :n, :n] = torch.diag_embed(off2[0:2 * S - 2:2])
        upper[:, n:, :n] = torch.diag_embed(off1[1:2 * S - 2:2])
        upper[:, n:, n:] = torch.diag_embed(off2[1:2 * S - 2:2])
    u = _block_tridiagonal_solve(blocks, upper, rhs.reshape(S, 2 * n, r))
    return u.reshape(2 * S, n, r)[:T]


def _block_tridiagonal_solve(D: torch.Tensor, U: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve the symmetric positive definite block-tridiagonal system with diagonal blocks D [S, m, m] and
    super-diagonal blocks U [S - 1, m, m] (row i, column i + 1; the sub-diagonal is U^T) for b [S, m, r].

    Odd-even (cyclic) reduction: the odd rows are eliminated, which leaves a block-tridiagonal system of the same
    kind (Schur complements of a positive definite matrix) over the even rows, solved recursively; the odd rows
    are then recovered from their neighbours."""
    S, m = D.shape[0], D.shape[-1]
    if S == 1:
        return torch.cholesky_solve(b, torch.linalg.cholesky(D))
    zero = D.new_zeros(1, m, m)
    lower_full = torch.cat([zero, U.transpose(-1, -2)])  # L_i = U_{i-1}^T couples row i to row i - 1
    upper_full = torch.cat([U, zero])
    odd, even = slice(1, None, 2), slice(0, None, 2)
    n_odd, n_even = S // 2, (S + 1) // 2
    sol = torch.cholesky_solve(torch.cat([lower_full[odd], upper_full[odd], b[odd]], dim=-1),
                               torch.linalg.cholesky(D[odd]))
    inv_l, inv_u, inv_b = sol[..., :m], sol[..., m:2 * m], sol[..., 2 * m:]

    def left(z):  # even row k's left neighbour is odd row k - 1 (none for k = 0)
        return torch.cat([torch.zeros_like(z[:1]), z])[:n_even]

    def right(z):  # even row k's right neighbour is odd row k (none past the last odd row)
        return torch.cat([z, torch.zeros_like(z[:1]).expand(n_even - n_odd, *z.shape[1:])])

    le, ue = lower_full[even], upper_full[even]
    D2 = D[even] - le @ left(inv_u) - ue @ right(inv_l)
    D2 = 0.5 * (D2 + D2.transpose(-1, -2))
    b2 = b[even] - le @ left(inv_b) - ue @ right(inv_b)
    U2 = -(ue @ right(inv_u))[: n_even - 1]
    x_even = _block_tridiagonal_solve(D2, U2, b2)
    # Odd row k sits between even rows k and k + 1.
    x_right = torch.cat([x_even[1:], torch.zeros_like(x_even[:1])])[:n_odd]
    x_odd = inv_b - inv_l @ x_even[:n_odd] - inv_u @ x_right
    x = b.new_empty(S, m, b.shape[-1])
    x[even] = x_even
    x[odd] = x_odd
    return x


def _gradient(problem: _Problem, x, y) -> Tuple[torch.Tensor, torch.Tensor, float]:
    xg, yg = x.detach().requires_grad_(True), y.detach().requires_grad_(True)
    loss = problem.loss(xg, yg)
    gx, gy = torch.autograd.grad(loss, (xg, yg))
    return gx, gy, float(loss.detach())


def _run_stage(problem: _Problem, x, y, free_x: List[int], free_y: List[int], iterations: int,
               cfg: FitConfig) -> Tuple[torch.Tensor, torch.Tensor, float, int]:
    """Projected Levenberg-Marquardt over the free variables, expression coefficients kept in [0, 1]; returns x, y,
    the final objective and the number of Gauss-Newton systems built.

    A coefficient at a bound whose gradient points outward is held for the iteration (the active set of projected
    Newton methods); steps are projected onto the bounds before they are tried."""
    stage_x = _mask(x.shape[1], free_x, x.device).to(x.dtype)
    my = _mask(y.shape[0], free_y, y.device).to(y.dtype)
    damping = 1e-4
    gx, gy, current = _gradient(problem, x, y)
    built = 0
    for _ in range(iterations):
        exp, g_exp = x[:, _POSE_DIM:], gx[:, _POSE_DIM:]
        pressed = ((exp <= _EXP_LOW) & (g_exp > 0)) | ((exp >= _EXP_HIGH) & (g_exp < 0))
        mx = stage_x.expand_as(x).clone()
        mx[:, _POSE_DIM:] *= (~pressed).to(x.dtype)
        system = problem.normal_equations(x, y, free_x, free_y)
        built += 1
        improved = False
        while damping <= 1e8:
            dx, dy = problem.gauss_newton_step(gx, gy, mx, my, damping, system)
            x_try, y_try = x + dx, y + dy
            x_try[:, _POSE_DIM:] = x_try[:, _POSE_DIM:].clamp(_EXP_LOW, _EXP_HIGH)
            with torch.no_grad():
                trial = float(problem.loss(x_try, y_try))
            if math.isfinite(trial) and trial < current:
                improved = True
                break
            damping *= 10.0
        if not improved:
            break  # no descent even with heavy damping: converged to the precision of the objective
        previous = current
        x, y = problem.rebase(x_try), y_try
        damping = max(damping * 0.3, 1e-9)
        gx, gy, current = _gradient(problem, x, y)
        if previous - current <= cfg.tolerance * max(abs(previous), 1e-12):
            break
    return x, y, current, built


# ------------------------------------------------------------------------------------------------------------
# The fit
# ------------------------------------------------------------------------------------------------------------

def fit_landmarks(
    model: FaceModel,
    landmarks,
    confidence,
    Ks,
    viewmats,
    image_size: Union[Sequence[float], torch.Tensor],
    init_pose=None,
    config: Optional[FitConfig] = None,
    device: Union[str, torch.device] = "cpu",
) -> FitResult:
    """Fit pose, expression, identity and scale to 2D landmarks of T frames seen by C cameras.

    Args:
        model: the face model (moved to ``device`` in float32 for the fit; the caller's copy is not changed).
        landmarks: [T, C, 68, 2] iBUG-68 landmarks in pixels (pixel (u, v) has its centre at (u + 0.5, v + 0.5));
            any value (NaN included) where the confidence is 0.
        confidence: [T, C, 68] weights >= 0; 0 marks a landmark, a camera or a frame without detection.
        Ks: [C, 3, 3] intrinsics in pixels of each camera's image.
        viewmats: [C, 4, 4] or [C, 3, 4] world-to-camera extrinsics (OpenCV axes).
        image_size: (width, height) of every image, or [C, 2] per camera (residuals are normalised by it).
        init_pose: optional [T, 6] initial pose (axis-angle + translation); default: the affine-camera estimate.
        config: weights and schedule (``FitConfig()``).
        device: where the fit runs.
    Returns:
        FitResult (tensors on ``device``).
    Raises:
        TypeError: ``model`` is not a FaceModel.
        ValueError: a malformed argument (named in the message), or no frame with ``min_landmarks`` visible
            landmarks.
    """
    if not isinstance(model, FaceModel):
        raise TypeError(f"model must be a FaceModel, got {type(model).__name__}")
    cfg = FitConfig() if config is None else config
    if not isinstance(cfg, FitConfig):
        raise TypeError(f"config must be a FitConfig, got {type(cfg).__name__}")
    device = torch.empty(0, device=device).device
    # The fit runs in float64: the objective sums T x C x 68 terms and its stopping test compares relative
    # changes far below float32's resolution; the problem is small, so this costs little even on a GPU.
    dtype = torch.float64
    lmk, conf, K, Rc, tc, size, pose0 = _check_inputs(landmarks, confidence, Ks, viewmats, image_size, init_pose,
                                                      device, dtype)
    T, C = lmk.shape[:2]
    observed = (conf > 0).sum((1, 2)) >= cfg.min_landmarks
    if not bool(observed.any()):
        raise ValueError(f"confidence: no frame has {cfg.min_landmarks} or more visible landmarks")
    model = model.to(device=device, dtype=dtype)
    seen_by = ((conf > 0).sum(-1) >= cfg.min_landmarks).sum(1)  # [T] cameras seeing each frame
    fit_scale = bool((seen_by >= 2).any()) if cfg.fit_scale is None else bool(cfg.fit_scale)

    if pose0 is None:
        pose0, has_candidate = _initial_pose(model, lmk, conf, K, Rc, tc, size, cfg)
        if not bool(has_candidate.any()):
            raise ValueError(f"confidence: no camera sees {cfg.min_landmarks} or more landmarks of any frame, "
                             "so no initial pose can be estimated (pass init_pose)")
    problem = _Problem(model, lmk, conf, K, Rc, tc, size, cfg, axis_angle_to_matrix(pose0[:, :3]))
    nx = _POSE_DIM + model.exp_dim
    x = torch.zeros(T, nx, dtype=dtype, device=device)
    x[:, 3:_POSE_DIM] = pose0[:, 3:] / cfg.init_scale
    y = torch.zeros(model.num_identity + 1, dtype=dtype, device=device)

    pose_vars = list(range(_POSE_DIM))
    scale_var = [model.num_identity] if fit_scale else []
    identity_vars = list(range(model.num_identity)) if cfg.fit_identity else []
    losses, iterations = {}, {}
    with torch.no_grad():
        losses["init"] = float(problem.loss(x, y))
    x, y, losses["rigid"], iterations["rigid"] = _run_stage(problem, x, y, pose_vars, scale_var,
                                                            cfg.rigid_iterations, cfg)
    x, y, losses["joint"], iterations["joint"] = _run_stage(problem, x, y, list(range(nx)),
                                                            identity_vars + scale_var, cfg.joint_iterations, cfg)

    with torch.no_grad():
        _, trans_units, exp, identity, log_scale = problem.split(x, y)
        scale = cfg.init_scale * torch.exp(log_scale[0])
        world = problem.landmarks_world(x, y)
        uv = _project(world, Rc, tc, K)
        residuals, cam_err, frame_err = reprojection_errors(uv, lmk, conf > 0, observed)
        aa = matrix_to_axis_angle(problem.rotations(x))
        pose = torch.cat([aa, trans_units * cfg.init_scale], dim=-1)
    f32 = torch.float32
    return FitResult(
        pose=pose.to(f32), exp=exp.to(f32), identity=identity.to(f32), scale=scale.to(f32),
        landmarks_3d=world.to(f32), residuals_px=residuals.to(f32), camera_reprojection_px=cam_err.to(f32),
        reprojection_px=frame_err.to(f32), observed=observed, scale_fitted=fit_scale, losses=losses,
        iterations=iterations,
    )
