"""Own capture -> subject: landmarks, the face-model fit, and a subject folder in our dataset layout (issue 17).

    result = track_video("me.mp4", "data/me", TrackOptions())                        # one camera
    result = track_images("frames/", "cams.json", "data/rig", TrackOptions())        # calibrated multi-view

Steps (docs/tracking.md has the reasons behind each choice):

1. **Inputs** are opened and checked before anything is computed (``cgha.tracking.inputs``): a video, or a folder
   ``DIR/<frame>/<camera>.{jpg,jpeg,png}`` with a camera file (``read_cameras_json``) that must name exactly the
   cameras found in every frame folder. Every error names the file.
2. **Landmarks**: MediaPipe's face mesh on every raw image (``cgha.tracking.landmarker``), mapped to iBUG-68.
3. **Crop**: one fixed square per camera for the whole sequence, resized to ``resolution``. ``face`` (a video's
   default): around the robust bounds of that camera's landmarks over all frames, times ``crop_scale``, kept inside
   the frame. ``full`` (calibrated images' default): the centred square of the shorter side, as
   preprocess_nersemble.py crops. A fixed crop keeps each camera's intrinsics constant over time, which the training
   stages assume (they read one camera per view and let the head move), and avoids per-frame zoom jitter.
4. **Fit** (``cgha.tracking.fitting.fit_landmarks``) in the cropped images' pixels: per-frame pose and expression,
   one identity and scale. The face model's landmarks are moved onto MediaPipe's landmark definitions by the
   shipped calibration (``cgha.tracking.calibration``; ``TrackOptions.calibration``) for the fit, and each landmark
   weighs by the inverse variance of MediaPipe's scatter around it; the 3D landmarks written stay the face model's
   own (on its surface, the definitions of the synthetic subjects). Monocular: intrinsics from a field of view
   (``fov_deg`` across the longer side of the raw frame, principal point at its centre) and a camera fixed one unit
   in front of the world origin looking at it; after the fit the world is shifted so that the head's mean position
   is the origin (the camera then looks at the head from the fitted distance). Multi-view: the given calibration's world.
5. **Drop**: frames without a face in any camera, and frames whose fit reprojects worse than
   ``max_reprojection_px`` (a wrong detection), are dropped with a warning naming them; fewer than
   ``min_face_fraction`` of the frames left is an error naming the input.
6. **Write** (``cgha.tracking.subject_writer``) into a hidden folder renamed into place at the end
   (``cgha.utils.atomic.write_directory_atomic``): images, masks (MediaPipe selfie segmentation, or background
   subtraction against plates), cameras, params, 3D landmarks, vertices, ``faces.npy``, ``preview.jpg``,
   ``tracking.json`` and ``meta.json`` (expression basis and splits).
"""
from __future__ import annotations

import dataclasses
import logging
import re
import time
import typing
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from cgha.errors import DataError, UserError
from cgha.preprocess.crop import SquareCrop, centred_square_crop, crop_resize, crop_resize_intrinsics
from cgha.preprocess.files import write_jpeg
from cgha.preprocess.masks import MaskParams, subtract_background
from cgha.synthetic.expression import EXP_DIM, EXPRESSION_MODEL, EXPRESSION_NAMES
from cgha.utils.atomic import write_directory_atomic
from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix

from . import subject_writer as sw
from .accuracy import rounded
# REFERENCE_SIZE: pixel thresholds and reported errors are also given at this image side.
from .calibration import DEFAULT_CALIBRATION_PATH, REFERENCE_SIZE, LandmarkCalibration, load_calibration
from .face_model import DEFAULT_NUM_COMPONENTS, DEFAULT_NUM_SAMPLES, FACE_MODEL_NAME, FaceModel
from .fitting import FitConfig, fit_landmarks, project_landmarks, reprojection_errors
from .head_region import head_region_mask, neck_base_ring
from .inputs import (IMAGE_SUFFIXES, MONOCULAR_CAMERA, Camera, ImageSetSource, VideoSource, read_cameras_json,
                     read_image)
from .mask_edges import refine_mask_edges
from .photometric import PhotometricConfig, face_region_faces, prepare_views, refine_photometric
from .view_calibration import detection_shift_px
from .view_weights import oblique_view_weights, view_angles_deg

__all__ = [
    "TRACKER", "TRACKER_VERSION", "DEFAULT_FOV_DEG", "DEFAULT_RESOLUTION", "DEFAULT_CROP_SCALE", "MONOCULAR_CAMERA",
    "TrackOptions", "TrackResult", "TrackArgumentError", "TooFewFrames", "TrackingUnavailable", "Camera",
    "read_cameras_json", "track_video", "track_images", "parse_fit_overrides", "resolve_device",
]

log = logging.getLogger(__name__)

TRACKER = "cgha.tracking"
# 1.1.0: landmark calibration (MediaPipe -> face model definitions); 1.2.0: masks cut below the neck (mask_region);
# 1.3.0: multi-view landmarks weighted by their view's angle from frontal (oblique_view_deg); 1.4.0: monocular
# detections corrected by the view-dependent landmark calibration (view_calibration); 1.5.0: the optional photometric
# refinement of the poses (photometric; cgha/tracking/photometric.py), the fit's output unchanged without it; 1.6.0:
# that refinement takes 3x larger steps and, with one camera, no prior toward the landmark fit; 1.7.0: at the neck's
# height the head masks keep only the fitted neck's silhouette and the parts connected to the head (head_region_mask);
# 1.8.0: segmentation masks' edges snapped to the frame by a guided filter (mask_edges)
# 1.8.1: the mesh silhouette of the head region filled as the union of its triangles (it was even-odd filled)
TRACKER_VERSION = "1.8.1"
# The angle at which a view's landmarks weigh a quarter: where the calibration identities' MediaPipe-to-face-model
# disagreement (4.6 px frontal, 14 px at 45-60°, 27 px beyond 60°; docs/tracking.md) has doubled.
DEFAULT_OBLIQUE_VIEW_DEG = 35.0
DEFAULT_RESOLUTION = 512
# Field of view across the longer side of the raw frame. Phones' main cameras (26 mm equivalent) see about 69 deg,
# their front cameras 70-80 deg, webcams 60-75 deg: 65 deg is in the middle (docs/tracking.md, --fov).
DEFAULT_FOV_DEG = 65.0
DEFAULT_CROP_SCALE = 1.8  # crop side / larger side of the face-mesh bounds (forehead to chin): head, hair, neck
# The face crop's centre sits this fraction of its side above the landmarks' centre: with --crop-scale 1.8 that
# leaves ~0.55 face heights above the forehead (skull, hair) and ~0.25 below the chin (neck).
_CROP_RAISE = 0.08
DEFAULT_LOWRES = 256  # the mesh stage's low-res copies, as the synthetic writer and preprocess_nersemble.py
DEFAULT_MAX_REPROJECTION_PX = 25.0  # at a 512 px image side
CROP_MODES = ("face", "full")
MASK_MODES = ("auto", "segmentation", "plates")
MASK_REGIONS = ("head", "person")
MASK_EDGES = ("guided", "none")
_LISTED = 20  # names listed in a warning or error before "..."
_FIT_PASSES = 3  # fits run at most: each drops the frames that fit badly and fits the rest again
_VIEW_CORRECTION_PASSES = 2  # refits with the view-dependent correction of the detections (the second settles it)
VIEW_CALIBRATION_MODES = ("monocular", "always", "off")


