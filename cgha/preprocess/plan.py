"""Which source frames become which output frames, and the manifest that makes runs resumable.

Output frames are numbered ``0000, 0001, ...`` across the requested sequences in the order given (GHA writes all
sequences of a participant into one folder the same way); frame ``i`` of a sequence is taken when ``i % stride == 0``,
up to ``max_frames`` per sequence. A sequence contributes as many frames as its *shortest* camera video has, so every
output frame has every camera.

``preprocess.json`` in the output folder records the settings and the plan. A later run with the same settings
resumes (finished views are skipped); different settings are an error unless the run is forced, because mixing two
settings in one folder would silently give frames with different crops or numbering.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cgha.errors import DataError
from cgha.utils.atomic import write_bytes_atomic

__all__ = ["MANIFEST_NAME", "FrameSource", "plan_frames", "read_manifest", "write_manifest", "check_manifest",
           "frame_sources"]

MANIFEST_NAME = "preprocess.json"
_MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FrameSource:
    """Output frame ``frame`` is frame ``index`` (0-based) of ``sequence``'s videos."""

    frame: str
    sequence: str
    index: int


def plan_frames(frame_counts: Sequence[Tuple[str, int]], stride: int = 1,
                max_frames: Optional[int] = None) -> List[FrameSource]:
    """Output frames for [(sequence, usable frame count), ...] in the given order."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    picked: List[Tuple[str, int]] = []
    for sequence, count in frame_counts:
        indices = list(range(0, count, stride))
        picked += [(sequence, index) for index in indices[:max_frames]]
    digits = max(4, len(str(len(picked) - 1)))
    return [FrameSource(f"{n:0{digits}d}", sequence, index) for n, (sequence, index) in enumerate(picked)]


def read_manifest(out_dir: Path) -> Optional[Dict[str, Any]]:
    """The manifest of a previous run, or None when there is none."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: unreadable manifest of a previous run ({error}); delete it or use --force") from None


def write_manifest(out_dir: Path, settings: Dict[str, Any], frames: List[FrameSource],
                   info: Dict[str, Any]) -> None:
    """Write ``preprocess.json``: settings (compared on resume), the frame plan and informational fields."""
    manifest = {"version": _MANIFEST_VERSION, "settings": settings, **info,
                "frames": [asdict(source) for source in frames]}
    write_bytes_atomic(Path(out_dir) / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode())


def check_manifest(out_dir: Path, existing: Dict[str, Any], settings: Dict[str, Any],
                   frames: List[FrameSource]) -> None:
    """DataError when a previous run in ``out_dir`` used other settings or planned other frames."""
    before = existing.get("settings", {})
    changed = sorted(key for key in set(before) | set(settings) if before.get(key) != settings.get(key))
    if changed:
        details = ", ".join(f"{key}: {before.get(key)!r} -> {settings.get(key)!r}" for key in changed)
        raise DataError(f"{out_dir} was preprocessed with other settings ({details}); use another --out, "
                        "or --force to redo every frame")
    if existing.get("frames") != [asdict(source) for source in frames]:
        raise DataError(f"{out_dir}: the raw videos now give other frames than the previous run planned "
                        f"(see {MANIFEST_NAME}); use another --out, or --force to redo every frame")


def frame_sources(manifest: Dict[str, Any]) -> Dict[str, Tuple[str, int]]:
    """{output frame: (sequence, source frame index)} of a manifest."""
    return {item["frame"]: (item["sequence"], int(item["index"])) for item in manifest["frames"]}
