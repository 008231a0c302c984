"""Masks for a subject folder: ``mask_{cam}.jpg`` and ``mask_lowres_{cam}.jpg`` next to every image.

    remove_background("data/nersemble/031", MaskingOptions(workers=8))

Each view's alpha comes from ``cgha.preprocess.masks.subtract_background`` against the camera's plate
``background/image_{cam}.jpg`` or, when given, from a user's learned matting model (``cgha.preprocess.matting``).
Views whose two mask files exist are skipped, so an interrupted run resumes; ``force`` redoes them all.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from cgha.dataset.layout import SubjectLayout
from cgha.errors import DataError

from .calibration import normalize_serial
from .crop import resize_square
from .files import JPEG_QUALITY, background_plate_path, complete, jpeg_size, write_jpeg
from .masks import MaskParams, subtract_background
from .matting import MattingFn, apply_matting

__all__ = ["MaskingOptions", "MaskingResult", "remove_background", "read_rgb_uint8"]

DEFAULT_LOWRES = 256


@dataclass
class MaskingOptions:
    """Settings of remove_background.py.

    Attributes:
        cameras: cameras to mask (None = every camera with images).
        lowres: side of mask_lowres; None = the size of the view's image_lowres (256 when there is none).
        params: background-subtraction settings (unused with a matting model).
        matting: a user's matting callable, or None for background subtraction.
        workers: parallel views (0 = number of CPUs; a matting model gets 1 unless set, GPU models are rarely
            thread-safe).
        force: recompute existing masks; progress: show a tqdm bar.
    """

    cameras: Optional[Sequence[str]] = None
    lowres: Optional[int] = None
    params: MaskParams = field(default_factory=MaskParams)
    matting: Optional[MattingFn] = None
    workers: int = 0
    force: bool = False
    progress: bool = True
    jpeg_quality: int = JPEG_QUALITY


@dataclass
class MaskingResult:
    written: int = 0
    skipped: int = 0


def read_rgb_uint8(path: Path) -> np.ndarray:
    """RGB uint8 [H, W, 3]; DataError naming the file when it is missing or cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: missing or not a decodable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def remove_background(subject_dir, options: Optional[MaskingOptions] = None) -> MaskingResult:
    """Write the masks of every view of a subject folder (see module docstring)."""
    options = options or MaskingOptions()
    if options.workers < 0 or (options.lowres is not None and options.lowres < 1):
        raise DataError(f"--workers must be >= 0 and --lowres >= 1, got {options.workers} and {options.lowres}")
    layout = SubjectLayout(Path(subject_dir))
    frames = layout.frames()
    views = _views(layout, frames, options.cameras)
    cameras = list(dict.fromkeys(camera for _, camera in views))
    missing = [camera for camera in cameras if not background_plate_path(layout.root, camera).is_file()]
    if missing:
        raise DataError(f"no background plate for camera(s) {missing}: expected "
                        f"{background_plate_path(layout.root, missing[0])} (written by preprocess_nersemble.py "
                        "from the BACKGROUND sequence)")
    plates = {camera: read_rgb_uint8(background_plate_path(layout.root, camera)) for camera in cameras}

    todo = [view for view in views if options.force or not _done(layout, *view)]
    result = MaskingResult(written=len(todo), skipped=len(views) - len(todo))
    default_workers = 1 if options.matting is not None else (os.cpu_count() or 1)
    workers = max(1, options.workers or default_workers)
    bar = tqdm(total=len(views), initial=result.skipped, desc=f"masks {layout.root.name}", unit="view",
               disable=not options.progress)
    lock = threading.Lock()
    stop = threading.Event()  # set by the first failing view so the others stop early

    def run(view: Tuple[str, str]) -> None:
        if stop.is_set():
            return
        try:
            _mask_view(layout, *view, plates[view[1]], options)
        except BaseException:
            stop.set()
            raise
        with lock:
            bar.update(1)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(run, todo):
                pass
    finally:
        bar.close()
    return result


def _views(layout: SubjectLayout, frames: List[str], cameras: Optional[Sequence[str]]) -> List[Tuple[str, str]]:
    """(frame, camera) pairs that have an image; DataError for a requested camera that has none anywhere."""
    present: Dict[str, List[str]] = {frame: layout.cameras_in(frame) for frame in frames}
    found = sorted({camera for names in present.values() for camera in names})
    wanted = found if cameras is None else list(dict.fromkeys(normalize_serial(c) for c in cameras))
    unknown = [camera for camera in wanted if camera not in found]
    if unknown:
        raise DataError(f"no images of camera(s) {unknown} under {layout.root / 'images'} (cameras: {found})")
    return [(frame, camera) for frame in frames for camera in wanted if camera in present[frame]]


def _done(layout: SubjectLayout, frame: str, camera: str) -> bool:
    return complete(layout.mask(frame, camera)) and complete(layout.mask(frame, camera, lowres=True))


def _mask_view(layout: SubjectLayout, frame: str, camera: str, plate: np.ndarray, options: MaskingOptions) -> None:
    image_path = layout.image(frame, camera)
    image = read_rgb_uint8(image_path)
    if plate.shape != image.shape:
        raise DataError(f"{image_path} is {image.shape[1]}x{image.shape[0]} but its background plate "
                        f"{background_plate_path(layout.root, camera)} is {plate.shape[1]}x{plate.shape[0]}; "
                        "rerun preprocess_nersemble.py with --force")
    if options.matting is not None:
        alpha = apply_matting(options.matting, image, plate)
    else:
        alpha = subtract_background(image, plate, options.params)
    mask = (alpha * 255.0 + 0.5).astype(np.uint8)
    lowres_size = jpeg_size(layout.image(frame, camera, lowres=True))
    side = options.lowres or (lowres_size[0] if lowres_size else DEFAULT_LOWRES)
    write_jpeg(layout.mask(frame, camera, lowres=True), resize_square(mask, side), options.jpeg_quality)
    write_jpeg(layout.mask(frame, camera), mask, options.jpeg_quality)