def _uses_view_calibration(mode: str, cameras: int) -> bool:
    """Whether the view-dependent calibration corrects the detections: ``always``, or ``monocular`` with one
    camera (with a rig, down-weighting the oblique views did better: docs/tracking.md)."""
    return mode == "always" or (mode == "monocular" and cameras == 1)


class TrackArgumentError(UserError, ValueError):
    """A bad option of the tracker (resolution, fov, device, an output folder it must not overwrite, ...)."""


class TooFewFrames(DataError):
    """Fewer frames than ``min_face_fraction`` of the input kept a face (or a good fit). The message is the
    tracker's; the counts are kept for callers that word their own error (``demo.py --video``).

    Attributes:
        frames: frames read from the input (after --stride / --max-frames); tracked: frames that kept a face (at the
        step that failed); stage: ``detection`` (no face found) or ``fit`` (found, but fitted too badly).
    """

    def __init__(self, message: str, frames: int, tracked: int, stage: str):
        super().__init__(message)
        self.frames, self.tracked, self.stage = frames, tracked, stage


class TrackingUnavailable(UserError):
    """MediaPipe (the optional extra ``track``, installed as cgha/tracking/landmarker.py says) is missing."""


# ------------------------------------------------------------------------------------------------------------
# Options and results
# ------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class TrackOptions:
    """Settings of one tracking run (the flags of preprocess/track.py).

    Attributes:
        resolution: side of the written square images; intrinsics are written for it.
        lowres: side of the ``*_lowres_*`` copies (None: min(256, resolution)).
        fov_deg: monocular only: field of view across the longer side of the raw frame, degrees.
        crop: ``face`` or ``full`` (None: ``face`` for a video, ``full`` for calibrated images).
        crop_scale: ``face`` crop side / larger side of the landmarks' bounds.
        stride, max_frames: use frames 0, stride, 2 stride, ... and at most max_frames of them.
        min_face_fraction: at least this fraction of the frames must keep a face (and a good fit), else error.
        max_reprojection_px: frames whose mean landmark reprojection error (px at a 512 side) is larger are dropped.
        holdout_frames: fraction of the frames (the last ones) held out for evaluation.
        holdout_cameras: cameras held out: a number (spread over the rig, never the most frontal) or camera ids;
            None = 1 with 3 or more cameras, else 0.
        masks: ``segmentation`` (MediaPipe selfie segmentation), ``plates`` (background subtraction against
            ``backgrounds``) or ``auto`` (plates when ``backgrounds`` is set).
        backgrounds: folder of empty-scene plates ``<camera>.{jpg,png}`` at each camera's raw size.
        mask_region: ``head`` (the person mask cut below the fitted neck's end, ``cgha.tracking.head_region``: what
            a head avatar models) or ``person`` (the whole person mask, shoulders and torso included).
        mask_edges: ``guided`` (segmentation masks' edges, after the head cut, snapped to the frame's colour edges by
            a guided filter, ``cgha.tracking.mask_edges``) or ``none`` (the segmentation's own edges, resized from its
            256^2 input, and the cut's). Plate masks are computed at full resolution and are not filtered.
        min_detection_confidence: the face detector's threshold.
        fit: the fitter's weights and schedule.
        view_calibration: when the calibration's view-dependent offsets correct the detections (after a first
            fit, then two refits): ``monocular`` (one camera: the default), ``always`` or ``off``.
        oblique_view_deg: multi-view only: after the first fit, weigh each view's landmarks by
            ``cgha.tracking.view_weights.oblique_view_weights`` of its angle from frontal (a quarter at this angle)
            and fit again from the first fit; 0 turns it off.
        photometric: after the landmark fit, refine each frame's pose (and ``photometric_config``'s other
            unknowns) against the images by analysis by synthesis of the face region (``cgha.tracking.photometric``).
        photometric_config: that refinement's settings.
        calibration: the landmark calibration between MediaPipe's points and the face model's landmarks
            (``cgha.tracking.calibration``): ``default`` (the shipped file), a path to another calibration file, or
            None (fit the face model's own landmark definitions, as before calibration existed).
        face_model_samples, face_model_components: the face model's build (identity PCA samples and components;
            the default is the full model; tests use a small one, which builds in seconds instead of a minute).
        face_model_cache: folder of the face model's cache (None: ``$CGHA_CACHE_DIR`` or ``~/.cache/cgha``).
        device: ``auto``, ``cpu`` or ``cuda[:N]`` (where the fit runs; landmarks are always on the CPU).
        force: replace an existing output folder.
        progress: tqdm bars.
    """

    resolution: int = DEFAULT_RESOLUTION
    lowres: Optional[int] = None
    fov_deg: float = DEFAULT_FOV_DEG
    crop: Optional[str] = None
    crop_scale: float = DEFAULT_CROP_SCALE
    stride: int = 1
    max_frames: Optional[int] = None
    min_face_fraction: float = 0.5
    max_reprojection_px: float = DEFAULT_MAX_REPROJECTION_PX
    holdout_frames: float = 0.1
    holdout_cameras: Optional[Union[int, Sequence[str]]] = None
    masks: str = "auto"
    backgrounds: Optional[Path] = None
    mask_region: str = "head"
    mask_edges: str = "guided"
    min_detection_confidence: float = 0.5
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)
    oblique_view_deg: float = DEFAULT_OBLIQUE_VIEW_DEG
    view_calibration: str = "monocular"
    photometric: bool = False
    photometric_config: PhotometricConfig = dataclasses.field(default_factory=PhotometricConfig)
    calibration: Optional[Union[str, Path]] = "default"
    face_model_samples: int = DEFAULT_NUM_SAMPLES
    face_model_components: int = DEFAULT_NUM_COMPONENTS
    face_model_cache: Optional[Path] = None
    device: str = "auto"
    force: bool = False
    progress: bool = True

    def check(self) -> None:
        def bad(message: str):
            raise TrackArgumentError(message)

        if isinstance(self.resolution, bool) or not isinstance(self.resolution, int) or not 16 <= self.resolution <= 8192:
            bad(f"resolution must be an integer in [16, 8192], got {self.resolution!r}")
        if self.lowres is not None and not (isinstance(self.lowres, int) and 8 <= self.lowres <= self.resolution):
            bad(f"lowres must be an integer in [8, resolution={self.resolution}], got {self.lowres!r}")
        if not (isinstance(self.fov_deg, (int, float)) and 1.0 <= float(self.fov_deg) <= 170.0):
            bad(f"fov must be in [1, 170] degrees, got {self.fov_deg!r}")
        if self.crop is not None and self.crop not in CROP_MODES:
            bad(f"crop must be one of {', '.join(CROP_MODES)}, got {self.crop!r}")
        if not (isinstance(self.crop_scale, (int, float)) and 1.0 <= float(self.crop_scale) <= 10.0):
            bad(f"crop_scale must be in [1, 10], got {self.crop_scale!r}")
        if not (isinstance(self.stride, int) and self.stride >= 1):
            bad(f"stride must be an integer >= 1, got {self.stride!r}")
        if self.max_frames is not None and not (isinstance(self.max_frames, int) and self.max_frames >= 1):
            bad(f"max_frames must be an integer >= 1, got {self.max_frames!r}")
        if not 0.0 < float(self.min_face_fraction) <= 1.0:
            bad(f"min_face_fraction must be in (0, 1], got {self.min_face_fraction!r}")
        if not float(self.max_reprojection_px) > 0.0:
            bad(f"max_reprojection_px must be > 0, got {self.max_reprojection_px!r}")
        if not 0.0 <= float(self.holdout_frames) < 1.0:
            bad(f"holdout_frames must be in [0, 1), got {self.holdout_frames!r}")
        if isinstance(self.holdout_cameras, (int, np.integer)) and not isinstance(self.holdout_cameras, bool):
            if self.holdout_cameras < 0:
                bad(f"holdout_cameras must be >= 0, got {self.holdout_cameras}")
        elif self.holdout_cameras is not None and (isinstance(self.holdout_cameras, str)
                                                   or not all(isinstance(c, str) for c in self.holdout_cameras)):
            bad(f"holdout_cameras must be a number or a list of camera ids, got {self.holdout_cameras!r}")
        if self.masks not in MASK_MODES:
            bad(f"masks must be one of {', '.join(MASK_MODES)}, got {self.masks!r}")
        if self.mask_region not in MASK_REGIONS:
            bad(f"mask_region must be one of {', '.join(MASK_REGIONS)}, got {self.mask_region!r}")
        if self.mask_edges not in MASK_EDGES:
            bad(f"mask_edges must be one of {', '.join(MASK_EDGES)}, got {self.mask_edges!r}")
        if self.masks == "plates" and self.backgrounds is None:
            bad("masks=plates needs a folder of background plates (--backgrounds DIR)")
        if not 0.0 <= float(self.min_detection_confidence) <= 1.0:
            bad(f"min_detection_confidence must be in [0, 1], got {self.min_detection_confidence!r}")
        if self.view_calibration not in VIEW_CALIBRATION_MODES:
            bad(f"view_calibration must be one of {', '.join(VIEW_CALIBRATION_MODES)}, got {self.view_calibration!r}")
        if not (isinstance(self.oblique_view_deg, (int, float)) and 0.0 <= float(self.oblique_view_deg) <= 180.0):
            bad(f"oblique_view_deg must be in [0, 180] (0: off), got {self.oblique_view_deg!r}")
        if not isinstance(self.fit, FitConfig):
            bad(f"fit must be a FitConfig, got {type(self.fit).__name__}")
        if not isinstance(self.photometric_config, PhotometricConfig):
            bad(f"photometric_config must be a PhotometricConfig, got {type(self.photometric_config).__name__}")
        samples, components = self.face_model_samples, self.face_model_components
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (samples, components)) \
                or not 1 <= components < samples:
            bad(f"face model: need integers 1 <= components < samples, got samples={samples!r}, "
                f"components={components!r}")
        self.landmark_calibration()  # a missing or bad file fails now, before any work
        resolve_device(self.device)

    def landmark_calibration(self) -> Optional[LandmarkCalibration]:
        """The calibration ``calibration`` names (None: none); TrackArgumentError for a file that cannot be used."""
        if self.calibration is None:
            return None
        path = DEFAULT_CALIBRATION_PATH if str(self.calibration) == "default" else Path(self.calibration)
        try:
            return load_calibration(path)
        except ValueError as error:
            raise TrackArgumentError(str(error)) from None

    @property
    def lowres_side(self) -> int:
        return self.lowres if self.lowres is not None else min(DEFAULT_LOWRES, self.resolution)


