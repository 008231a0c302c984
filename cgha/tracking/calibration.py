"""Calibration of the landmark definitions: where MediaPipe puts the 68 iBUG points on a face, relative to where the
face model has them.

MediaPipe's face mesh and our face model (the synthetic head's landmarks) define several iBUG points differently:
MediaPipe's jaw points are vertices of its face oval, its brows the upper brow edge of its own mesh, its nostril
base higher; measured on 512^2 renders the two differ by 8-12 px on the jaw, brows and nose. Fitted as they are,
these differences bias the head's pitch by 5-9 degrees (docs/tracking.md). The calibration is one fixed offset per
landmark, in the face model's canonical space (``FaceModel.with_landmark_offset``): the offset is added to the
neutral landmark, deforms with the expression and is posed with the head, so it projects correctly into any view
and any head pose, and the fit then explains MediaPipe's points with MediaPipe's definitions.

It is estimated on synthetic renders whose truth is known (``estimate_landmark_offset``): for every view the true
head pose, scale, expression and the generator's canonical landmarks, and MediaPipe's detections; per landmark,
the 3-vector that best moves the true landmark onto the detections in all views (robust Gauss-Newton on the
reprojection, in pixels of a 512 px image). What the offsets leave is each landmark's scatter (``sigma_px``: MediaPipe
places the jaw line about three times less consistently than the eye corners); the fit weighs each landmark by its
inverse variance (``LandmarkCalibration.weights``), the maximum-likelihood weighting for independent Gaussian
scatter. ``benchmarks/tracking_calibration.py`` renders the views (identities
other than the ones evaluated) and writes the shipped file ``data/mediapipe_calibration.npz``, which
``load_calibration`` reads without pickle and checks.
"""
from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from cgha.synthetic.head_model import apply_pose
from cgha.synthetic.landmarks import NUM_LANDMARKS
from cgha.utils.atomic import atomic_output
from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix

from .face_model import FACE_MODEL_NAME, FaceModel
from .view_calibration import NUM_FEATURES, camera_centres, directions_in_head_frame, view_features

__all__ = ["CALIBRATION_FORMAT", "CALIBRATION_VERSION", "DEFAULT_CALIBRATION_PATH", "LandmarkCalibration",
           "CalibrationViews", "load_calibration", "save_calibration", "estimate_landmark_offset",
           "calibrated_landmarks", "landmark_errors_px", "scatter_px", "estimate_view_coefficients", "view_offsets"]

CALIBRATION_FORMAT = "cgha.tracking.landmark-calibration"
CALIBRATION_VERSION = 2  # 2: optional view-dependent offsets (``view_coefficients``); version 1 files still load
READABLE_VERSIONS = (1, 2)
DEFAULT_CALIBRATION_PATH = Path(__file__).resolve().parent / "data" / "mediapipe_calibration.npz"
REFERENCE_SIZE = 512.0  # residuals and statistics are in pixels of an image this large (its longer side)


@dataclasses.dataclass(frozen=True)
class LandmarkCalibration:
    """A per-landmark offset from the face model's landmark definitions to a landmarker's.

    Attributes:
        offset: [68, 3] float32, canonical units (the head's radius is about 1), added to the neutral landmarks.
        sigma_px: [68] float32, scatter of the detections around the offset landmarks (px at 512, per coordinate:
            the median distance / 1.1774, which is sigma for a 2D Gaussian), over the calibration views.
        landmarker: what was calibrated, e.g. ``mediapipe==0.10.14 face_mesh``.
        mapping: [68] int64 face-mesh vertex of each iBUG point (``landmarker.IBUG68_FROM_MEDIAPIPE``) the offsets
            were estimated for; another mapping needs another calibration.
        face_model: the face model's name (``FACE_MODEL_NAME``).
        identities: [N] int64 synthetic identities the offsets were estimated on.
        info: JSON-serialisable details (views, poses, per-landmark residuals before / after, the command).
        view_coefficients: [68, 6, 3] float32 or None: the view-dependent offset o_l(d) = sum_k phi_k(d) B_lk
            (``cgha.tracking.view_calibration``), estimated on the same views; None in version 1 files.
    """

    offset: np.ndarray
    sigma_px: np.ndarray
    landmarker: str
    mapping: np.ndarray
    face_model: str
    identities: np.ndarray
    info: Dict[str, object]
    view_coefficients: Optional[np.ndarray] = None

    def weights(self) -> np.ndarray:
        """[68] float32 landmark weights for the fit: 1 / sigma_px^2, scaled to a mean of 1 (the landmark term
        keeps its overall weight against the fit's priors)."""
        w = 1.0 / np.square(self.sigma_px.astype(np.float64))
        return (w / w.mean()).astype(np.float32)


