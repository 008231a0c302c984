"""Export posed Gaussians as a compressed `.spz` (Niantic's splat format: 24-bit fixed-point positions, 8-bit
opacity, colour, log-scale and smallest-three rotations, gzip-compressed; read by common web splat viewers), through
the maintained `gsply` package (the optional extra `export`: `pip install -e .[export]`).

The values written are the `.ply` export's (export_ply.py: SH DC from the features' first 3 channels, opacity logit,
log-scale, wxyz quaternion), so both files hold the same Gaussians; `.spz` stores them in ~1/8 of the bytes.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cgha.apps.export_ply import gaussians_to_ply_array
from cgha.avatar.gaussians import Gaussians
from cgha.errors import UserError

SPZ_FRACTIONAL_BITS = 12  # 1/4096 world units per step: 0.1 % of a synthetic head's 0.25 units


def _gsply():
    try:
        import gsply
    except ModuleNotFoundError:
        raise UserError("writing .spz needs the gsply package: pip install -e .[export]") from None
    return gsply


def export_gaussians_spz(path: str | os.PathLike, gaussians: Gaussians, index: int = 0) -> Path:
    """Write batch item `index` of generate()'s output ([B, N, ...]) as an `.spz` file; returns the path."""
    gsply = _gsply()
    records = gaussians_to_ply_array(gaussians, index)

    def columns(*names: str) -> np.ndarray:
        return np.ascontiguousarray(np.stack([records[name] for name in names], axis=1), dtype=np.float32)

    data = gsply.GSData(means=columns("x", "y", "z"), scales=columns("scale_0", "scale_1", "scale_2"),
                        quats=columns("rot_0", "rot_1", "rot_2", "rot_3"),
                        opacities=np.ascontiguousarray(records["opacity"], dtype=np.float32),
                        sh0=columns("f_dc_0", "f_dc_1", "f_dc_2"), shN=None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    gsply.write_spz(partial, data, fractional_bits=SPZ_FRACTIONAL_BITS)
    os.replace(partial, path)
    return path


def read_gaussians_spz(path: str | os.PathLike) -> dict:
    """An `.spz` file's Gaussians as stored values {means [N, 3], scales [N, 3] (log), quats [N, 4] (wxyz),
    opacities [N] (logit), sh0 [N, 3]}."""
    data = _gsply().read_spz(path)
    return {"means": np.asarray(data.means), "scales": np.asarray(data.scales), "quats": np.asarray(data.quats),
            "opacities": np.asarray(data.opacities).reshape(-1), "sh0": np.asarray(data.sh0)}
