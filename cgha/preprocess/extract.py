"""Raw NeRSemble capture -> our subject layout: frames, low-res copies, cameras, visibility masks, background plates.

    result = preprocess_subject("raw/", "031", "data/nersemble", PreprocessOptions(size=2048, stride=3))

writes ``data/nersemble/031/`` (docs/conventions.md layout; docs/preprocessing.md for the details)::

    images/{frame}/image_{serial}.jpg, image_lowres_{serial}.jpg   (+ visible_[lowres_]{serial}.jpg when the
                                                                      crop reaches outside the raw frame)
    cameras/{frame}/camera_{serial}.npz    intrinsic [3, 3] (pixels at --size), extrinsic [3, 4] world-to-camera
    background/image_{serial}.jpg          the camera's empty-studio plate, cropped and resized like the frames
    preprocess.json                        settings and the frame plan (cgha/preprocess/plan.py)

Work is split by camera (each camera's videos are decoded sequentially by one worker thread; OpenCV decodes,
resizes and encodes without holding the GIL). A view whose files all exist is skipped, so an interrupted run resumes
where it stopped. Rewriting a view deletes its mask files, which were derived from the old image. A forced run
with other settings than the previous one (preprocess.json) first removes images/, cameras/ and background/.
"""
from __future__ import annotations

import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

from cgha.dataset.layout import SubjectLayout
from cgha.errors import DataError

from .calibration import Calibration, normalize_serial, read_calibration
from .crop import SquareCrop, centred_square_crop, crop_resize, crop_resize_intrinsics, resize_square, visible_mask
from .files import JPEG_QUALITY, background_plate_path, complete, write_jpeg, write_npz
from .plan import MANIFEST_NAME, FrameSource, check_manifest, plan_frames, read_manifest, write_manifest
from .raw_layout import BACKGROUND, RawSubject
from .video import VideoReader, read_background_plate

__all__ = ["PreprocessOptions", "PreprocessResult", "preprocess_subject"]

_MAX_LISTED = 6


@dataclass
class PreprocessOptions:
    """Settings of one preprocessing run (the CLI flags of preprocess/preprocess_nersemble.py).

    Attributes:
        sequences: sequences in output order; None = every sequence except BACKGROUND, sorted by name.
        cameras: camera serials; None = every calibrated camera with a video in every chosen sequence.
        size: output side in pixels (intrinsics are written at this size).
        lowres: side of the image_lowres copies; None = min(256, size). Never larger than `size`.
        crop_size: side of the centred square crop in raw pixels; None = the shorter raw side.
        crop_offset: (dx, dy) shift of the crop in raw pixels.
        stride: keep source frames 0, stride, 2 * stride, ...; max_frames: at most this many per sequence.
        background: write background plates from the BACKGROUND sequence (needed by remove_background.py).
        calibration: camera_params.json to use instead of the one found in the raw layout.
        workers: parallel cameras (0 = one per camera, at most the number of CPUs).
        force: redo every view and plate (and accept other settings than a previous run's).
        progress: show a tqdm bar.
    """

    sequences: Optional[Sequence[str]] = None
    cameras: Optional[Sequence[str]] = None
    size: int = 2048
    lowres: Optional[int] = None
    crop_size: Optional[int] = None
    crop_offset: Tuple[int, int] = (0, 0)
    stride: int = 1
    max_frames: Optional[int] = None
    background: bool = True
    calibration: Optional[Path] = None
    workers: int = 0
    force: bool = False
    progress: bool = True
    jpeg_quality: int = JPEG_QUALITY


@dataclass
class PreprocessResult:
    """What a run did: the subject folder, its frames and cameras, views written and views found complete."""

    out_dir: Path
    frames: List[FrameSource]
    cameras: List[str]
    written: int = 0
    skipped: int = 0
    plates: int = 0
    crops: Dict[str, SquareCrop] = field(default_factory=dict)


@dataclass(frozen=True)
class _Camera:
    """Everything one camera's worker needs."""

    serial: str
    videos: Dict[str, Path]  # sequence -> video
    width: int
    height: int
    crop: SquareCrop
    intrinsic: np.ndarray  # [3, 3] pixels at size
    extrinsic: np.ndarray  # [3, 4]
    background: Optional[Path]


