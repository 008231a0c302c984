"""The video demo's first stage: check the video, track it into a subject folder (cgha.tracking, in process), or
reuse the folder when it was tracked from the same file with the same arguments. Driving an avatar from a video
(`reenactment.py --driver-video`, the viewer's `--driver`) tracks through the same functions with its own `TrackingUse`.

Frame counts are checked twice, each failure one line naming the numbers: the video must have at least
`use.min_frames` frames before any work (`MIN_FRAMES` for the demo), and a face must be tracked in enough of them
(the tracker is told the matching fraction, so it stops right after the landmarks when too few frames have a face).
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


@dataclass(frozen=True)
class TrackingUse:
    """What a tracked video is for. min_frames: frames it needs, in the video and tracked; min_face_fraction: the
    least fraction of the frames read that must keep a face (on top of min_frames); holdout: fraction of the last
    frames held out for evaluation (0: none); why: said in the errors about too few frames; tool: the command that
    tracks it (said when a folder exists that it did not track)."""
    min_frames: int
    min_face_fraction: float
    holdout: float
    why: str
    tool: str

    def frames_needed(self, frames_used: int) -> int:
        return max(self.min_frames, math.ceil(self.min_face_fraction * frames_used - 1e-9))


DEMO = TrackingUse(MIN_FRAMES, 0.0, HOLDOUT_FRACTION, _EXPLAIN, "demo.py --video")


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


def inspect_video(path: Path, max_frames: Optional[int] = None, use: TrackingUse = DEMO) -> VideoInfo:
    """Open `path` (DataError naming it when it is missing or unreadable) and check it is long enough for `use`."""
    with VideoReader(path) as reader:
        fps = reader.fps if math.isfinite(reader.fps) and reader.fps > 0 else 0.0
        info = VideoInfo(path, reader.frame_count, fps, reader.width, reader.height)
    used = min(info.frames, max_frames) if max_frames else info.frames
    if used < use.min_frames:
        limit = f" (--max-frames {max_frames} keeps {used})" if used < info.frames else ""
        raise VideoTooShort(f"{path}: {info.frames} frames found{limit}, too short to track: at least "
                            f"{use.min_frames} frames with a face are needed ({use.why}); use a longer video")
    return info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _track_options(resolution: int, fov_deg: float, max_frames: Optional[int], frames_used: int, device: str,
                   extra: Dict[str, Any], use: TrackingUse = DEMO) -> Dict[str, Any]:
    """TrackOptions fields of the tracking run for `use` (also the reuse record's arguments)."""
    return {"resolution": resolution, "fov_deg": float(fov_deg), "max_frames": max_frames,
            "holdout_frames": use.holdout, "holdout_cameras": 0,
            # The frames needed, said as the tracker's fraction of the frames it reads (the epsilon keeps exactly
            # that many from failing on rounding).
            "min_face_fraction": min(1.0, use.frames_needed(frames_used) / frames_used - 1e-9),
            "device": device, **extra}


def track_or_reuse(video: VideoInfo, out: Path, resolution: int, fov_deg: float, max_frames: Optional[int],
                   device: str, extra_options: Optional[Dict[str, Any]] = None,
                   use: TrackingUse = DEMO) -> TrackedSubject:
    """The subject folder `out` tracked from `video` (see the module docstring).

    `extra_options`: further TrackOptions fields (tests: a smaller face model). A folder that exists without the
    record is never overwritten; one tracked with other arguments, or from another file, is tracked again.
    """
    from cgha.tracking.pipeline import TRACKER_VERSION, TooFewFrames, TrackOptions, track_video

    frames_used = min(video.frames, max_frames) if max_frames else video.frames
    options = _track_options(resolution, fov_deg, max_frames, frames_used, device, dict(extra_options or {}), use)
    record = {"video": str(video.path.resolve()), "sha256": _sha256(video.path), "tracker_version": TRACKER_VERSION,
              "options": json.loads(json.dumps(options, default=str))}
    record_path = out / RECORD
    ours = record_path.is_file()
    if out.exists():
        if not ours:
            raise DataError(f"{out} exists and was not tracked by {use.tool}: delete it, or choose another "
                            f"folder with --out")
        if json.loads(record_path.read_text()) == record and (out / "meta.json").is_file():
            log.info("reusing %s: tracked from %s with the same arguments", out, video.path)
            return _read_subject(out, reused=True, use=use)
        log.info("%s was tracked from another file or with other arguments: tracking again", out)
    log.info("tracking %s (%d frames) -> %s", video.path, frames_used, out)
    try:
        track_video(video.path, out, TrackOptions(**{"progress": True, **options, "force": ours}))
    except TooFewFrames as error:
        how = "found" if error.stage == "detection" else "fitted within the tracker's reprojection limit"
        raise TooFewTrackedFrames(f"{video.path}: {error.frames} frames found, a face {how} in {error.tracked}; at "
                                  f"least {use.frames_needed(error.frames)} tracked frames are needed ({use.why}): "
                                  f"film the face larger, brighter, turned less away, or longer") from None
    subject = _read_subject(out, reused=False, use=use)
    if len(subject.frames) < use.min_frames:  # the video ended before the frames its container announced
        raise TooFewTrackedFrames(f"{video.path}: {subject.frames_found} frames found, {len(subject.frames)} "
                                  f"tracked; at least {use.min_frames} tracked frames are needed ({use.why})")
    write_bytes_atomic(record_path, (json.dumps(record, indent=2) + "\n").encode())
    return subject


def _read_subject(root: Path, reused: bool, use: TrackingUse = DEMO) -> TrackedSubject:
    meta = json.loads((root / "meta.json").read_text())
    report_path = root / "tracking.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    frames = list(meta["frame_names"])
    held_out = list(meta["splits"]["eval_frame_ids"])
    if use.holdout > 0 and not held_out:
        raise DataError(f"{root / 'meta.json'}: no held-out frames in splits.eval_frame_ids (the demo evaluates on "
                        f"them); delete {root} to track it again")
    counts = report.get("frames", {})
    return TrackedSubject(root, frames, held_out, int(counts.get("input", len(frames))),
                          int(counts.get("dropped", 0)), report.get("reprojection_px", {}).get("median"),
                          int(meta["original_resolution"]), meta["camera_ids"][0], reused)


def track_command(video: VideoInfo, out: Path, resolution: int, fov_deg: float, max_frames: Optional[int],
                  device: str, photometric: bool = False) -> str:
    """preprocess/track.py's command line for the same tracking run."""
    frames_used = min(video.frames, max_frames) if max_frames else video.frames
    options = _track_options(resolution, fov_deg, max_frames, frames_used, device, {})
    parts = ["python preprocess/track.py", f"--video {video.path}", f"--out {out}", f"--resolution {resolution}",
             f"--fov {fov_deg:g}", f"--holdout-frames {HOLDOUT_FRACTION}", "--holdout-cameras 0",
             f"--min-face-fraction {options['min_face_fraction']:.4f}", f"--device {device}"]
    if max_frames:
        parts.append(f"--max-frames {max_frames}")
    if photometric:
        parts.append("--photometric")
    return " ".join(parts)


__all__ = ["MIN_FRAMES", "HOLDOUT_FRACTION", "TrackingUse", "DEMO", "VideoTooShort", "TooFewTrackedFrames", "VideoInfo", "TrackedSubject",
           "inspect_video", "track_or_reuse", "track_command"]
