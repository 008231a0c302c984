"""Paths of the GHA / NeRSemble-preprocessed subject layout (see docs/conventions.md).

Only path arithmetic and directory listing live here; reading and checking files is `subject.py`'s job.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from cgha.errors import DataError

_IMAGE_NAME = re.compile(r"^image_(?!lowres_)(.+)\.jpg$")


@dataclass(frozen=True)
class SubjectLayout:
    """Paths inside one subject folder."""

    root: Path

    def frame_dir(self, frame: str) -> Path:
        return self.root / "images" / frame

    def image(self, frame: str, camera: str, lowres: bool = False) -> Path:
        return self.frame_dir(frame) / (f"image_lowres_{camera}.jpg" if lowres else f"image_{camera}.jpg")

    def mask(self, frame: str, camera: str, lowres: bool = False) -> Path:
        return self.frame_dir(frame) / (f"mask_lowres_{camera}.jpg" if lowres else f"mask_{camera}.jpg")

    def visible(self, frame: str, camera: str, lowres: bool = False) -> Path:
        return self.frame_dir(frame) / (f"visible_lowres_{camera}.jpg" if lowres else f"visible_{camera}.jpg")

    def camera(self, frame: str, camera: str) -> Path:
        return self.root / "cameras" / frame / f"camera_{camera}.npz"

    def params(self, frame: str) -> Path:
        return self.root / "params" / frame / "params.npz"

    def landmarks(self, frame: str) -> Path:
        return self.root / "params" / frame / "lmk_3d.npy"

    def vertices(self, frame: str) -> Path:
        return self.root / "params" / frame / "vertices.npy"

    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    @property
    def preprocess_manifest_path(self) -> Path:
        """Written by preprocess/preprocess_nersemble.py (cgha/preprocess/plan.py's MANIFEST_NAME)."""
        return self.root / "preprocess.json"

    def frames(self) -> List[str]:
        """Sorted names of the frame folders under images/."""
        images = self.root / "images"
        if not self.root.is_dir():
            raise DataError(f"dataset root not found: {self.root} (dataset.dataroot)")
        if not images.is_dir():
            raise DataError(f"{self.root} has no images/ folder: not a GHA-layout subject")
        frames = sorted(entry.name for entry in os.scandir(images) if entry.is_dir())
        if not frames:
            raise DataError(f"{images} has no frame folders")
        return frames

    def cameras_in(self, frame: str) -> List[str]:
        """Camera ids with a full-resolution image in `frame`, sorted."""
        names = os.listdir(self.frame_dir(frame))
        return sorted(match.group(1) for match in map(_IMAGE_NAME.match, names) if match)

    def meta(self) -> Optional[Dict[str, Any]]:
        """Parsed meta.json, or None when the subject has none."""
        if not self.meta_path.is_file():
            return None
        try:
            return json.loads(self.meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{self.meta_path}: not valid JSON ({error})") from None
