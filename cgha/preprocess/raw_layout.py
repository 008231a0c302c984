"""Where things are in a raw NeRSemble download (docs/preprocessing.md lists the accepted layouts).

Two layouts are recognised, per participant ``{subject}`` under ``{root}``:

- NeRSemble v2 (the ``nersemble-data`` download tool)::

    {root}/{subject}/calibration/camera_params.json
    {root}/{subject}/sequences/{SEQ}/images/cam_{serial}.mp4      (also accepted without the images/ level)

- NeRSemble v1 (the layout GHA's preprocess_nersemble.py reads)::

    {root}/camera_params/{subject}/camera_params.json
    {root}/sequence_{SEQ}_part-{k}/{subject}/{SEQ}/cam_{serial}.mp4

The BACKGROUND sequence holds, per camera, either a short video ``cam_{serial}.mp4`` or a still
``image_{serial}.jpg`` / ``cam_{serial}.jpg`` (v1 ships stills). Only path lookup lives here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Optional

from cgha.errors import DataError

__all__ = ["BACKGROUND", "VIDEO_SUFFIXES", "IMAGE_SUFFIXES", "RawSubject"]

BACKGROUND = "BACKGROUND"
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class RawSubject:
    """One participant of a raw NeRSemble download."""

    root: Path
    subject: str

    def calibration_candidates(self) -> List[Path]:
        return [self.root / self.subject / "calibration" / "camera_params.json",
                self.root / "camera_params" / self.subject / "camera_params.json"]

    def calibration_path(self) -> Path:
        """The participant's camera_params.json; DataError naming every place looked at when there is none."""
        if not self.root.is_dir():
            raise DataError(f"raw data root not found: {self.root} (--raw-root)")
        for path in self.calibration_candidates():
            if path.is_file():
                return path
        tried = " or ".join(str(path) for path in self.calibration_candidates())
        raise DataError(f"camera_params.json of subject {self.subject} not found: looked for {tried}")

    @cached_property
    def sequences(self) -> Dict[str, Path]:
        """{sequence name: folder holding its per-camera files}, BACKGROUND included, sorted by name (scanned once)."""
        found: Dict[str, List[Path]] = {}
        v2 = self.root / self.subject / "sequences"
        candidates = sorted(v2.iterdir()) if v2.is_dir() else []
        candidates += sorted(self.root.glob(f"sequence_*/{self.subject}/*"))
        for folder in candidates:
            if not folder.is_dir():
                continue
            media = folder / "images" if (folder / "images").is_dir() else folder
            found.setdefault(folder.name, []).append(media)
        doubles = {name: paths for name, paths in found.items() if len(paths) > 1}
        if doubles:
            name, paths = next(iter(doubles.items()))
            raise DataError(f"sequence {name} of subject {self.subject} is in more than one place: "
                            f"{', '.join(map(str, paths))}; keep one")
        return {name: paths[0] for name, paths in sorted(found.items())}

    def sequence_dir(self, sequence: str) -> Path:
        sequences = self.sequences
        if sequence not in sequences:
            available = [name for name in sequences if name != BACKGROUND]
            raise DataError(f"sequence {sequence} of subject {self.subject} not found under {self.root} "
                            f"(available: {available or 'none'})")
        return sequences[sequence]

    def video(self, sequence: str, serial: str) -> Optional[Path]:
        """The video of camera ``serial`` in ``sequence``, or None when there is none."""
        return _first_existing(self.sequence_dir(sequence), [f"cam_{serial}{s}" for s in VIDEO_SUFFIXES])

    def expected_video(self, sequence: str, serial: str) -> Path:
        """Where the video of ``serial`` should be (for error messages)."""
        return self.sequence_dir(sequence) / f"cam_{serial}.mp4"

    def background(self, serial: str) -> Optional[Path]:
        """The BACKGROUND video or still of camera ``serial``, or None when there is none."""
        if BACKGROUND not in self.sequences:
            return None
        names = [f"cam_{serial}{s}" for s in VIDEO_SUFFIXES]
        names += [f"{prefix}_{serial}{s}" for prefix in ("image", "cam") for s in IMAGE_SUFFIXES]
        return _first_existing(self.sequence_dir(BACKGROUND), names)


def _first_existing(folder: Path, names: List[str]) -> Optional[Path]:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None