@dataclasses.dataclass
class CalibrationViews:
    """N views of synthetic heads with known truth and the landmarker's detections (one face per view).

    Attributes:
        points: [N, 68, 2] detected iBUG-68 points, pixels of the view's image.
        canonical: [N, 68, 3] the true expressed landmarks in canonical space (the generator's).
        exp: [N, 16] true expression coefficients.
        pose: [N, 6] true head pose (axis-angle + translation).
        scale: [N] true head scale.
        Ks: [N, 3, 3] intrinsics, pixels of the view's image.
        viewmats: [N, 4, 4] world-to-camera.
        image_size: [N] longer side of the view's image (pixels).
        identity: [N] synthetic identity of each view.
    """

    points: np.ndarray
    canonical: np.ndarray
    exp: np.ndarray
    pose: np.ndarray
    scale: np.ndarray
    Ks: np.ndarray
    viewmats: np.ndarray
    image_size: np.ndarray
    identity: np.ndarray

    def __len__(self) -> int:
        return int(self.points.shape[0])

    @staticmethod
    def concatenate(parts) -> "CalibrationViews":
        fields = [f.name for f in dataclasses.fields(CalibrationViews)]
        return CalibrationViews(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in fields})

    def arrays(self) -> Dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


# ------------------------------------------------------------------------------------------------------------
# The file
# ------------------------------------------------------------------------------------------------------------

def save_calibration(calibration: LandmarkCalibration, path) -> Path:
    """Write ``calibration`` as an .npz of plain arrays (strings as unicode arrays, ``info`` as JSON text),
    atomically."""
    path = Path(path)
    arrays = {
        "format": np.array(CALIBRATION_FORMAT), "version": np.array(CALIBRATION_VERSION, dtype=np.int64),
        "offset": np.asarray(calibration.offset, dtype=np.float32),
        "sigma_px": np.asarray(calibration.sigma_px, dtype=np.float32),
        "landmarker": np.array(calibration.landmarker), "mapping": np.asarray(calibration.mapping, dtype=np.int64),
        "face_model": np.array(calibration.face_model),
        "identities": np.asarray(calibration.identities, dtype=np.int64),
        "info": np.array(json.dumps(calibration.info, sort_keys=True)),
    }
    if calibration.view_coefficients is not None:
        arrays["view_coefficients"] = np.asarray(calibration.view_coefficients, dtype=np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def load_calibration(path=None, mapping: Optional[np.ndarray] = None) -> LandmarkCalibration:
    """Read a calibration file (default: the shipped MediaPipe calibration) without pickle, and check it.

    Args:
        path: the .npz (None: ``DEFAULT_CALIBRATION_PATH``).
        mapping: [68] the iBUG-68 face-mesh vertices in use (None: ``landmarker.IBUG68_FROM_MEDIAPIPE``); a file
            made for another mapping is refused.
    Raises:
        ValueError: naming the file, when it is missing, unreadable, of another format, version or face model,
            inconsistently shaped, or made for another mapping.
    """
    from .landmarker import IBUG68_FROM_MEDIAPIPE

    path = Path(DEFAULT_CALIBRATION_PATH if path is None else path)
    mapping = IBUG68_FROM_MEDIAPIPE if mapping is None else np.asarray(mapping)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"landmark calibration {path}: cannot be read ({type(error).__name__}: {error})") from None
    reason = _invalid_reason(arrays, mapping)
    if reason is not None:
        raise ValueError(f"landmark calibration {path}: {reason}")
    return LandmarkCalibration(
        offset=arrays["offset"].astype(np.float32), sigma_px=arrays["sigma_px"].astype(np.float32),
        landmarker=str(arrays["landmarker"]),
        mapping=arrays["mapping"].astype(np.int64), face_model=str(arrays["face_model"]),
        identities=arrays["identities"].astype(np.int64), info=json.loads(str(arrays["info"])),
        view_coefficients=arrays["view_coefficients"].astype(np.float32) if "view_coefficients" in arrays else None)


