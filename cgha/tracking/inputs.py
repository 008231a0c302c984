"""The tracker's inputs, opened and checked before anything is computed: a video (one camera) or a folder of
calibrated multi-view frames ``DIR/<frame>/<camera>.{jpg,jpeg,png}`` with its camera file.

Each source has the same face for the pipeline (``cgha.tracking.pipeline``): ``cameras`` (``Camera``), frame
``names``, ``frames(positions)`` yielding the RGB images of each wanted frame, ``describe()`` for the report and
``image_path()`` for messages. Every error is a ``DataError`` naming the file.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from cgha.errors import DataError
from cgha.preprocess.files import jpeg_size
from cgha.preprocess.video import VideoReader
from cgha.utils.cameras import look_at_world_to_camera

__all__ = ["Camera", "read_cameras_json", "read_image", "VideoSource", "ImageSetSource", "IMAGE_SUFFIXES",
           "MONOCULAR_CAMERA", "FRAME_OR_CAMERA_ID"]

log = logging.getLogger(__name__)

MONOCULAR_CAMERA = "cam00"
MONOCULAR_DISTANCE = 1.0  # camera to world origin before the world is re-centred on the head
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
FRAME_OR_CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # they become parts of file names


@dataclasses.dataclass
class Camera:
    """One camera of the input: id, intrinsics ``K`` [3, 3] in pixels of its raw images, world-to-camera
    ``viewmat`` [4, 4] (OpenCV axes), raw image ``width`` x ``height``."""

    id: str
    K: np.ndarray
    viewmat: np.ndarray
    width: int
    height: int


def _check_camera_id(camera: str, where: str) -> None:
    if not isinstance(camera, str) or not FRAME_OR_CAMERA_ID.match(camera) or camera.startswith("lowres_"):
        raise DataError(f"{where}: camera id {camera!r} must be letters, digits, '_', '-' or '.', start with a letter "
                        "or digit and not with 'lowres_' (it becomes part of file names such as image_<id>.jpg)")


def _matrix(value, shapes: Sequence[Tuple[int, int]], where: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where} must be a matrix of numbers, got {value!r}") from None
    if array.shape not in shapes:
        wanted = " or ".join("x".join(map(str, s)) for s in shapes)
        raise DataError(f"{where} must be {wanted}, got shape {list(array.shape)}")
    if not np.isfinite(array).all():
        raise DataError(f"{where} has NaN or infinite entries")
    return array


def read_cameras_json(path) -> List[Camera]:
    """Cameras of a calibrated rig from a JSON file (docs/tracking.md, "The camera file")::

        {"cameras": {"<id>": {"K": 3x3 pixels of that camera's images,
                              "world_to_camera": 4x4 (or 3x4), OpenCV axes (x right, y down, z forward),
                              "image_size": [width, height]}, ...}}

    Pixel (u, v) covers [u, u+1) x [v, v+1) (centre at +0.5), as everywhere in this project. Returns the cameras
    sorted by id; DataError naming the file and the camera for anything malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"camera file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: not a readable JSON file ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), dict) or not data["cameras"]:
        raise DataError(f'{path}: expected {{"cameras": {{"<id>": {{"K": ..., "world_to_camera": ..., '
                        f'"image_size": [w, h]}}, ...}}}} with at least one camera')
    cameras = []
    for camera, entry in sorted(data["cameras"].items()):
        where = f"{path}: camera {camera!r}"
        _check_camera_id(camera, f"{path}")
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object with K, world_to_camera and image_size")
        missing = [key for key in ("K", "world_to_camera", "image_size") if key not in entry]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)} (it has: {', '.join(entry) or 'nothing'})")
        K = _matrix(entry["K"], [(3, 3)], f"{where} K")
        if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0.0, 0.0, 1.0]) or K[1, 0] != 0:
            raise DataError(f"{where} K is not a pinhole matrix [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0")
        E = _matrix(entry["world_to_camera"], [(4, 4), (3, 4)], f"{where} world_to_camera")
        if E.shape == (4, 4) and not np.allclose(E[3], [0.0, 0.0, 0.0, 1.0]):
            raise DataError(f"{where} world_to_camera: the last row must be 0 0 0 1")
        rotation = E[:3, :3]
        if not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-4) or np.linalg.det(rotation) <= 0:
            raise DataError(f"{where} world_to_camera[:3, :3] is not a rotation matrix (orthonormal, det +1)")
        size = entry["image_size"]
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise DataError(f"{where} image_size must be [width, height] in pixels, got {size!r}")
        width, height = int(size[0]), int(size[1])
        if not (0.0 <= K[0, 2] <= width and 0.0 <= K[1, 2] <= height):
            raise DataError(f"{where}: principal point ({K[0, 2]:.1f}, {K[1, 2]:.1f}) lies outside its {width}x{height} "
                            "images: K must be in pixels of the images given")
        viewmat = np.eye(4)
        viewmat[:3] = E[:3]
        cameras.append(Camera(camera, K, viewmat, width, height))
    return cameras