@dataclasses.dataclass
class TrackResult:
    """What a run wrote: the subject folder, its frames and cameras, the dropped frames and the report
    (``tracking.json``'s contents)."""

    out_dir: Path
    frames: List[str]
    cameras: List[str]
    dropped: List[Dict[str, object]]
    report: Dict[str, object]


def resolve_device(device: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda[:N]``; TrackArgumentError for anything else or for
    CUDA on a machine without it."""
    text = str(device)
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise TrackArgumentError(f"device must be auto, cpu or cuda[:N], got {text!r}")
    if text.startswith("cuda") and not torch.cuda.is_available():
        raise TrackArgumentError(f"device {text} was asked for but CUDA is not available (use --device cpu)")
    return torch.device(text)


def parse_fit_overrides(items: Sequence[str], base: Optional[FitConfig] = None) -> FitConfig:
    """``FitConfig`` with ``key=value`` overrides (e.g. ``smooth_rotation=0`` for frames that are not a video)."""
    base = base or FitConfig()
    fields = {f.name: f for f in dataclasses.fields(FitConfig)}
    hints = typing.get_type_hints(FitConfig)
    changes = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise TrackArgumentError(f"fit override {item!r}: expected KEY=VALUE with KEY one of "
                                     f"{', '.join(fields)}")
        kind = hints[key]
        text = text.strip()
        try:
            if kind in (bool, Optional[bool]):
                lowered = text.lower()
                if kind is not bool and lowered in ("none", "null", "auto"):
                    value = None
                elif lowered in ("1", "true", "yes", "on"):
                    value = True
                elif lowered in ("0", "false", "no", "off"):
                    value = False
                else:
                    raise ValueError(text)
            elif kind is int:
                value = int(text)
            else:
                value = float(text)
        except ValueError:
            raise TrackArgumentError(f"fit override {item!r}: {text!r} is not a valid {getattr(kind, '__name__', kind)}"
                                     ) from None
        changes[key] = value
    try:
        return dataclasses.replace(base, **changes)
    except ValueError as error:
        raise TrackArgumentError(f"fit overrides {list(items)}: {error}") from None


# ------------------------------------------------------------------------------------------------------------
# Steps
# ------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Detections:
    points: np.ndarray  # [T, C, 478, 2] raw pixels, NaN where no face
    found: np.ndarray  # [T, C] bool
    score: np.ndarray  # [T, C]
    decode_s: float
    landmark_s: float


def _detect(source, options: TrackOptions) -> _Detections:
    from .landmarker import NUM_POINTS, FaceMeshDetector

    T, C = len(source.names), len(source.cameras)
    points = np.full((T, C, NUM_POINTS, 2), np.nan, dtype=np.float32)
    found = np.zeros((T, C), dtype=bool)
    score = np.zeros((T, C), dtype=np.float32)
    decode_s = landmark_s = 0.0
    bar = tqdm(total=T, desc="landmarks", unit="frame", disable=not options.progress)
    with FaceMeshDetector(options.min_detection_confidence) as detector:
        frames = source.frames(range(T), tolerate_end=True)
        while True:
            start = time.perf_counter()
            item = next(frames, None)
            decode_s += time.perf_counter() - start
            if item is None:
                break
            position, views = item
            for c, rgb in enumerate(views):
                start = time.perf_counter()
                pts, s = detector.detect(rgb)
                landmark_s += time.perf_counter() - start
                if pts is not None:
                    points[position, c], found[position, c], score[position, c] = pts, True, s
            bar.update(1)
    bar.close()
    T = len(source.names)  # a video may have ended early
    return _Detections(points[:T], found[:T], score[:T], decode_s, landmark_s)


def _face_crop(points: np.ndarray, width: int, height: int, scale: float) -> SquareCrop:
    """One square for the sequence around the landmarks [N, P, 2] of the frames with a face: the 2nd / 98th
    percentiles of the per-frame bounds (one wrong detection does not move it), side ``scale`` times their larger
    extent, at most the shorter image side, its centre ``_CROP_RAISE`` of the side above the landmarks' centre (the
    face mesh ends at the forehead, the skull and hair go on above it), shifted to lie inside the frame."""
    lo = np.percentile(np.nanmin(points, axis=1), 2, axis=0)
    hi = np.percentile(np.nanmax(points, axis=1), 98, axis=0)
    side = int(round(min(scale * float((hi - lo).max()), min(width, height))))
    side = max(side, 16)
    centre = (lo + hi) / 2.0 - np.array([0.0, _CROP_RAISE * side])
    x0 = int(np.clip(round(centre[0] - side / 2.0), 0, width - side))
    y0 = int(np.clip(round(centre[1] - side / 2.0), 0, height - side))
    return SquareCrop(x0, y0, side)


def _crops(source, det: _Detections, mode: str, options: TrackOptions) -> List[SquareCrop]:
    crops = []
    for c, camera in enumerate(source.cameras):
        if mode == "face" and det.found[:, c].any():
            crops.append(_face_crop(det.points[det.found[:, c], c], camera.width, camera.height, options.crop_scale))
        else:
            if mode == "face":
                log.warning("camera %s: no face found in any frame, so it gets the centred square crop", camera.id)
            crops.append(centred_square_crop(camera.width, camera.height))
    return crops


def _to_crop(points: np.ndarray, crop: SquareCrop, size: int) -> np.ndarray:
    """Raw pixel coordinates [..., 2] -> pixels of the crop resized to ``size`` (continuous coordinates)."""
    return (points - np.array([crop.x0, crop.y0], dtype=np.float64)) * (size / crop.side)


def _head_frame_angles(cameras: List[np.ndarray], pose: np.ndarray) -> Tuple[List[float], List[float]]:
    """Azimuth and elevation (degrees) of each camera centre seen from the head (median frame's pose): 0 / 0 is
    straight in front of the face, positive azimuth toward the subject's left, positive elevation above."""
    mid = pose[len(pose) // 2]
    R = axis_angle_to_matrix(torch.from_numpy(mid[:3]).double()).numpy()
    centre = pose[:, 3:].mean(axis=0)
    az, el = [], []
    for viewmat in cameras:
        eye = -viewmat[:3, :3].T @ viewmat[:3, 3]
        d = R.T @ (eye - centre)
        az.append(float(np.degrees(np.arctan2(d[0], d[2]))))
        el.append(float(np.degrees(np.arctan2(d[1], np.hypot(d[0], d[2])))))
    return az, el


def _holdout_cameras(ids: List[str], az: List[float], el: List[float], wanted) -> List[str]:
    """Held-out cameras: the listed ids, or ``k`` of them spread over the rig in azimuth order, never the most
    frontal one (the rule of the synthetic subjects' recommended splits)."""
    C = len(ids)
    if wanted is not None and not isinstance(wanted, (int, np.integer)):
        listed = list(dict.fromkeys(wanted))
        unknown = [c for c in listed if c not in ids]
        if unknown:
            raise TrackArgumentError(f"held-out camera(s) {unknown} are not among the cameras {ids}")
        if len(listed) >= C:
            raise TrackArgumentError(f"holding out {listed} leaves no camera to train on")
        return sorted(listed)
    k = (1 if C >= 3 else 0) if wanted is None else int(wanted)
    if k == 0:
        return []
    if k >= C:
        raise TrackArgumentError(f"holding out {k} of {C} camera(s) leaves none to train on")
    frontal = int(np.argmin([np.hypot(a, e) for a, e in zip(az, el)]))
    candidates = [i for i in np.argsort(az, kind="stable").tolist() if i != frontal]
    picks = sorted({candidates[int(round((j + 0.5) * len(candidates) / k - 0.5))] for j in range(k)})
    return [ids[i] for i in picks]


def _holdout_frames(names: List[str], fraction: float) -> List[str]:
    F = len(names)
    n = int(round(fraction * F))
    if fraction > 0 and F >= 2:
        n = max(1, n)
    n = min(n, F - 1)
    return names[F - n:] if n > 0 else []


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _LISTED else "")


# ------------------------------------------------------------------------------------------------------------
# Masks
# ------------------------------------------------------------------------------------------------------------

def _plate_masker(folder: Path, source, crops: List[SquareCrop], size: int) -> Callable[[np.ndarray, int], np.ndarray]:
    """Masks by background subtraction against ``folder/<camera>.{jpg,png}`` (each at its camera's raw size),
    cropped and resized like the frames."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"background plate folder not found: {folder}")
    plates = []
    for camera, crop in zip(source.cameras, crops):
        paths = [folder / f"{camera.id}{suffix}" for suffix in IMAGE_SUFFIXES]
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            raise DataError(f"{folder}: no background plate for camera {camera.id!r} (expected {camera.id}.jpg or "
                            f"{camera.id}.png)")
        plate = read_image(path)
        if plate.shape[:2] != (camera.height, camera.width):
            raise DataError(f"{path} is {plate.shape[1]}x{plate.shape[0]} but camera {camera.id!r}'s images are "
                            f"{camera.width}x{camera.height}")
        plates.append(crop_resize(plate, crop, size))
    params = MaskParams()

    def mask(image: np.ndarray, camera: int) -> np.ndarray:
        alpha = subtract_background(image, plates[camera], params)
        return (alpha * 255.0 + 0.5).astype(np.uint8)

    return mask


def _segmentation_masker() -> Tuple[Callable[[np.ndarray, int], np.ndarray], Callable[[], None]]:
    """Masks from MediaPipe's selfie segmentation (``cgha.tracking.segmentation``): (mask function, close)."""
    from . import segmentation

    segmenter = segmentation.PersonSegmenter()

    def mask(image: np.ndarray, camera: int) -> np.ndarray:
        alpha = np.asarray(segmenter.segment(image), dtype=np.float32)
        return (np.clip(alpha, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)

    return mask, segmenter.close


# ------------------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------------------

def track_video(video, out_dir, options: Optional[TrackOptions] = None) -> TrackResult:
    """Track a single-camera video into the subject folder ``out_dir`` (see the module docstring)."""
    options = options or TrackOptions()
    options.check()
    _check_out(out_dir, options)
    return _track(VideoSource(video, options.stride, options.max_frames, options.fov_deg), Path(out_dir), options)


def track_images(images_dir, cameras_json, out_dir, options: Optional[TrackOptions] = None) -> TrackResult:
    """Track calibrated multi-view frames ``images_dir/<frame>/<camera>.{jpg,png}`` with the camera file
    ``cameras_json`` (``read_cameras_json``) into the subject folder ``out_dir``."""
    options = options or TrackOptions()
    options.check()
    _check_out(out_dir, options)
    return _track(ImageSetSource(images_dir, cameras_json, options.stride, options.max_frames), Path(out_dir), options)


def _check_out(out_dir, options: TrackOptions) -> None:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TrackArgumentError(f"{out} exists and is not a folder")
    if out.exists() and not options.force:
        raise TrackArgumentError(f"{out} already exists; choose another folder or pass --force to replace it")


def _track(source, out_dir: Path, options: TrackOptions) -> TrackResult:
    start_all = time.perf_counter()
    device = resolve_device(options.device)
    monocular = source.kind == "video"
    crop_mode = options.crop or ("face" if monocular else "full")
    R = options.resolution
    mask_mode = options.masks if options.masks != "auto" else ("plates" if options.backgrounds else "segmentation")
    cam_ids = [cam.id for cam in source.cameras]
    if options.holdout_cameras is not None:  # a bad choice fails now, not after the landmarks and the fit
        _holdout_cameras(cam_ids, [0.0] * len(cam_ids), [0.0] * len(cam_ids), options.holdout_cameras)
    try:
        from .landmarker import import_mediapipe

        import_mediapipe()
        if mask_mode == "segmentation":
            from . import segmentation  # noqa: F401  (fail before the long passes, not after them)
    except ImportError as error:
        raise TrackingUnavailable(str(error)) from None
    from .landmarker import IBUG68_FROM_MEDIAPIPE

    # -- landmarks --------------------------------------------------------------------------------------------
    det = _detect(source, options)
    names = list(source.names)
    T, C = det.found.shape
    has_face = det.found.any(axis=1)
    if has_face.mean() < options.min_face_fraction:
        per_camera = ", ".join(f"{cam.id} {int(det.found[:, c].sum())}" for c, cam in enumerate(source.cameras))
        raise TooFewFrames(f"{source.label}: a face was found in only {int(has_face.sum())} of {T} frames "
                           f"(at least {options.min_face_fraction:.0%} needed, --min-face-fraction; per camera: "
                           f"{per_camera}): no face visible, too small, too dark or turned away?",
                           frames=T, tracked=int(has_face.sum()), stage="detection")

    # -- crops and the fit ------------------------------------------------------------------------------------
    crops = _crops(source, det, crop_mode, options)
    Ks = np.stack([crop_resize_intrinsics(cam.K, crop, R) for cam, crop in zip(source.cameras, crops)])
    viewmats = np.stack([cam.viewmat for cam in source.cameras])
    lmk = det.points[:, :, IBUG68_FROM_MEDIAPIPE].astype(np.float64)  # [T, C, 68, 2] raw pixels
    for c, crop in enumerate(crops):
        lmk[:, c] = _to_crop(lmk[:, c], crop, R)
    conf = np.repeat(det.found[..., None], lmk.shape[2], axis=2).astype(np.float32)
    lmk = np.where(conf[..., None] > 0, lmk, 0.0).astype(np.float32)

    model = FaceModel(device=device, num_samples=options.face_model_samples,
                      num_components=options.face_model_components, cache_dir=options.face_model_cache)
    calibration = options.landmark_calibration()
    # The fit explains MediaPipe's points with MediaPipe's definitions (the calibrated landmarks); what is written
    # (lmk_3d.npy) is the face model's own landmarks, which lie on its surface as the synthetic subjects' do.
    fit_model = model.with_landmark_offset(None if calibration is None else calibration.offset)
    if calibration is not None:
        conf = conf * calibration.weights()  # each landmark by its inverse variance (the jaw line weighs least)
    # A wrong detection (another face, a poster) fits badly, but it also pulls its neighbours through the temporal
    # terms and the shared identity: such frames are dropped and the fit is run again without them.
    bad_fit = np.zeros(T, dtype=bool)
    bad_reproj: Dict[int, float] = {}
    fit_s, passes = 0.0, 0

    def timed_fit(landmarks, confidence, init_pose=None):
        """One fit of the face model, counted in the report's fit time and passes."""
        nonlocal fit_s, passes
        start = time.perf_counter()
        result = fit_landmarks(fit_model, landmarks, confidence, Ks, viewmats, (R, R), init_pose=init_pose,
                               config=options.fit, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        fit_s += time.perf_counter() - start
        passes += 1
        return result

    while True:
        fit = timed_fit(lmk, conf * ~bad_fit[:, None, None])
        reproj = fit.reprojection_px.cpu().double().numpy()  # [T] px at R; NaN where nothing was fitted
        new_bad = has_face & ~bad_fit & ~(reproj * (REFERENCE_SIZE / R) <= options.max_reprojection_px)
        bad_reproj.update({int(t): float(reproj[t]) for t in np.flatnonzero(new_bad)})
        bad_fit |= new_bad
        if not new_bad.any() or passes >= _FIT_PASSES or bad_fit.sum() > (1.0 - options.min_face_fraction) * T:
            break
    fit_conf = conf * ~bad_fit[:, None, None]  # what the refits below weigh the detections by
    targets = lmk  # the detections the last fit explained
    if options.oblique_view_deg > 0 and C > 1:
        angles = view_angles_deg(fit.pose.cpu().double().numpy(), viewmats)  # [T, C]
        fit_conf = fit_conf * oblique_view_weights(angles, options.oblique_view_deg).astype(np.float32)[..., None]
        fit = timed_fit(lmk, fit_conf, init_pose=fit.pose)
    if _uses_view_calibration(options.view_calibration, C) and calibration is not None:
        if calibration.view_coefficients is None:
            log.warning("%s: the landmark calibration %s has no view-dependent part (a version 1 file): the fit "
                        "uses its fixed offsets only", source.label, options.calibration)
        else:
            for _ in range(_VIEW_CORRECTION_PASSES):
                # Move each detection by where the view-dependent offset puts it relative to the fixed offset, at
                # the current fit, and fit again from there.
                shift = detection_shift_px(fit_model, fit.pose.cpu().double().numpy(), float(fit.scale),
                                           fit.exp.cpu().double().numpy(), fit.landmarks_3d.cpu().double().numpy(),
                                           Ks, viewmats, calibration.view_coefficients, calibration.offset)
                targets = np.where(conf[..., None] > 0, lmk - shift, 0.0).astype(np.float32)
                fit = timed_fit(targets, fit_conf, init_pose=fit.pose)
    reproj = fit.reprojection_px.cpu().double().numpy()

    pose = fit.pose.cpu().double().numpy()
    exp = fit.exp.cpu().float().numpy()
    scale = float(fit.scale)
    identity = fit.identity.to(device)
    cam_reproj = fit.camera_reprojection_px.cpu().double().numpy()  # [T, C]
    kept = fit.observed.cpu().numpy() & has_face & ~bad_fit
    dropped = [{"frame": names[t], "reason": "no face found"} for t in range(T) if not has_face[t]]
    dropped += [{"frame": names[t], "reason": "landmarks fit badly (wrong detection?)",
                 "reprojection_px": round(bad_reproj[t], 3)} for t in range(T) if bad_fit[t]]
    dropped.sort(key=lambda d: names.index(d["frame"]))
    if kept.mean() < options.min_face_fraction:
        raise TooFewFrames(f"{source.label}: only {int(kept.sum())} of {T} frames have a face that the face model "
                           f"fits within {options.max_reprojection_px} px (at {REFERENCE_SIZE:.0f}^2; "
                           f"--max-reprojection), fewer than --min-face-fraction {options.min_face_fraction:.0%}",
                           frames=T, tracked=int(kept.sum()), stage="fit")
    if dropped:
        log.warning("%s: dropped %d of %d frames: %s", source.label, len(dropped), T,
                    _listed([f"{d['frame']} ({d['reason']})" for d in dropped]))
    keep_idx = np.flatnonzero(kept)

    # -- photometric refinement -----------------------------------------------------------------------------------
    photometric_report = None
    if options.photometric:
        start = time.perf_counter()
        refined = _refine_photometric(source, model, identity, exp, pose, scale, keep_idx, crops, Ks, viewmats,
                                      options, device)
        pose[keep_idx], exp[keep_idx] = refined.pose[keep_idx], refined.exp[keep_idx].astype(np.float32)
        identity = torch.as_tensor(refined.identity, dtype=identity.dtype, device=device)
        photometric_report = {
            "views": refined.views, "iterations": refined.iterations, "pose_prior_weight": refined.prior_weight,
            "loss": {k: rounded(v, 6) for k, v in refined.loss.items()},
            "rotation_change_deg": {"median": rounded(np.median(refined.rotation_change_deg[keep_idx])),
                                    "max": rounded(refined.rotation_change_deg[keep_idx].max())},
            "seconds": rounded(time.perf_counter() - start),
            "config": dataclasses.asdict(options.photometric_config),
        }
        reproj, cam_reproj = _landmark_reprojection(fit_model, identity, exp, pose, scale, targets, conf > 0, Ks,
                                                    viewmats, device)
    with torch.no_grad():
        exp_t, pose_t = torch.from_numpy(exp).to(device), torch.from_numpy(pose).float().to(device)
        fitted3d = fit_model.landmarks(identity, exp_t, pose_t, scale).cpu().double().numpy()  # matched to detections
        lmk3d = model.landmarks(identity, exp_t, pose_t, scale).cpu().double().numpy()  # the face model's own

    # -- world --------------------------------------------------------------------------------------------------
    if monocular:
        # The camera was placed arbitrarily: move the world origin to the head's mean position.
        shift = pose[keep_idx, 3:].mean(axis=0)
        pose[:, 3:] -= shift
        lmk3d -= shift
        fitted3d -= shift
        to_old = np.eye(4)
        to_old[:3, 3] = shift
        viewmats = viewmats @ to_old
    kept_names = [names[t] for t in keep_idx]
    az, el = _head_frame_angles(list(viewmats), pose[keep_idx])
    eval_cams = _holdout_cameras(cam_ids, az, el, options.holdout_cameras)
    eval_frames = _holdout_frames(kept_names, options.holdout_frames)
    splits = {
        "eval_camera_ids": eval_cams,
        "eval_frame_ids": eval_frames,
        "train_camera_ids": [c for c in cam_ids if c not in eval_cams],
        "train_frame_ids": [f for f in kept_names if f not in eval_frames],
    }

    # -- report ---------------------------------------------------------------------------------------------------
    n_images = T * C
    kept_reproj = reproj[keep_idx]
    report = {
        "tracker": TRACKER,
        "tracker_version": TRACKER_VERSION,
        "input": {"kind": source.kind, **source.describe()},
        "device": str(device),
        "frames": {"input": T, "kept": int(kept.sum()), "dropped": len(dropped)},
        "dropped": dropped,
        "detections_per_camera": {cam.id: int(det.found[:, c].sum()) for c, cam in enumerate(source.cameras)},
        "reprojection_px": {
            "resolution": R,
            "median": rounded(np.median(kept_reproj)),
            "p95": rounded(np.percentile(kept_reproj, 95)),
            "max": rounded(kept_reproj.max()),
            "median_at_512": rounded(np.median(kept_reproj) * REFERENCE_SIZE / R),
            "per_frame": {names[t]: rounded(reproj[t]) for t in range(T) if kept[t]},
            "per_camera_median": {cam.id: rounded(np.nanmedian(cam_reproj[keep_idx, c]))
                                  if np.isfinite(cam_reproj[keep_idx, c]).any() else None
                                  for c, cam in enumerate(source.cameras)},
        },
        "timings_s": {"decode": rounded(det.decode_s), "landmarks": rounded(det.landmark_s), "fit": rounded(fit_s),
                      **({} if photometric_report is None else {"photometric": photometric_report["seconds"]})},
        "fps": {"landmarks_images": rounded(n_images / max(det.landmark_s, 1e-9)),
                "landmarks_frames": rounded(T / max(det.landmark_s, 1e-9)),
                "fit_frames": rounded(T / max(fit_s, 1e-9))},
        "fit": {"passes": passes, "scale": scale, "scale_fitted": bool(fit.scale_fitted), "losses": dict(fit.losses),
                "identity": [float(v) for v in identity.cpu()],
                "config": dataclasses.asdict(options.fit)},
        "photometric": photometric_report,
        "landmark_calibration": _calibration_report(calibration, options),
        "face_model": {"key": model.key, "num_samples": options.face_model_samples,
                       "num_components": options.face_model_components},
    }

    # -- write ------------------------------------------------------------------------------------------------
    lowres = options.lowres_side
    preview_frames = sorted(set(sw.spread(len(keep_idx), 3)) | {int(np.argmax(kept_reproj))})
    preview_cams = sw.spread(C, 4)
    arguments = _arguments(options, crop_mode, mask_mode)
    meta = _meta(source, options, model, arguments, kept_names, cam_ids, crops, Ks, viewmats, scale, identity,
                 bool(fit.scale_fitted), splits, az, el, crop_mode, mask_mode)

    neck_ring = None
    if options.mask_region == "head":
        with torch.no_grad():
            neutral = model.canonical_vertices(identity, torch.zeros(1, EXP_DIM, device=device))[0]
        neck_ring = neck_base_ring(neutral).cpu().numpy()
        mesh_faces = model.faces.cpu().numpy()

    def write(root: Path) -> None:
        start_write = time.perf_counter()
        if mask_mode == "plates":
            masker, close = _plate_masker(options.backgrounds, source, crops, R), (lambda: None)
        else:
            masker, close = _segmentation_masker()
        # After the head cut, so that the cut's own straight edges at the neck also move onto the frame's edges.
        refine_edges = mask_mode != "plates" and options.mask_edges == "guided"
        tiles = {}
        extrinsics = viewmats[:, :3, :].astype(np.float32)
        bar = tqdm(total=len(keep_idx), desc="write", unit="frame", disable=not options.progress)
        try:
            order = {int(t): i for i, t in enumerate(keep_idx)}
            for t, views in source.frames(keep_idx.tolist()):
                i = order[t]
                with torch.no_grad():
                    verts = model.posed_vertices(identity, torch.from_numpy(exp[t:t + 1]).to(device),
                                                 torch.from_numpy(pose[t:t + 1]).float().to(device), scale)[0]
                verts = verts.cpu().numpy()
                name = names[t]
                for c, rgb in enumerate(views):
                    image = np.ascontiguousarray(crop_resize(rgb, crops[c], R))
                    mask = masker(image, c)
                    if neck_ring is not None:
                        mask = head_region_mask(mask, verts, mesh_faces, neck_ring, pose[t], viewmats[c], Ks[c])
                    if refine_edges:
                        mask = (refine_mask_edges(image, mask / 255.0) * 255.0 + 0.5).astype(np.uint8)
                    sw.write_view(root, name, cam_ids[c], image, mask, lowres, Ks[c], extrinsics[c])
                    if i in preview_frames and c in preview_cams:
                        fitted, _ = project_points(fitted3d[t], viewmats[c], Ks[c])
                        detected = lmk[t, c] if det.found[t, c] else None
                        label = f"{name} {cam_ids[c]} {cam_reproj[t, c]:.1f}px" if det.found[t, c] else \
                            f"{name} {cam_ids[c]} no face"
                        tiles[(i, c)] = sw.draw_landmarks(image, detected, fitted, label)
                sw.write_frame_params(root, name, pose[t], scale, exp[t], lmk3d[t], verts)
                bar.update(1)
        finally:
            bar.close()
            close()
        np.save(root / "faces.npy", model.faces.cpu().numpy().astype(np.int64))
        write_jpeg(root / "preview.jpg", sw.preview_sheet(tiles, preview_frames, preview_cams))
        report["timings_s"]["write"] = rounded(time.perf_counter() - start_write)
        report["timings_s"]["total"] = rounded(time.perf_counter() - start_all)
        sw.write_json(root / "tracking.json", report)
        sw.write_json(root / "meta.json", meta)  # last: a folder with it is complete

    write_directory_atomic(out_dir, write)
    return TrackResult(out_dir, kept_names, cam_ids, dropped, report)


def _refine_photometric(source, model: FaceModel, identity: torch.Tensor, exp: np.ndarray, pose: np.ndarray,
                        scale: float, keep_idx: np.ndarray, crops: List[SquareCrop], Ks: np.ndarray,
                        viewmats: np.ndarray, options: TrackOptions, device: torch.device):
    """``cgha.tracking.photometric`` on the kept frames' images (cropped as they will be written)."""
    config = options.photometric_config
    region = face_region_faces(model, identity, config)
    R = options.resolution

    def frames():
        for t, views in source.frames(keep_idx.tolist()):
            yield t, [crop_resize(rgb, crops[c], R) for c, rgb in enumerate(views)]

    views = prepare_views(model, identity, exp, pose, scale, frames(), Ks, viewmats, region, config)
    if not views:
        raise TooFewFrames(f"{source.label}: no view sees the face within {config.max_view_deg} degrees of frontal: "
                           "nothing to refine against (turn --photometric off)", frames=len(keep_idx), tracked=0,
                           stage="photometric")
    return refine_photometric(model, identity, exp, pose, scale, views, viewmats, region, config, device=device,
                              progress=options.progress)


def _landmark_reprojection(model: FaceModel, identity, exp: np.ndarray, pose: np.ndarray, scale: float,
                           targets: np.ndarray, visible: np.ndarray, Ks: np.ndarray, viewmats: np.ndarray, device):
    """Mean landmark distance (px) of the face model's landmarks at the given parameters to ``targets``
    [T, C, 68, 2] where ``visible`` [T, C, 68]: per frame [T] and per frame and camera [T, C] (NaN: none visible)."""
    with torch.no_grad():
        world = model.landmarks(identity, torch.from_numpy(exp).to(device), torch.from_numpy(pose).float().to(device),
                                scale).double()
        px = project_landmarks(world, torch.as_tensor(Ks, dtype=world.dtype, device=device),
                               torch.as_tensor(viewmats, dtype=world.dtype, device=device))
        _, per_camera, per_frame = reprojection_errors(px, torch.as_tensor(targets, dtype=px.dtype, device=device),
                                                       torch.as_tensor(visible, device=device))
    return per_frame.cpu().numpy(), per_camera.cpu().numpy()


def _arguments(options: TrackOptions, crop_mode: str, mask_mode: str) -> Dict[str, object]:
    return {
        "resolution": options.resolution, "lowres": options.lowres_side, "fov_deg": options.fov_deg,
        "crop": crop_mode, "crop_scale": options.crop_scale, "stride": options.stride,
        "max_frames": options.max_frames, "min_face_fraction": options.min_face_fraction,
        "max_reprojection_px": options.max_reprojection_px, "holdout_frames": options.holdout_frames,
        "holdout_cameras": options.holdout_cameras if not isinstance(options.holdout_cameras, tuple)
        else list(options.holdout_cameras),
        "masks": mask_mode, "mask_region": options.mask_region, "mask_edges": options.mask_edges,
        "backgrounds": str(options.backgrounds) if options.backgrounds else None,
        "min_detection_confidence": options.min_detection_confidence, "oblique_view_deg": options.oblique_view_deg,
        "view_calibration": options.view_calibration, "photometric": options.photometric,
        "device": options.device,
        "calibration": None if options.calibration is None else str(options.calibration),
        "face_model_samples": options.face_model_samples, "face_model_components": options.face_model_components,
    }


def _calibration_report(calibration: Optional[LandmarkCalibration], options: TrackOptions) -> Optional[dict]:
    """What tracking.json records about the landmark calibration used (None: none)."""
    if calibration is None:
        return None
    return {"file": str(options.calibration), "landmarker": calibration.landmarker,
            "identities": calibration.identities.tolist(), "date": calibration.info.get("date")}


def _meta(source, options, model: FaceModel, arguments, frames, cam_ids, crops, Ks, viewmats, scale, identity,
          scale_fitted: bool, splits, az, el, crop_mode, mask_mode) -> Dict[str, object]:
    R = options.resolution
    cameras = {
        "convention": "extrinsic = world-to-camera [3, 4], OpenCV axes; intrinsic in pixels at original_resolution, "
                      "pixel (u, v) centred at (u + 0.5, v + 0.5)",
        "source": "field of view (monocular)" if source.kind == "video" else "calibration file",
        "crop": crop_mode,
        "crops": {cam.id: {"x0": crop.x0, "y0": crop.y0, "side": crop.side, "raw_size": [cam.width, cam.height]}
                  for cam, crop in zip(source.cameras, crops)},
        "intrinsics": {cid: np.asarray(K, dtype=np.float64).round(6).tolist() for cid, K in zip(cam_ids, Ks)},
        "azimuth_deg": [round(a, 3) for a in az],
        "elevation_deg": [round(e, 3) for e in el],
        "angles": "of each camera seen from the head (median frame's pose): 0/0 in front of the face, azimuth "
                  "positive toward the subject's left, elevation positive above",
    }
    if source.kind == "video":
        cameras["fov_deg"] = float(options.fov_deg)
        cameras["fov_across"] = "the longer side of the raw frame"
        cameras["world"] = ("camera fixed in front of the head (y up, looking along -z); world origin = the head's "
                            "mean tracked position")
    return {
        "generator": TRACKER,
        "generator_version": TRACKER_VERSION,
        "arguments": arguments,
        "source": {"kind": source.kind, **source.describe()},
        "face_model": {"name": FACE_MODEL_NAME, "key": model.key, "num_identity": model.num_identity,
                       "identity": [round(float(v), 6) for v in identity.cpu()],
                       "num_vertices": model.num_vertices, "faces": "faces.npy"},
        "expression_names": list(EXPRESSION_NAMES),
        "expression_basis": {"model": EXPRESSION_MODEL, "names": list(EXPRESSION_NAMES)},
        "exp_dim": EXP_DIM,
        "camera_ids": cam_ids,
        "frame_names": frames,
        "original_resolution": R,
        "lowres_resolution": options.lowres_side,
        "num_vertices": model.num_vertices,
        "num_faces": int(model.faces.shape[0]),
        "landmarks": "iBUG-68 (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, outer lips 48-59, inner lips 60-67)",
        "scale": scale,
        "scale_fitted": scale_fitted,
        "masks": mask_mode,
        "mask_region": options.mask_region,
        "mask_edges": options.mask_edges,
        "cameras": cameras,
        "head_pose": "world = R(pose[:3]) @ (scale * x_canonical) + pose[3:]; canonical: face +z, y up, "
                     "x to the subject's left",
        "splits": splits,
        "report": "tracking.json",
    }