def _invalid_reason(arrays: Dict[str, np.ndarray], mapping: np.ndarray) -> Optional[str]:
    """Why arrays read from a calibration file cannot be used (None: they can)."""
    keys = ("format", "version", "offset", "sigma_px", "landmarker", "mapping", "face_model", "identities", "info")
    missing = [k for k in keys if k not in arrays]
    if missing:
        return f"arrays missing: {', '.join(missing)}"
    if str(arrays["format"]) != CALIBRATION_FORMAT:
        return f"format {str(arrays['format'])!r}, expected {CALIBRATION_FORMAT!r}"
    if int(arrays["version"]) not in READABLE_VERSIONS:
        return f"version {int(arrays['version'])}, this code reads versions {', '.join(map(str, READABLE_VERSIONS))}"
    if str(arrays["face_model"]) != FACE_MODEL_NAME:
        return f"made for face model {str(arrays['face_model'])!r}, this is {FACE_MODEL_NAME!r}"
    offset = arrays["offset"]
    if offset.shape != (NUM_LANDMARKS, 3) or not np.issubdtype(offset.dtype, np.floating) \
            or not np.isfinite(offset).all():
        return f"offset must be finite [{NUM_LANDMARKS}, 3] floats, got {offset.shape} {offset.dtype}"
    sigma = arrays["sigma_px"]
    if sigma.shape != (NUM_LANDMARKS,) or not np.issubdtype(sigma.dtype, np.floating) or not np.isfinite(sigma).all() \
            or not (sigma > 0).all():
        return f"sigma_px must be [{NUM_LANDMARKS}] positive floats, got {sigma.shape} {sigma.dtype}"
    if "view_coefficients" in arrays:
        view = arrays["view_coefficients"]
        shape = (NUM_LANDMARKS, NUM_FEATURES, 3)
        if int(arrays["version"]) < 2:
            return "view_coefficients in a version 1 file"
        if view.shape != shape or not np.issubdtype(view.dtype, np.floating) or not np.isfinite(view).all():
            return f"view_coefficients must be finite {list(shape)} floats, got {view.shape} {view.dtype}"
    if arrays["mapping"].shape != (NUM_LANDMARKS,) or not np.array_equal(arrays["mapping"], mapping):
        return "made for another iBUG-68 face-mesh mapping than cgha/tracking/landmarker.py's (recalibrate)"
    try:
        json.loads(str(arrays["info"]))
    except json.JSONDecodeError as error:
        return f"info is not JSON ({error})"
    return None


# ------------------------------------------------------------------------------------------------------------
# Estimation
# ------------------------------------------------------------------------------------------------------------

def calibrated_landmarks(model: FaceModel, canonical, exp, pose, scale, offset) -> torch.Tensor:
    """World landmarks [N, 68, 3] of expressed canonical landmarks ``canonical`` [N, 68, 3] moved by the offset
    ([68, 3], or per view [N, 68, 3]; deformed with ``exp`` [N, 16] as the face model deforms it), posed with
    ``pose`` [N, 6], ``scale`` [N]. ``offset`` None: the landmarks as they are."""
    dtype = torch.float64
    canonical = torch.as_tensor(canonical, dtype=dtype)
    if offset is not None:
        J = model.to(dtype=dtype).landmark_offset_jacobian(torch.as_tensor(exp, dtype=dtype))  # [N, 68, 3, 3]
        offset = torch.as_tensor(offset, dtype=dtype).expand(canonical.shape)
        canonical = canonical + torch.einsum("nlij,nlj->nli", J.cpu(), offset)
    return apply_pose(canonical, torch.as_tensor(pose, dtype=dtype), torch.as_tensor(scale, dtype=dtype))


