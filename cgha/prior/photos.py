"""A user's photo(s) of one person -> a tracked subject folder the one-shot fit reads (cgha.tracking's pipeline:
MediaPipe landmarks, the face-model fit, masks; nothing downloaded).

The photos become the frames of one uncalibrated camera (field of view DEFAULT_FOV_DEG across the longer side,
principal point at the centre, one unit in front of the world origin), so they need not show one moment: the
tracker fits each photo's own pose and expression and one identity for all of them.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import List, Sequence

import numpy as np

from cgha.errors import DataError
from cgha.tracking.inputs import IMAGE_SUFFIXES, MONOCULAR_CAMERA
from cgha.tracking.pipeline import DEFAULT_FOV_DEG, TooFewFrames, TrackOptions, track_images
from cgha.utils.cameras import look_at_world_to_camera

# Below this many pixels on the shorter side the face is too small for the landmarker and the fit to be worth
# anything (the face crop would be a few dozen pixels upsampled to the prior's resolution).
MIN_IMAGE_SIDE = 64


def photo_size(path: Path) -> tuple:
    """(width, height) of a readable image; DataError naming the file otherwise."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"{path}: cannot decode the image (missing, corrupt or not a JPEG/PNG)")
    return int(image.shape[1]), int(image.shape[0])


def list_photos(folder: Path) -> List[Path]:
    """The JPEG/PNG files of a folder, sorted; DataError when there are none."""
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not photos:
        raise DataError(f"{folder}: no .jpg/.jpeg/.png images")
    return photos


def check_photos(photos: Sequence[Path]) -> tuple:
    """(width, height) shared by every photo; DataError naming the first photo that is unreadable, too small or of
    another size than the first."""
    sizes = [photo_size(Path(p)) for p in photos]
    for path, (width, height) in zip(photos, sizes):
        if min(width, height) < MIN_IMAGE_SIDE:
            raise DataError(f"{path} is {width}x{height} pixels: too small for a face to be found and fitted (at "
                            f"least {MIN_IMAGE_SIDE} pixels on the shorter side)")
        if (width, height) != sizes[0]:
            raise DataError(f"{path} is {width}x{height} but {photos[0]} is {sizes[0][0]}x{sizes[0][1]}: the photos "
                            f"of one fit share one camera, so they must have one size (crop or resize them)")
    return sizes[0]


def track_photos(photos: Sequence[Path], work_dir: Path, options: TrackOptions) -> Path:
    """Track `photos` (one person) into the subject folder {work_dir}/subject with `options` (its resolution is
    the subject's); returns that folder. DataError naming the photo(s) when no face is found or fitted."""
    photos = [Path(p) for p in photos]
    width, height = check_photos(photos)
    frames_dir = work_dir / "photos"
    if frames_dir.exists():
        shutil.rmtree(frames_dir)
    for index, photo in enumerate(photos):
        folder = frames_dir / f"{index:04d}"
        folder.mkdir(parents=True)
        shutil.copyfile(photo, folder / f"{MONOCULAR_CAMERA}{photo.suffix.lower()}")
    focal = 0.5 * max(width, height) / math.tan(math.radians(DEFAULT_FOV_DEG) / 2.0)
    K = [[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]]
    viewmat = np.asarray(look_at_world_to_camera(np.array([0.0, 0.0, 1.0]), np.zeros(3), np.array([0.0, 1.0, 0.0])))
    cameras = work_dir / "cameras.json"
    cameras.write_text(json.dumps({"cameras": {MONOCULAR_CAMERA: {"K": K, "world_to_camera": viewmat.tolist(),
                                                                  "image_size": [width, height]}}}))
    try:
        result = track_images(frames_dir, cameras, work_dir / "subject", options)
    except TooFewFrames as error:
        what = str(photos[0]) if len(photos) == 1 else f"{len(photos)} photos in {photos[0].parent}"
        raise DataError(f"{what}: no face found or fitted ({error.tracked} of {error.frames} photos have one; "
                        f"a visible, frontal, well-lit face is needed)") from None
    return result.out_dir
