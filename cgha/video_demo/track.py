"""The video demo's first stage: check the video, track it into a subject folder (cgha.tracking, in process), or
reuse the folder when it was tracked from the same file with the same arguments.

Frame counts are checked twice, each failure one line naming the numbers: the video must have at least
`MIN_FRAMES` frames before any work, and a face must be tracked in at least `MIN_FRAMES` of them (the tracker is
told the matching fraction, so it stops right after the landmarks when too few frames have a face).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from cgha.errors import DataError
from cgha.preprocess.video import VideoReader
from cgha.utils.atomic import write_bytes_atomic

log = logging.getLogger(__name__)

# Frames needed, found in the video and tracked: 15 % held out leaves 17 training frames and 3 held-out ones, about
# the least that still gives a held-out PSNR over more than one expression.
MIN_FRAMES = 20
HOLDOUT_FRACTION = 0.15  # the last 15 % of the tracked frames (issue 18), written into meta.json by the tracker
RECORD = "video_demo.json"  # in the subject folder: the video and arguments it was tracked from (for reuse)
_EXPLAIN = (f"the avatar trains on the first {1 - HOLDOUT_FRACTION:.0%} of the tracked frames and is evaluated on "
            f"the last {HOLDOUT_FRACTION:.0%}")


class VideoTooShort(DataError):
    """The video has fewer frames than the demo needs."""


class TooFewTrackedFrames(DataError):
    """A face was tracked in too few of the video's frames."""


@dataclass
class VideoInfo:
    """What the container announces: frame count, frame rate (0 when unknown), frame size."""
    path: Path
    frames: int
    fps: float
    width: int
    height: int


@dataclass
class TrackedSubject:
    """A tracked subject folder and what the summary reports of it.

    Attributes:
        root: the subject folder; frames: its frame names (tracked frames, time order); held_out: meta.json's
        held-out frames (the last 15 %); frames_found: frames read from the video; dropped: frames without a
        (well fitted) face; reprojection_px: median landmark reprojection error at the subject's resolution;
        resolution: image side; camera: the one camera id; reused: tracked by an earlier run.
    """
    root: Path
    frames: List[str]
    held_out: List[str]
    frames_found: int
    dropped: int
    reprojection_px: Optional[float]
    resolution: int
    camera: str
    reused: bool

    @property
    def train_frames(self) -> List[str]:
        return [f for f in self.frames if f not in set(self.held_out)]


def inspect_video(path: Path, max_frames: Optional[int] = None) -> VideoInfo:
    """Open `path` (DataError naming it when it is missing or unreadable) and check it is long enough."""
    with VideoReader(path) as reader:
        fps = reader.fps if math.isfinite(reader.fps) and reader.fps > 0 else 0.0
        info = VideoInfo(path, reader.frame_count, fps, reader.width, reader.height)
    used = min(info.frames, max_frames) if max_frames else info.frames
    if used < MIN_FRAMES:
        limit = f" (--max-frames {max_frames} keeps {used})" if used < info.frames else ""
        raise VideoTooShort(f"{path}: {info.frames} frames found{limit}, too short to track: at least {MIN_FRAMES} "
                            f"frames with a face are needed ({_EXPLAIN}); use a longer video")
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _track_options(resolution: int, fov_deg: float, max_frames: Optional[int], frames_used: int, device: str,
                   extra: Dict[str, Any]) -> Dict[str, Any]:
    """TrackOptions fields of the demo's tracking run (also the reuse record's arguments)."""
    return {"resolution": resolution, "fov_deg": float(fov_deg), "max_frames": max_frames,
            "holdout_frames": HOLDOUT_FRACTION, "holdout_cameras": 0,
            # At least MIN_FRAMES tracked frames, said as the tracker's fraction of the frames it reads (the
            # epsilon keeps exactly MIN_FRAMES of them from failing on rounding).
            "min_face_fraction": min(1.0, MIN_FRAMES / frames_used - 1e-9),
            "device": device, **extra}