def view_offsets(views: "CalibrationViews", coefficients) -> np.ndarray:
    """Per-view offsets [N, 68, 3] of the view-dependent calibration ``coefficients`` [68, 6, 3] (the direction
    of each view's camera seen from its true head)."""
    return np.einsum("nk,lkj->nlj", _view_features(views), np.asarray(coefficients, dtype=np.float64))


def _view_features(views: "CalibrationViews") -> np.ndarray:
    """[N, 6] ``view_calibration.view_features`` of the direction of each view's camera seen from its true head."""
    return view_features(directions_in_head_frame(views.pose, camera_centres(views.viewmats)))


def scatter_px(errors: np.ndarray) -> np.ndarray:
    """Per-landmark scatter [68] (px, per coordinate) from distances [N, 68]: the median distance / 1.1774, sigma
    of a 2D Gaussian with that median distance, robust to the few views where a detection went astray."""
    return np.median(errors, axis=0) / math.sqrt(2.0 * math.log(2.0))


def landmark_errors_px(model: FaceModel, views: CalibrationViews, offset=None) -> np.ndarray:
    """Distance [N, 68] between the detected points and the true landmarks (moved by ``offset``, [68, 3] or per
    view [N, 68, 3], when given), in pixels of a 512 px image."""
    world = calibrated_landmarks(model, views.canonical, views.exp, views.pose, views.scale, offset)
    uv, _ = project_points(world, torch.as_tensor(views.viewmats, dtype=torch.float64),
                           torch.as_tensor(views.Ks, dtype=torch.float64))
    ref = REFERENCE_SIZE / torch.as_tensor(views.image_size, dtype=torch.float64)
    return ((uv - torch.as_tensor(views.points, dtype=torch.float64)).norm(dim=-1) * ref[:, None]).numpy()


def _offset_jacobian_px(model: FaceModel, views: CalibrationViews, world: torch.Tensor) -> torch.Tensor:
    """d (pixel at 512) / d (offset) [N, 68, 2, 3] at world landmarks ``world`` [N, 68, 3]."""
    dtype = torch.float64
    V = torch.as_tensor(views.viewmats, dtype=dtype)
    K = torch.as_tensor(views.Ks, dtype=dtype)
    cam = torch.einsum("nij,nlj->nli", V[:, :3, :3], world) + V[:, None, :3, 3]
    x, y, z = cam.unbind(-1)
    fx, fy, s = K[:, None, 0, 0], K[:, None, 1, 1], K[:, None, 0, 1]
    zero = torch.zeros_like(z)
    # d (u, v) / d camera point for u = fx x / z + s y / z + cx, v = fy y / z + cy.
    du = torch.stack([fx / z, s / z, -(fx * x + s * y) / z ** 2], dim=-1)
    dv = torch.stack([zero, fy / z, -fy * y / z ** 2], dim=-1)
    P = torch.stack([du, dv], dim=-2) * (REFERENCE_SIZE / torch.as_tensor(views.image_size, dtype=dtype))[:, None,
                                                                                                        None, None]
    R = axis_angle_to_matrix(torch.as_tensor(views.pose[:, :3], dtype=dtype))  # [N, 3, 3]
    sRc = V[:, :3, :3] @ R * torch.as_tensor(views.scale, dtype=dtype)[:, None, None]
    J = model.to(dtype=dtype).landmark_offset_jacobian(torch.as_tensor(views.exp, dtype=dtype)).cpu()
    return P @ sRc[:, None] @ J  # [N, 68, 2, 3]