def preprocess_subject(raw_root, subject: str, out_root, options: Optional[PreprocessOptions] = None
                       ) -> PreprocessResult:
    """Preprocess one participant into ``{out_root}/{subject}``; DataError (naming the file) on bad input."""
    options = options or PreprocessOptions()
    _check_options(options)
    raw = RawSubject(Path(raw_root), str(subject))
    calibration = read_calibration(options.calibration or raw.calibration_path())
    sequences = _select_sequences(raw, options.sequences)
    cameras = _select_cameras(raw, calibration, sequences, options.cameras)
    probes = _probe_videos(raw, sequences, cameras)
    if options.background:
        _require_backgrounds(raw, cameras)

    counts = [(sequence, min(probes[(sequence, serial)][0] for serial in cameras)) for sequence in sequences]
    frames = plan_frames(counts, options.stride, options.max_frames)
    if not frames:
        raise DataError(f"subject {subject}: the chosen sequences have no frames")
    setups = [_camera_setup(raw, calibration, serial, sequences, probes, options) for serial in cameras]

    out_dir = Path(out_root) / str(subject)
    settings = _settings(subject, sequences, cameras, options)
    previous = read_manifest(out_dir)
    if previous is None and (out_dir / "images").is_dir() and not options.force:
        raise DataError(f"{out_dir} already has images/ but no {MANIFEST_NAME}: not written by this tool (or by an "
                        "older run); use another --out, or --force to redo every frame")
    if previous is not None:
        if options.force:
            _clear_other_run(out_dir, previous, settings, frames)
        else:
            check_manifest(out_dir, previous, settings, frames)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(out_dir, settings, frames, {
        "tool": "preprocess/preprocess_nersemble.py",
        "raw_root": str(Path(raw_root).resolve()),
        "calibration": str(calibration.path.resolve()),
        "frame_counts": {seq: {serial: probes[(seq, serial)][0] for serial in cameras} for seq in sequences},
        "raw_size": {setup.serial: [setup.width, setup.height] for setup in setups},
        "crop": {setup.serial: [setup.crop.x0, setup.crop.y0, setup.crop.side] for setup in setups},
    })

    result = PreprocessResult(out_dir, frames, cameras, crops={setup.serial: setup.crop for setup in setups})
    _run_cameras(out_dir, setups, frames, options, result)
    return result


# ------------------------------------------------------------------------------------------------ selection
DEFAULT_LOWRES = 256  # GHA's mesh-stage image size


def lowres_side(options: PreprocessOptions) -> int:
    """Side of the image_lowres copies: `options.lowres`, by default GHA's 256 but never more than `size`."""
    return options.lowres if options.lowres is not None else min(DEFAULT_LOWRES, options.size)


def _check_options(options: PreprocessOptions) -> None:
    for name in ("size", "stride"):
        if getattr(options, name) < 1:
            raise DataError(f"--{name} must be >= 1, got {getattr(options, name)}")
    if not 1 <= lowres_side(options) <= options.size:
        raise DataError(f"--lowres must be between 1 and --size ({options.size}): low-resolution copies larger than "
                        f"the images are not low-resolution; got {options.lowres}")
    if options.max_frames is not None and options.max_frames < 1:
        raise DataError(f"--max-frames must be >= 1, got {options.max_frames}")
    if options.crop_size is not None and options.crop_size < 1:
        raise DataError(f"--crop-size must be >= 1, got {options.crop_size}")
    if options.workers < 0:
        raise DataError(f"--workers must be >= 0, got {options.workers}")


def _select_sequences(raw: RawSubject, wanted: Optional[Sequence[str]]) -> List[str]:
    found = [name for name in raw.sequences if name != BACKGROUND]
    if wanted is None:
        if not found:
            raise DataError(f"no sequences of subject {raw.subject} under {raw.root} (expected "
                            f"{raw.root / raw.subject / 'sequences'}/<SEQUENCE>/ or {raw.root}/sequence_<SEQUENCE>_part-1/"
                            f"{raw.subject}/<SEQUENCE>/)")
        return found
    wanted = list(dict.fromkeys(wanted))
    unknown = [name for name in wanted if name not in found]
    if unknown:
        raise DataError(f"sequence(s) {unknown} of subject {raw.subject} not found under {raw.root} "
                        f"(available: {found or 'none'})")
    return wanted


