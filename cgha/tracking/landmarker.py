"""2D facial landmarks from MediaPipe's face mesh: 478 points per face and the 68 iBUG points mapped from them.

The model (``mediapipe.solutions.face_mesh``, 468 mesh points + 10 iris points with ``refine_landmarks``) ships
inside the ``mediapipe`` wheel: nothing is downloaded at run time.

Install (the optional extra ``track``; the core install has no MediaPipe)::

    pip install -e .[track]                     # MediaPipe's runtime dependencies, without any OpenCV package
    pip install --no-deps mediapipe==0.10.14    # MediaPipe itself, without its opencv-contrib-python requirement

MediaPipe 0.10.14 declares ``opencv-contrib-python``, which installs the same ``cv2`` module as our core dependency
``opencv-python-headless``; two distributions writing one folder leave whichever came last, and the GUI build needs
libGL, which a server may lack. MediaPipe's Python solutions only use core ``cv2`` functions (drawing utilities),
all present in the headless build, so ``--no-deps`` keeps exactly one OpenCV (headless) and the extra lists the
dependencies MediaPipe does import (absl-py, attrs, flatbuffers, matplotlib, protobuf 4); jax, jaxlib and
sounddevice, also declared, serve model-maker and audio tasks that the face mesh never imports (``pip check``
lists these four as missing; that is expected). Why this version: 0.10.14 is the last release whose metadata
leaves numpy unpinned, and it runs on numpy 2 (verified with numpy 2.4 and opencv-python-headless 5.1, Python
3.11); 0.10.15-0.10.21 also ship the legacy ``solutions`` but declare ``numpy<2`` (which would downgrade our numpy
for no gain: 0.10.21 runs on numpy 2.4 as well) and still declare opencv-contrib-python, and 0.10.30 and later drop
``solutions`` and their bundled models. Its wheels cover CPython 3.10-3.12 (none for 3.13).

Detection runs in static-image mode, one image at a time: every image is detected afresh, so a lost or wrong frame
never steers the next one and the result does not depend on the order of the images (tracking mode would skip the
face detector on most frames, but carries a face crop over from frame to frame). Measured on 512^2 renders of the
synthetic head on one CPU core: 8 ms per image (the graph takes ~0.6 s to build, once per ``FaceMeshDetector``).

Pixel convention: ``x = u * W``, ``y = v * H`` from MediaPipe's normalised coordinates, the convention of
``cgha.utils.cameras.project_points`` (pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Iterable

import numpy as np

__all__ = ["LandmarkResult", "IBUG68_FROM_MEDIAPIPE", "IBUG68_GROUPS", "MEDIAPIPE_VERSION", "INSTALL_HINT",
           "NUM_POINTS", "detect_landmarks", "FaceMeshDetector", "import_mediapipe"]

MEDIAPIPE_VERSION = "0.10.14"
INSTALL_HINT = (f"pip install -e .[track] && pip install --no-deps mediapipe=={MEDIAPIPE_VERSION} "
                "(see cgha/tracking/landmarker.py for why --no-deps)")
NUM_POINTS = 478

# The 68 iBUG landmarks as face-mesh vertex indices, in iBUG order. "Right"/"left" are the subject's: iBUG starts
# at the subject's right (image left in a frontal view), as does MediaPipe's vertex 33 (right eye, outer corner).
# Brows, nose, eyes and outer lips follow the definitions of the points (brow ends, subnasale, eye corners, ...).
# Where a definition only says "somewhere along this contour" (the jaw line, the inner lips) the vertex along
# MediaPipe's contour was chosen to match the landmarks of our own face model (cgha/synthetic/landmarks.py: its jaw
# starts below the ear, lower than the classic iBUG point 0 at the tragus), measured on 512^2 renders of three
# synthetic identities: mean offsets fell from 18 to 8 px on the jaw and from 4.5 to 3.7 px on the inner lips
# (frontal views, |azimuth| <= 15 deg). What remains (jaw ~8, brows ~13, nose ~6, eyes ~3, lips ~3-4 px) is
# where MediaPipe's mesh prior and the synthetic head disagree: the synthetic brows sit more medially and its
# nostril base higher than MediaPipe places them; these keep their definitions rather than being fitted to one
# synthetic head. iBUG's jaw is a silhouette in profile views; these are fixed vertices of MediaPipe's face oval,
# which match it in frontal views and slide inward of the silhouette on the side turned away.
IBUG68_FROM_MEDIAPIPE = np.array([
    # jaw 0-16: right ear -> chin (152) -> left ear, along MediaPipe's face oval
    234, 93, 132, 58, 136, 150, 149, 148, 152, 377, 378, 379, 365, 288, 361, 323, 454,
    # brows 17-21 (right, outer -> inner), 22-26 (left, inner -> outer): the upper brow edge, as iBUG annotates it
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30 (top -> tip), nostril base 31-35 (right -> left; 33 is the subnasale)
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # right eye 36-41 (outer corner, upper lid x2, inner corner, lower lid x2), left eye 42-47 (inner corner first)
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59 (right corner, upper lip to the left corner, lower lip back)
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    # inner lips 60-67 (right inner corner, upper inner lip, left inner corner, lower inner lip)
    78, 81, 13, 311, 308, 402, 14, 178,
], dtype=np.int64)

IBUG68_GROUPS = {
    "jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36), "eyes": slice(36, 48),
    "outer_lips": slice(48, 60), "inner_lips": slice(60, 68),
}

# The face detector sees a 128^2 downscale of the whole image and the mesh model a 192^2 crop of the face: below
# this side a face is upscaled first (bilinear), which costs little and lets the crop keep sub-pixel detail.
_MIN_SIDE = 256


@dataclasses.dataclass
class LandmarkResult:
    """Landmarks of N images (one face each: the most confident).

    Attributes:
        points_478: [N, 478, 2] float32 pixels of the input images; NaN where no face was found.
        ibug68: [N, 68, 2] float32 pixels, ``points_478[:, IBUG68_FROM_MEDIAPIPE]``; NaN where no face was found.
        found: [N] bool.
        score: [N] float32 face-detection confidence in [0, 1] of the detection the mesh was fitted in; 0 where
            no face was found.
        image_sizes: [N, 2] int64 (height, width) of each input image.
    """

    points_478: np.ndarray
    ibug68: np.ndarray
    found: np.ndarray
    score: np.ndarray
    image_sizes: np.ndarray

    def __len__(self) -> int:
        return int(self.found.shape[0])


def import_mediapipe():
    """The ``mediapipe`` module, or an ImportError naming the command that installs it."""
    try:
        import mediapipe
        from mediapipe.python.solutions import face_mesh  # noqa: F401  (fails on a broken install, not later)
    except ImportError as exc:
        raise ImportError(f"face tracking needs mediapipe=={MEDIAPIPE_VERSION} (not installed, or broken: {exc}); "
                          f"install it with: {INSTALL_HINT}") from exc
    # MediaPipe imports under protobuf 5+, then fails to parse its own graphs when the first one is built (measured:
    # 5.29 "Failed to parse: node {...}", 7.x an AttributeError): say so now, naming the fix.
    from google.protobuf import __version__ as protobuf_version

    if int(protobuf_version.split(".")[0]) != 4:
        raise ImportError(f"mediapipe=={MEDIAPIPE_VERSION} needs protobuf 4 (>=4.25.3,<5), found protobuf "
                          f"{protobuf_version}; install it with: pip install 'protobuf>=4.25.3,<5'")
    return mediapipe


def _as_rgb_uint8(image, index: int | None = None) -> np.ndarray:
    """``image`` as a C-contiguous [H, W, 3] uint8 array, or a ValueError naming image ``index`` of a batch."""
    name = "image" if index is None else f"image {index}"
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise ValueError(f"{name}: expected [H, W, 3] uint8 RGB, got shape {a.shape} dtype {a.dtype}")
    if min(a.shape[:2]) < 16:
        raise ValueError(f"{name}: {a.shape[1]}x{a.shape[0]} is too small for face detection (< 16 px)")
    return np.ascontiguousarray(a)


def _iter_images(images) -> Iterable:
    """``images`` as an iterable of images; an array batch is checked whole here, before any model is loaded."""
    if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise ValueError(f"images: expected [N, H, W, 3] uint8 RGB or an iterable of [H, W, 3], got "
                         f"{type(images).__name__}")
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            raise ValueError(f"images: expected [N, H, W, 3] or an iterable of [H, W, 3]; got one image of shape "
                             f"{images.shape} (wrap it: images[None])")
        if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images: expected [N, H, W, 3] uint8 RGB, got shape {images.shape} dtype {images.dtype}")
    return images


class FaceMeshDetector:
    """MediaPipe's face mesh in static-image mode, returning the face detection score beside the mesh.

    A context manager (the MediaPipe graph holds native resources); ``detect`` handles one image.

    Args:
        min_detection_confidence: face-detector threshold (MediaPipe's default 0.5).
        min_side: images whose shorter side is smaller are upscaled to it first (bilinear; 0: never); the points
            are returned in the input's pixels.
    Raises:
        ImportError: mediapipe is missing or broken, or protobuf is not 4.x (the message names the fix).
        ValueError: a bad argument.
    """

    def __init__(self, min_detection_confidence: float = 0.5, min_side: int = _MIN_SIDE):
        if not 0.0 <= min_detection_confidence <= 1.0:
            raise ValueError(f"min_detection_confidence must be in [0, 1], got {min_detection_confidence}")
        if isinstance(min_side, bool) or not isinstance(min_side, (int, np.integer)) or min_side < 0:
            raise ValueError(f"min_side must be an integer >= 0 (0: never upscale), got {min_side!r}")
        mp = import_mediapipe()
        from mediapipe.python.solution_base import SolutionBase

        fm = mp.solutions.face_mesh
        self.min_side = int(min_side)
        # FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) asks its graph only for the
        # landmarks; the same graph also emits the detections it cropped from, whose score is the only per-face
        # confidence the legacy solution has. The graph path is private to the pinned MediaPipe version.
        self._graph = SolutionBase(
            binary_graph_path=fm._BINARYPB_FILE_PATH,
            side_inputs={"num_faces": 1, "with_attention": True, "use_prev_landmarks": False},
            calculator_params={
                "facedetectionshortrangecpu__facedetectionshortrange__facedetection__"
                "TensorsToDetectionsCalculator.min_score_thresh": min_detection_confidence,
                "facelandmarkcpu__ThresholdingCalculator.threshold": 0.5,
            },
            outputs=["multi_face_landmarks", "face_detections"])

    def close(self) -> None:
        self._graph.close()

    def __enter__(self) -> "FaceMeshDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def detect(self, image: np.ndarray) -> tuple[np.ndarray | None, float]:
        """One [H, W, 3] uint8 RGB image -> ([478, 2] float32 pixels or None, detection score)."""
        image = _as_rgb_uint8(image)
        H, W = image.shape[:2]
        work = image
        if min(H, W) < self.min_side:
            import cv2

            f = self.min_side / min(H, W)
            work = cv2.resize(image, (int(round(W * f)), int(round(H * f))), interpolation=cv2.INTER_LINEAR)
        with warnings.catch_warnings():
            # protobuf 4 flags an API MediaPipe 0.10.14 calls on every frame; nothing for the caller to act on.
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            out = self._graph.process({"image": work})
        faces = out.multi_face_landmarks
        if not faces:
            return None, 0.0
        lm = faces[0].landmark
        if len(lm) != NUM_POINTS:
            raise RuntimeError(f"mediapipe returned {len(lm)} face-mesh points, expected {NUM_POINTS} "
                               f"(mediapipe=={MEDIAPIPE_VERSION} with refined landmarks is required)")
        # Normalised coordinates are relative to the image the graph saw, so they hold for the original size too.
        pts = np.array([(p.x * W, p.y * H) for p in lm], dtype=np.float32)
        dets = out.face_detections
        score = float(dets[0].score[0]) if dets and dets[0].score else 0.0
        return pts, score


def detect_landmarks(images, min_detection_confidence: float = 0.5, min_side: int = _MIN_SIDE) -> LandmarkResult:
    """Detect one face per image and its 478 face-mesh points and 68 iBUG points.

    Args:
        images: [N, H, W, 3] uint8 RGB, or an iterable of [H, W, 3] uint8 RGB images (sizes may differ).
        min_detection_confidence: face-detector threshold in [0, 1].
        min_side: images with a shorter side below this are upscaled to it before detection (results are in the
            input's pixels).
    Returns:
        LandmarkResult with N entries; images without a face have ``found`` False and NaN points.
    Raises:
        ImportError: mediapipe is missing (the message names the install command).
        ValueError: an image that is not [H, W, 3] uint8.
    """
    images = _iter_images(images)
    points, found, score, sizes = [], [], [], []
    with FaceMeshDetector(min_detection_confidence, min_side) as detector:
        for i, image in enumerate(images):
            a = _as_rgb_uint8(image, i)
            pts, s = detector.detect(a)
            found.append(pts is not None)
            points.append(pts if pts is not None else np.full((NUM_POINTS, 2), np.nan, dtype=np.float32))
            score.append(s)
            sizes.append(a.shape[:2])
    n = len(points)
    p478 = np.stack(points) if n else np.zeros((0, NUM_POINTS, 2), dtype=np.float32)
    return LandmarkResult(
        points_478=p478,
        ibug68=p478[:, IBUG68_FROM_MEDIAPIPE],
        found=np.array(found, dtype=bool),
        score=np.array(score, dtype=np.float32),
        image_sizes=np.array(sizes, dtype=np.int64).reshape(n, 2),
    )
