"""What an avatar remembers of the subject it was trained on, so that it can be driven by anyone: its neutral
(reference) head pose and scale, and the expression basis its codes are in. Written by training beside the raw checkpoints (`avatar_subject.json`) and into
the compressed file's metadata; read by `cgha.avatar.inference.load_avatar`."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from cgha.dataset.expression_basis import ExpressionBasis, read_expression_basis
from cgha.errors import CheckpointError, DataError
from cgha.utils.atomic import write_bytes_atomic


@dataclass(frozen=True)
class AvatarSubject:
    """reference_pose: [axis-angle (3), translation (3)] of the subject's first frame; reference_scale: its scale;
    expression_basis: the subject's recorded basis, or None (GHA's subjects record none)."""
    reference_pose: List[float]
    reference_scale: float
    expression_basis: Optional[ExpressionBasis] = None

    @classmethod
    def of(cls, subject) -> "AvatarSubject":
        """From a loaded cgha.dataset.Subject: its first frame and its meta.json's expression basis."""
        return cls([float(v) for v in subject.pose[0]], float(subject.scale[0][0]),
                   read_expression_basis(subject.layout.root))

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str) -> "AvatarSubject":
        try:
            pose = [float(v) for v in data["reference_pose"]]
            scale = float(data["reference_scale"])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{source}: not an avatar subject record ({type(error).__name__}: {error})") from None
        if len(pose) != 6 or not all(math.isfinite(v) for v in pose) or not (math.isfinite(scale) and scale > 0):
            raise CheckpointError(f"{source}: reference_pose must be 6 finite numbers and reference_scale positive, "
                                  f"got {data.get('reference_pose')} and {data.get('reference_scale')}")
        basis = data.get("expression_basis")
        try:
            return cls(pose, scale, ExpressionBasis.from_dict(basis, source) if basis is not None else None)
        except DataError as error:
            raise CheckpointError(str(error)) from None

    def to_dict(self) -> Dict[str, Any]:
        basis = self.expression_basis.to_dict() if self.expression_basis is not None else None
        return {"reference_pose": self.reference_pose, "reference_scale": self.reference_scale,
                "expression_basis": basis}

    def save(self, path: str | os.PathLike) -> None:
        write_bytes_atomic(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Optional["AvatarSubject"]:
        """The record at `path`, or None when there is none (GHA's runs, runs from before these records)."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CheckpointError(f"{path}: unreadable avatar subject record ({error})") from None
        return cls.from_dict(data, str(path))
