"""Export posed Gaussians as a standard 3D Gaussian Splatting `.ply`, the format common splat viewers open.

Layout (binary little endian, one `vertex` element, float32 properties in this order), as written by the
original 3DGS code minus the optional higher-order SH `f_rest_*` (viewers treat their absence as degree 0):
`x y z` world position, `nx ny nz` zeros, `f_dc_0..2` degree-0 SH of RGB, `opacity` as a logit, `scale_0..2` as
natural logs, `rot_0..3` a wxyz quaternion (3DGS stores the real part first too).

The avatar's colours are 32-channel features whose first 3 channels are trained as RGB in [0, 1] (that is what
the low-resolution render loss compares); they become SH DC as `(rgb - 0.5) / C0` so a viewer's
`0.5 + C0 * f_dc` gives the RGB back.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from cgha.avatar.gaussians import Gaussians
from cgha.errors import DataError
from cgha.utils.atomic import write_bytes_atomic

SH_C0 = 0.28209479177387814
PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
# Opacity 0 or 1 (and scale 0) would give infinite logits / logs that viewers cannot parse.
OPACITY_EPS = 1e-6
SCALE_EPS = 1e-12


def gaussians_to_ply_array(gaussians: Gaussians, index: int = 0) -> np.ndarray:
    """Batch item `index` of posed Gaussians (an avatar model's generate()) as a structured array with PROPERTIES:
    [N] records of float32 fields. The features' first 3 channels are taken as RGB in [0, 1]."""
    xyz, color = gaussians.means, gaussians.features
    scales, rotation, opacity = gaussians.scales, gaussians.quats, gaussians.opacities
    batch, count = xyz.shape[:2]
    if color.shape[2] < 3:
        raise ValueError(f"color needs at least 3 channels (RGB), got {color.shape[2]}")
    if not -batch <= index < batch:
        raise DataError(f"cannot export batch item {index}: the batch has {batch}")

    def host(value: torch.Tensor) -> np.ndarray:
        return value[index].detach().float().cpu().numpy()

    quaternion = host(rotation)
    quaternion = quaternion / np.maximum(np.linalg.norm(quaternion, axis=-1, keepdims=True), 1e-12)
    alpha = np.clip(host(opacity), OPACITY_EPS, 1.0 - OPACITY_EPS)
    columns = [host(xyz), np.zeros((count, 3), np.float32), (host(color)[:, :3] - 0.5) / SH_C0,
               np.log(alpha / (1.0 - alpha))[:, None], np.log(np.maximum(host(scales), SCALE_EPS)), quaternion]
    values = np.concatenate(columns, axis=1).astype(np.float32)
    records = np.empty(count, dtype=[(name, "<f4") for name in PROPERTIES])
    for column, name in enumerate(PROPERTIES):
        records[name] = values[:, column]
    return records


def export_gaussians_ply(path: str | os.PathLike, gaussians: Gaussians, index: int = 0) -> Path:
    """Write batch item `index` of generate()'s output (shapes: see gaussians_to_ply_array) as a 3DGS `.ply`,
    atomically; returns the path."""
    records = gaussians_to_ply_array(gaussians, index)
    header = "".join(["ply\n", "format binary_little_endian 1.0\n", f"element vertex {records.shape[0]}\n",
                      *(f"property float {name}\n" for name in PROPERTIES), "end_header\n"])
    path = Path(path)
    write_bytes_atomic(path, header.encode("ascii") + records.tobytes())
    return path


def read_gaussians_ply(path: str | os.PathLike) -> Dict[str, np.ndarray]:
    """Read a `.ply` written by export_gaussians_ply back into stored values: {property name: [N] float32}."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise DataError(f"{path}: not a PLY file")
    lines = data[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise DataError(f"{path}: only binary little-endian PLY files are read")
    count = next(int(line.split()[2]) for line in lines if line.startswith("element vertex"))
    names = [line.split()[2] for line in lines if line.startswith("property float")]
    body = data[end + len(b"end_header\n"):]
    if len(body) != count * 4 * len(names):
        raise DataError(f"{path}: expected {count} vertices of {len(names)} floats, found {len(body)} bytes")
    records = np.frombuffer(body, dtype=[(name, "<f4") for name in names], count=count)
    return {name: records[name].copy() for name in names}
