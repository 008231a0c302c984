"""A video (or a webcam) as the driver of an avatar: tracked into a subject folder with the video demo's tracking
(cgha.video_demo.track over cgha.tracking, reused when already tracked from the same file with the same arguments),
whose expressions and relative head motion then drive the avatar like any driver subject.

    subject = track_driver_video("clip.mp4", DriverVideoOptions(device="cpu"))       # -> data/driver_clip/
    subject = track_driver_video("0", DriverVideoOptions(device="cpu"))              # webcam 0, recorded first

The tracker fits its face model to all frames at once (one identity, temporally smoothed poses), so a live source
is recorded to an mp4 first (`capture_frames`: `max_frames` frames, default `WEBCAM_FRAMES`) and then tracked
through the same path as a file. A folder of a tracker run (`preprocess/track.py --video clip.mp4 --out DIR`) is a
driver subject already: pass the folder instead of the video.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from cgha.errors import DataError
from cgha.video_demo.track import TrackedSubject, TrackingUse, inspect_video, track_or_reuse

log = logging.getLogger(__name__)

# Driving needs no held-out frames; frames without a face are dropped by the tracker, and the driver then skips them,
# so at least half of the frames must keep one (the tracker's own default) or the motion jumps.
DRIVING = TrackingUse(min_frames=2, min_face_fraction=0.5, holdout=0.0,
                      why="the tracked frames drive the avatar; frames without a face are skipped",
                      tool="reenactment.py --driver-video")
WEBCAM_FRAMES = 150  # 5 s at 30 FPS
DRIVER_RESOLUTION = 512  # tracked images; only the side-by-side driver images use them


@dataclass
class DriverVideoOptions:
    """How a driver video is tracked.

    Attributes:
        device: where the tracker's fit runs (`cpu`, `cuda`, `auto`).
        out: the subject folder (None: `{data_root}/driver_<stem>`, `driver_webcam<N>` for webcam N).
        fov_deg: the camera's field of view across the longer side of the frame (None: the tracker's default).
        max_frames: track at most this many frames (a webcam records this many; None: all, WEBCAM_FRAMES).
        resolution: side of the tracked images.
        track_options: further cgha.tracking TrackOptions fields (tests: a smaller face model).
    """
    device: str = "auto"
    out: Optional[Path] = None
    data_root: Path = Path("data")
    fov_deg: Optional[float] = None
    max_frames: Optional[int] = None
    resolution: int = DRIVER_RESOLUTION
    track_options: Dict[str, Any] = field(default_factory=dict)


def webcam_index(source: str) -> Optional[int]:
    """The webcam a `--driver-video` value names (`0`, `1`, ...), or None for a file."""
    return int(source) if re.fullmatch(r"\d+", source.strip()) else None


def capture_frames(source: Any, path: Path, frames: int, fps: float = 30.0) -> Path:
    """Record `frames` frames of a live source (a webcam index, or anything cv2.VideoCapture opens) to the mp4
    `path`. DataError naming the source when it cannot be opened or delivers no frame."""
    import cv2
    import imageio.v2 as imageio

    capture = cv2.VideoCapture(source)
    if not capture.isOpened():
        raise DataError(f"cannot open the camera {source!r} (--driver-video {source}): no such device, or it is busy")
    rate = capture.get(cv2.CAP_PROP_FPS)
    rate = rate if 1.0 <= rate <= 240.0 else fps  # webcams often report 0
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    writer = imageio.get_writer(path, format="FFMPEG", mode="I", fps=rate, codec="libx264", quality=8,
                                macro_block_size=1, ffmpeg_log_level="error")
    log.info("recording %d frames from camera %s -> %s", frames, source, path)
    try:
        while written < frames:
            ok, frame = capture.read()
            if not ok or frame is None:
                break
            writer.append_data(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            written += 1
    finally:
        writer.close()
        capture.release()
    if written == 0:
        path.unlink(missing_ok=True)
        raise DataError(f"the camera {source!r} (--driver-video {source}) delivered no frame")
    return path


def track_driver_video(source: str | Path, options: DriverVideoOptions) -> TrackedSubject:
    """The subject folder tracked from a video file or a webcam (`source` "0", "1", ...); see the module docstring.
    Errors (missing or unreadable video, too short, no face in enough frames) are one line naming the file."""
    from cgha.tracking.pipeline import DEFAULT_FOV_DEG

    index = webcam_index(str(source))
    if index is not None:
        out = options.out or options.data_root / f"driver_webcam{index}"
        frames = options.max_frames or WEBCAM_FRAMES
        video_path = capture_frames(index, out.with_name(out.name + ".mp4"), frames)
    else:
        video_path = Path(source)
        stem = re.sub(r"[^A-Za-z0-9_-]", "_", video_path.stem) or "video"
        out = options.out or options.data_root / f"driver_{stem}"
    video = inspect_video(video_path, options.max_frames, use=DRIVING)
    fov = options.fov_deg if options.fov_deg is not None else DEFAULT_FOV_DEG
    subject = track_or_reuse(video, out, options.resolution, fov, options.max_frames, options.device,
                             options.track_options, use=DRIVING)
    log.info("driver %s: %d of %d frames tracked -> %s", video_path, len(subject.frames), subject.frames_found,
             subject.root)
    return subject


def driver_overrides(subject: TrackedSubject) -> list:
    """Reenactment config overrides that drive with a tracked subject: its params, its images beside the avatar's,
    its head motion relative to its first frame (`dataset.pose_transfer=relative`)."""
    return [f"dataset.dataroot={subject.root}", "dataset.param_files=params/*/params.npz",
            f"dataset.image_files=images/*/image_{subject.camera}.jpg", "dataset.pose_transfer=relative"]