def estimate_landmark_offset(model: FaceModel, views: CalibrationViews, huber_px: float = 3.0,
                             prior: float = 100.0, iterations: int = 8) -> np.ndarray:
    """Per-landmark offset [68, 3] (canonical units) that moves the true landmarks onto the detections.

    Minimises, independently for each landmark, sum over views of Huber(|pixel error at 512|) + ``prior`` |offset|^2
    by iteratively reweighted Gauss-Newton (each landmark's system is 3 x 3; the projection is re-linearised every
    iteration). ``huber_px``: Huber transition (px at 512), so a wrong detection or a profile view whose point
    slid along the silhouette weighs less. ``prior`` (px^2 per canonical unit^2) only matters in directions no view
    constrains: a canonical unit is ~150 px at 512 in the synthetic rig, so every view weighs ~10^4 in each direction
    it sees.

    Args:
        model: the face model (only its expression deformation of the landmarks is used: any build).
        views: the calibration views (``CalibrationViews``), truth and detections.
    Returns:
        [68, 3] float64.
    """
    features = np.ones((len(views), 1))
    return _estimate_offsets(model, views, features, huber_px, prior, iterations)[:, 0]


def estimate_view_coefficients(model: FaceModel, views: CalibrationViews, huber_px: float = 3.0,
                               prior: float = 100.0, iterations: int = 8) -> np.ndarray:
    """The view-dependent offset's coefficients B [68, 6, 3]: per landmark, o_l(d) = sum_k phi_k(d) B_lk with
    ``view_calibration.view_features`` of the direction d of each view's camera seen from the head, fitted like
    ``estimate_landmark_offset`` (whose offset is the special case phi = (1))."""
    return _estimate_offsets(model, views, _view_features(views), huber_px, prior, iterations)


def _estimate_offsets(model: FaceModel, views: CalibrationViews, features: np.ndarray, huber_px: float,
                      prior: float, iterations: int) -> np.ndarray:
    """Coefficients [68, K, 3] of per-view offsets sum_k features[n, k] B_lk, by IRLS Gauss-Newton per landmark
    (a 3K x 3K system each)."""
    if len(views) == 0:
        raise ValueError("no calibration views")
    F = torch.as_tensor(features, dtype=torch.float64)  # [N, K]
    K = F.shape[1]
    coefficients = torch.zeros(NUM_LANDMARKS, K, 3, dtype=torch.float64)
    observed = torch.as_tensor(views.points, dtype=torch.float64)
    ref = (REFERENCE_SIZE / torch.as_tensor(views.image_size, dtype=torch.float64))[:, None, None]
    eye = torch.eye(3 * K, dtype=torch.float64)
    for _ in range(iterations):
        offsets = torch.einsum("nk,lkj->nlj", F, coefficients)  # [N, 68, 3]
        world = calibrated_landmarks(model, views.canonical, views.exp, views.pose, views.scale, offsets)
        uv, _ = project_points(world, torch.as_tensor(views.viewmats, dtype=torch.float64),
                               torch.as_tensor(views.Ks, dtype=torch.float64))
        r = (uv - observed) * ref  # [N, 68, 2] px at 512
        dist = r.norm(dim=-1).clamp(min=1e-9)
        w = torch.where(dist < huber_px, torch.ones_like(dist), huber_px / dist)  # IRLS weights of the Huber loss
        G = _offset_jacobian_px(model, views, world)  # [N, 68, 2, 3]
        GF = torch.einsum("nlai,nk->nlaki", G, F).reshape(len(views), NUM_LANDMARKS, 2, 3 * K)
        A = torch.einsum("nl,nlap,nlaq->lpq", w, GF, GF) + prior * eye
        b = torch.einsum("nl,nlap,nla->lp", w, GF, r) + prior * coefficients.reshape(NUM_LANDMARKS, 3 * K)
        step = torch.linalg.solve(A, b[..., None])[..., 0].reshape(NUM_LANDMARKS, K, 3)
        coefficients = coefficients - step
        if float(step.abs().max()) < 1e-7:
            break
    return coefficients.numpy()
