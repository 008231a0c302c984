"""Which face model's expression coefficients a subject (or an avatar) uses: codes of another model, or of the same
model in another coefficient order, have the right dimension and the wrong meaning (only the jaw then lines up), so
a driver is checked against the avatar by basis, not only by dimension."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from cgha.dataset.layout import SubjectLayout
from cgha.errors import DataError
from cgha.synthetic.expression import EXPRESSION_MODEL
from cgha.synthetic.writer import GENERATOR

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ExpressionBasis:
    """model: an id of the face model's expression space; names: its coefficients, in order."""
    model: str
    names: Tuple[str, ...]

    def to_dict(self) -> Dict[str, Any]:
        return {"model": self.model, "names": list(self.names)}

    @classmethod
    def from_dict(cls, data: Any, source: str) -> "ExpressionBasis":
        if not isinstance(data, dict) or not isinstance(data.get("model"), str) or not isinstance(data.get("names"), list):
            raise DataError(f"{source}: expression_basis must be {{model: <id>, names: [<coefficient>, ...]}}, "
                            f"got {data!r}")
        return cls(data["model"], tuple(str(name) for name in data["names"]))

    def describe(self) -> str:
        shown = ", ".join(self.names[:4]) + (", ..." if len(self.names) > 4 else "")
        return f"{self.model} ({len(self.names)} coefficients: {shown})"


def read_expression_basis(root: Path) -> Optional[ExpressionBasis]:
    """The basis a subject folder records in its meta.json (`expression_basis`, or the synthetic generator's
    `expression_names` in subjects written before that key), or None when it records none (GHA's subjects)."""
    meta = SubjectLayout(Path(root)).meta()
    if not meta:
        return None
    if "expression_basis" in meta:
        return ExpressionBasis.from_dict(meta["expression_basis"], f"{root}/meta.json")
    if meta.get("generator") == GENERATOR and isinstance(meta.get("expression_names"), list):
        return ExpressionBasis(EXPRESSION_MODEL, tuple(meta["expression_names"]))  # written before the key existed
    return None


def check_driver_basis(avatar: Optional[ExpressionBasis], driver: Optional[ExpressionBasis], driver_root: Path,
                       allow_mismatch: bool) -> None:
    """DataError when the avatar records its basis and the driver's codes are not known to be in it (another basis,
    or none recorded), unless `allow_mismatch` (`dataset.allow_basis_mismatch`). An avatar that records no basis
    (GHA's runs) cannot be checked: a warning when the driver records one."""
    if avatar is None:
        if driver is not None:
            log.warning("expression basis: the avatar records none, so the driver's (%s) cannot be checked against it",
                        driver.describe())
        return
    if avatar == driver:
        return
    found = driver.describe() if driver is not None else "none recorded (no expression_basis in its meta.json)"
    message = (f"the driver {driver_root} has expression basis {found} but the avatar was trained with "
               f"{avatar.describe()}: its codes may mean other expressions")
    if allow_mismatch:
        log.warning("%s; driving anyway (dataset.allow_basis_mismatch)", message)
        return
    raise DataError(f"{message}; retrack the driver with the avatar's face model, or set "
                    f"dataset.allow_basis_mismatch=true to drive it anyway")