def read_image(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: cannot decode the image (unreadable, corrupt or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _header_size(path: Path) -> Optional[Tuple[int, int]]:
    """(width, height) from a JPEG or PNG header without decoding; None when the header cannot be read."""
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return jpeg_size(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _subsample(count: int, stride: int, max_frames: Optional[int]) -> List[int]:
    picks = list(range(0, count, stride))
    return picks[:max_frames] if max_frames is not None else picks


class VideoSource:
    """One video = one camera; frames named by their index in the video (zero-padded)."""

    kind = "video"

    def __init__(self, path, stride: int, max_frames: Optional[int], fov_deg: float):
        self.path = Path(path)
        with VideoReader(self.path) as reader:
            self.width, self.height, count = reader.width, reader.height, reader.frame_count
        self.indices = _subsample(count, stride, max_frames)
        digits = max(4, len(str(self.indices[-1])))
        self.names = [f"{i:0{digits}d}" for i in self.indices]
        focal = 0.5 * max(self.width, self.height) / math.tan(math.radians(fov_deg) / 2.0)
        K = np.array([[focal, 0.0, self.width / 2.0], [0.0, focal, self.height / 2.0], [0.0, 0.0, 1.0]])
        viewmat = look_at_world_to_camera(np.array([0.0, 0.0, MONOCULAR_DISTANCE]), np.zeros(3),
                                          np.array([0.0, 1.0, 0.0]))
        self.cameras = [Camera(MONOCULAR_CAMERA, K, np.asarray(viewmat, dtype=np.float64), self.width, self.height)]
        self.fov_deg = float(fov_deg)
        self.label = str(self.path)

    def frames(self, positions: Sequence[int], tolerate_end: bool = False) -> Iterator[Tuple[int, List[np.ndarray]]]:
        """(position, [RGB uint8 [H, W, 3]]) for the wanted positions into ``self.names``, in order. With
        ``tolerate_end`` a video shorter than its container announced ends the iteration (with a warning) instead
        of raising; the missing frames are then removed from ``self.names``."""
        by_index = {self.indices[p]: p for p in positions}
        done = 0
        with VideoReader(self.path) as reader:
            frames = reader.frames(sorted(by_index))
            while True:
                try:
                    item = next(frames, None)
                except DataError:
                    if not tolerate_end or done == 0:
                        raise
                    log.warning("%s: the video ends after %d of the %d frames its container announces (for "
                                "these settings); tracking those", self.path, done, len(by_index))
                    self.indices, self.names = self.indices[:done], self.names[:done]
                    return
                if item is None:
                    return
                index, rgb = item
                if rgb.shape[:2] != (self.height, self.width):
                    raise DataError(f"{self.path}: frame {index} is {rgb.shape[1]}x{rgb.shape[0]} but the video is "
                                    f"{self.width}x{self.height} (inconsistent resolutions)")
                done += 1
                yield by_index[index], [rgb]

    def describe(self) -> Dict[str, object]:
        return {"video": str(self.path), "frame_indices": [self.indices[0], self.indices[-1]],
                "raw_size": [self.width, self.height], "fov_deg": self.fov_deg,
                "fov_across": "the longer side of the raw frame"}

    def image_path(self, position: int, camera: int) -> str:
        return f"{self.path} (frame {self.indices[position]})"


class ImageSetSource:
    """``DIR/<frame>/<camera>.{jpg,jpeg,png}`` with a camera file that names exactly the cameras of every frame."""

    kind = "images"

    def __init__(self, images_dir, cameras_json, stride: int, max_frames: Optional[int]):
        self.root = Path(images_dir)
        self.cameras_json = Path(cameras_json)
        if not self.root.is_dir():
            raise DataError(f"image folder not found: {self.root}")
        self.cameras = read_cameras_json(self.cameras_json)
        ids = [c.id for c in self.cameras]
        frames = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not frames:
            loose = sorted(p.name for p in self.root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:3]
            hint = f" (found images directly in it: {', '.join(loose)}; expected DIR/<frame>/<camera>.jpg)" if loose else ""
            raise DataError(f"{self.root}: no frame folders; expected {self.root}/<frame>/<camera>.jpg{hint}")
        for frame in frames:
            if not FRAME_OR_CAMERA_ID.match(frame):
                raise DataError(f"{self.root / frame}: frame folder names must be letters, digits, '_', '-' or '.'")
        self.paths: List[Dict[str, Path]] = []
        for frame in frames:
            found: Dict[str, Path] = {}
            for path in sorted((self.root / frame).iterdir()):
                if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if path.stem in found:
                    raise DataError(f"{path}: camera {path.stem!r} has two images in {self.root / frame} "
                                    f"({found[path.stem].name} and {path.name})")
                found[path.stem] = path
            unknown = sorted(set(found) - set(ids))
            if unknown:
                raise DataError(f"{found[unknown[0]]}: camera {unknown[0]!r} is not in {self.cameras_json} "
                                f"(the camera file does not match the frames; it has {', '.join(ids)})")
            missing = [c for c in ids if c not in found]
            if missing:
                raise DataError(f"{self.root / frame}: no image of camera(s) {', '.join(missing)} listed in "
                                f"{self.cameras_json} (the camera file does not match the frames; every frame "
                                f"folder needs <camera>.jpg/.png for every camera)")
            self.paths.append(found)
        picks = _subsample(len(frames), stride, max_frames)
        self.names = [frames[i] for i in picks]
        self.paths = [self.paths[i] for i in picks]
        self.label = str(self.root)
        for found in self.paths:  # sizes from the file headers: a mismatch fails now, not after the landmarks
            for camera in self.cameras:
                self._check_size(found[camera.id], camera, _header_size(found[camera.id]))

    def _check_size(self, path: Path, camera: Camera, size: Optional[Tuple[int, int]]) -> None:
        if size is None:
            raise DataError(f"{path}: not a readable JPEG or PNG image (no image header)")
        if size != (camera.width, camera.height):
            raise DataError(f"{path} is {size[0]}x{size[1]} but {self.cameras_json} gives camera {camera.id!r} "
                            f"image_size [{camera.width}, {camera.height}] (inconsistent resolutions: K must be in "
                            "pixels of these images)")

    def frames(self, positions: Sequence[int], tolerate_end: bool = False) -> Iterator[Tuple[int, List[np.ndarray]]]:
        for p in positions:
            views = []
            for camera in self.cameras:
                path = self.paths[p][camera.id]
                rgb = read_image(path)
                self._check_size(path, camera, (rgb.shape[1], rgb.shape[0]))
                views.append(rgb)
            yield p, views

    def describe(self) -> Dict[str, object]:
        return {"images": str(self.root), "cameras_file": str(self.cameras_json),
                "raw_sizes": {c.id: [c.width, c.height] for c in self.cameras}}

    def image_path(self, position: int, camera: int) -> str:
        return str(self.paths[position][self.cameras[camera].id])
