"""Writing triangle meshes as .obj and binary .ply (atomically), for viewing the mesh head in any 3D tool."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from cgha.utils.atomic import write_bytes_atomic


def write_obj(path: str | os.PathLike, verts: np.ndarray, faces: np.ndarray, colors: Optional[np.ndarray] = None) -> None:
    """verts [V, 3], faces [F, 3] (0-based), colors [V, 3] in [0, 1] as the common `v x y z r g b` extension."""
    lines = []
    for index, vertex in enumerate(np.asarray(verts, dtype=np.float64)):
        color = "" if colors is None else " " + " ".join(f"{c:.4f}" for c in colors[index])
        lines.append(f"v {vertex[0]:.6f} {vertex[1]:.6f} {vertex[2]:.6f}{color}")
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in np.asarray(faces, dtype=np.int64)]
    write_bytes_atomic(Path(path), ("\n".join(lines) + "\n").encode())


def write_ply(path: str | os.PathLike, verts: np.ndarray, faces: np.ndarray, colors: Optional[np.ndarray] = None) -> None:
    """Binary little-endian PLY with float32 positions, optional uchar colours and int32 triangle lists."""
    verts = np.asarray(verts, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int32)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(verts)}",
              "property float x", "property float y", "property float z"]
    fields = [("xyz", "<f4", (3,))]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        fields.append(("rgb", "u1", (3,)))
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    vertex_data = np.empty(len(verts), dtype=fields)
    vertex_data["xyz"] = verts
    if colors is not None:
        vertex_data["rgb"] = (np.clip(colors, 0, 1) * 255 + 0.5).astype(np.uint8)
    face_data = np.empty(len(faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    face_data["n"] = 3
    face_data["idx"] = faces
    write_bytes_atomic(Path(path), ("\n".join(header) + "\n").encode() + vertex_data.tobytes() + face_data.tobytes())