def _select_cameras(raw: RawSubject, calibration: Calibration, sequences: List[str],
                    wanted: Optional[Sequence[str]]) -> List[str]:
    if wanted is None:
        cameras = [serial for serial in calibration.serials
                   if all(raw.video(sequence, serial) is not None for sequence in sequences)]
        if not cameras:
            raise DataError(f"no camera of {calibration.path} has a video (cam_<serial>.mp4) in every chosen sequence "
                            f"({', '.join(sequences)})")
        return cameras
    cameras = list(dict.fromkeys(normalize_serial(camera) for camera in wanted))
    unknown = [camera for camera in cameras if camera not in calibration.world_2_cam]
    if unknown:
        raise DataError(f"unknown camera(s) {unknown}: not in {calibration.path} (cameras: {calibration.serials})")
    return cameras


def _probe_videos(raw: RawSubject, sequences: List[str], cameras: List[str]) -> Dict[Tuple[str, str], Tuple[int, int, int]]:
    """{(sequence, serial): (frame count, width, height)}; DataError listing missing videos, or naming a bad one."""
    missing = [str(raw.expected_video(seq, serial)) for seq in sequences for serial in cameras
               if raw.video(seq, serial) is None]
    if missing:
        more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
        raise DataError(f"missing video(s): {', '.join(missing[:_MAX_LISTED])}{more}")
    probes = {}
    for seq in sequences:
        for serial in cameras:
            with VideoReader(raw.video(seq, serial)) as reader:
                probes[(seq, serial)] = (reader.frame_count, reader.width, reader.height)
    return probes


def _require_backgrounds(raw: RawSubject, cameras: List[str]) -> None:
    if BACKGROUND not in raw.sequences:
        raise DataError(f"subject {raw.subject} has no {BACKGROUND} sequence under {raw.root}: background plates "
                        "cannot be made (pass --no-background to skip them; remove_background.py needs them)")
    missing = [serial for serial in cameras if raw.background(serial) is None]
    if missing:
        folder = raw.sequence_dir(BACKGROUND)
        raise DataError(f"no background video or image for camera(s) {missing} in {folder} (expected "
                        f"cam_<serial>.mp4 or image_<serial>.jpg; pass --no-background to skip plates)")


def _camera_setup(raw: RawSubject, calibration: Calibration, serial: str, sequences: List[str],
                  probes, options: PreprocessOptions) -> _Camera:
    sizes = {probes[(seq, serial)][1:] for seq in sequences}
    if len(sizes) > 1:
        raise DataError(f"camera {serial}: its videos differ in frame size ({sorted(sizes)}); one crop cannot fit all")
    width, height = sizes.pop()
    crop = centred_square_crop(width, height, options.crop_size, options.crop_offset)
    if (crop.x0 + crop.side <= 0 or crop.y0 + crop.side <= 0 or crop.x0 >= width or crop.y0 >= height):
        raise DataError(f"camera {serial}: the crop {crop} misses the {width}x{height} frame entirely "
                        "(--crop-size / --crop-offset)")
    return _Camera(
        serial=serial,
        videos={seq: raw.video(seq, serial) for seq in sequences},
        width=width,
        height=height,
        crop=crop,
        intrinsic=crop_resize_intrinsics(calibration.intrinsics[serial], crop, options.size).astype(np.float32),
        extrinsic=calibration.world_2_cam[serial][:3].astype(np.float32),
        background=raw.background(serial) if options.background else None,
    )


def _settings(subject: str, sequences: List[str], cameras: List[str], options: PreprocessOptions) -> Dict:
    """What must match for a resumed run to continue in the same folder."""
    return {
        "subject": str(subject),
        "sequences": list(sequences),
        "cameras": list(cameras),
        "size": options.size,
        "lowres": lowres_side(options),
        "crop_size": options.crop_size,
        "crop_offset": list(options.crop_offset),
        "stride": options.stride,
        "max_frames": options.max_frames,
        "background": options.background,
        "jpeg_quality": options.jpeg_quality,
    }