def track_or_reuse(video: VideoInfo, out: Path, resolution: int, fov_deg: float, max_frames: Optional[int],
                   device: str, extra_options: Optional[Dict[str, Any]] = None) -> TrackedSubject:
    """The subject folder `out` tracked from `video` (see the module docstring).

    `extra_options`: further TrackOptions fields (tests: a smaller face model). A folder that exists without the
    demo's record is never overwritten; one the demo tracked with other arguments, or from another file, is
    tracked again.
    """
    from cgha.tracking.pipeline import TRACKER_VERSION, TooFewFrames, TrackOptions, track_video

    frames_used = min(video.frames, max_frames) if max_frames else video.frames
    options = _track_options(resolution, fov_deg, max_frames, frames_used, device, dict(extra_options or {}))
    record = {"video": str(video.path.resolve()), "sha256": _sha256(video.path), "tracker_version": TRACKER_VERSION,
              "options": json.loads(json.dumps(options, default=str))}
    record_path = out / RECORD
    ours = record_path.is_file()
    if out.exists():
        if not ours:
            raise DataError(f"{out} exists and was not tracked by demo.py --video: delete it, or choose another "
                            f"folder with --out")
        if json.loads(record_path.read_text()) == record and (out / "meta.json").is_file():
            log.info("reusing %s: tracked from %s with the same arguments", out, video.path)
            return _read_subject(out, reused=True)
        log.info("%s was tracked from another file or with other arguments: tracking again", out)
    log.info("tracking %s (%d frames) -> %s", video.path, frames_used, out)
    try:
        track_video(video.path, out, TrackOptions(**{"progress": True, **options, "force": ours}))
    except TooFewFrames as error:
        how = "found" if error.stage == "detection" else "fitted within the tracker's reprojection limit"
        raise TooFewTrackedFrames(f"{video.path}: {error.frames} frames found, a face {how} in {error.tracked}; at "
                                  f"least {MIN_FRAMES} tracked frames are needed ({_EXPLAIN}): film the face "
                                  f"larger, brighter, turned less away, or longer") from None
    subject = _read_subject(out, reused=False)
    if len(subject.frames) < MIN_FRAMES:  # the video ended before the frames its container announced
        raise TooFewTrackedFrames(f"{video.path}: {subject.frames_found} frames found, {len(subject.frames)} "
                                  f"tracked; at least {MIN_FRAMES} tracked frames are needed ({_EXPLAIN})")
    write_bytes_atomic(record_path, (json.dumps(record, indent=2) + "\n").encode())
    return subject


def _read_subject(root: Path, reused: bool) -> TrackedSubject:
    meta = json.loads((root / "meta.json").read_text())
    report_path = root / "tracking.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    frames = list(meta["frame_names"])
    held_out = list(meta["splits"]["eval_frame_ids"])
    if not held_out:
        raise DataError(f"{root / 'meta.json'}: no held-out frames in splits.eval_frame_ids (the demo evaluates on "
                        f"them); delete {root} to track it again")
    counts = report.get("frames", {})
    return TrackedSubject(root, frames, held_out, int(counts.get("input", len(frames))),
                          int(counts.get("dropped", 0)), report.get("reprojection_px", {}).get("median"),
                          int(meta["original_resolution"]), meta["camera_ids"][0], reused)


def track_command(video: VideoInfo, out: Path, resolution: int, fov_deg: float, max_frames: Optional[int],
                  device: str) -> str:
    """preprocess/track.py's command line for the same tracking run."""
    frames_used = min(video.frames, max_frames) if max_frames else video.frames
    options = _track_options(resolution, fov_deg, max_frames, frames_used, device, {})
    parts = ["python preprocess/track.py", f"--video {video.path}", f"--out {out}", f"--resolution {resolution}",
             f"--fov {fov_deg:g}", f"--holdout-frames {HOLDOUT_FRACTION}", "--holdout-cameras 0",
             f"--min-face-fraction {options['min_face_fraction']:.4f}", f"--device {device}"]
    if max_frames:
        parts.append(f"--max-frames {max_frames}")
    return " ".join(parts)


__all__ = ["MIN_FRAMES", "HOLDOUT_FRACTION", "VideoTooShort", "TooFewTrackedFrames", "VideoInfo", "TrackedSubject",
           "inspect_video", "track_or_reuse", "track_command"]