def _clear_other_run(out_dir: Path, previous: Dict, settings: Dict, frames: List[FrameSource]) -> None:
    """A forced run with other settings or another frame plan replaces the previous run's outputs entirely, so no
    frame or camera of the old run survives next to the new ones. The tracker's params/ folder is left alone."""
    try:
        check_manifest(out_dir, previous, settings, frames)
    except DataError:
        for name in ("images", "cameras", "background"):
            shutil.rmtree(out_dir / name, ignore_errors=True)


# --------------------------------------------------------------------------------------------------- writing
class _Progress:
    """A tqdm bar shared by the camera threads, plus a stop flag set when one of them fails."""

    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar = tqdm(total=total, desc=desc, unit="view", disable=not enabled)
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def update(self, n: int = 1) -> None:
        with self.lock:
            self.bar.update(n)


def _run_cameras(out_dir: Path, setups: List[_Camera], frames: List[FrameSource], options: PreprocessOptions,
                 result: PreprocessResult) -> None:
    workers = options.workers or min(len(setups), os.cpu_count() or 1)
    progress = _Progress(len(setups) * len(frames), options.progress, f"preprocess {out_dir.name}")
    layout = SubjectLayout(out_dir)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(_process_camera, layout, setup, frames, options, progress) for setup in setups]
            try:
                for future in futures:
                    written, skipped, plates = future.result()
                    result.written += written
                    result.skipped += skipped
                    result.plates += plates
            except BaseException:
                progress.stop.set()
                for future in futures:
                    future.cancel()
                raise
    finally:
        progress.bar.close()


def _view_files(layout: SubjectLayout, frame: str, camera: str, padded: bool) -> List[Path]:
    files = [layout.image(frame, camera), layout.image(frame, camera, lowres=True), layout.camera(frame, camera)]
    if padded:
        files += [layout.visible(frame, camera), layout.visible(frame, camera, lowres=True)]
    return files


def _process_camera(layout: SubjectLayout, setup: _Camera, frames: List[FrameSource], options: PreprocessOptions,
                    progress: _Progress) -> Tuple[int, int, int]:
    """Plate and frames of one camera; returns (views written, views skipped, plates written)."""
    if progress.stop.is_set():
        return 0, 0, 0
    size = options.size

    def transform(rgb: np.ndarray) -> np.ndarray:
        return crop_resize(rgb, setup.crop, size)

    plates = 0
    if setup.background is not None:
        plate_path = background_plate_path(layout.root, setup.serial)
        if options.force or not complete(plate_path):
            write_jpeg(plate_path, read_background_plate(setup.background, transform), options.jpeg_quality)
            plates = 1

    padded = not setup.crop.inside(setup.width, setup.height)
    visible = visible_mask(setup.width, setup.height, setup.crop, size) if padded else None
    todo = [source for source in frames
            if options.force or not all(complete(path) for path in _view_files(layout, source.frame, setup.serial,
                                                                                padded))]
    progress.update(len(frames) - len(todo))
    for sequence in dict.fromkeys(source.sequence for source in todo):
        wanted = {source.index: source for source in todo if source.sequence == sequence}
        with VideoReader(setup.videos[sequence]) as reader:
            for index, rgb in reader.frames(wanted):
                if progress.stop.is_set():
                    return 0, 0, plates
                _write_view(layout, wanted[index].frame, setup, transform(rgb), visible, options)
                progress.update()
    return len(todo), len(frames) - len(todo), plates


def _write_view(layout: SubjectLayout, frame: str, setup: _Camera, image: np.ndarray,
                visible: Optional[np.ndarray], options: PreprocessOptions) -> None:
    camera = setup.serial
    for stale in (layout.mask(frame, camera), layout.mask(frame, camera, lowres=True)):
        stale.unlink(missing_ok=True)
    write_npz(layout.camera(frame, camera), intrinsic=setup.intrinsic, extrinsic=setup.extrinsic)
    if visible is not None:
        write_jpeg(layout.visible(frame, camera), visible, options.jpeg_quality)
        write_jpeg(layout.visible(frame, camera, lowres=True), resize_square(visible, lowres_side(options)),
                   options.jpeg_quality)
    write_jpeg(layout.image(frame, camera, lowres=True), resize_square(image, lowres_side(options)), options.jpeg_quality)
    write_jpeg(layout.image(frame, camera), image, options.jpeg_quality)
