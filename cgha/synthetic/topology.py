"""Fixed mesh topology of the synthetic head: a warped geodesic sphere, plus small mesh utilities.

Every identity and expression shares this topology (same vertex count and faces), which is what lets one
identity's expression/pose drive another and what makes ``vertices.npy`` comparable across subjects.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

__all__ = ["geodesic_sphere", "warp_toward", "template_sphere", "vertex_normals", "umbrella_laplacian"]


def _icosahedron() -> tuple[np.ndarray, np.ndarray]:
    t = (1.0 + 5.0 ** 0.5) / 2.0
    v = np.array(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
        dtype=np.float64,
    )
    f = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11],
         [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=np.int64,
    )
    return v / np.linalg.norm(v, axis=1, keepdims=True), f


@functools.lru_cache(maxsize=4)
def geodesic_sphere(freq: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-I geodesic sphere: each icosahedron face split into ``freq**2`` triangles, projected to the sphere.

    Returns:
        verts: [10 * freq**2 + 2, 3] float64 unit vectors.
        faces: [20 * freq**2, 3] int64, counter-clockwise seen from outside.
    """
    if freq < 1:
        raise ValueError(f"freq must be >= 1, got {freq}")
    base_v, base_f = _icosahedron()
    n = freq
    # Integer lattice coordinates (i, j) with i + j <= n inside each base face; the point is
    # A + (B - A) * i / n + (C - A) * j / n. Shared edge points are merged through an exact integer key.
    ij = np.array([(i, j) for j in range(n + 1) for i in range(n + 1 - j)], dtype=np.int64)
    local_id = {(int(i), int(j)): k for k, (i, j) in enumerate(ij)}
    tris = []
    for j in range(n):
        for i in range(n - j):
            tris.append((local_id[(i, j)], local_id[(i + 1, j)], local_id[(i, j + 1)]))
            if i + j < n - 1:
                tris.append((local_id[(i + 1, j)], local_id[(i + 1, j + 1)], local_id[(i, j + 1)]))
    tris = np.array(tris, dtype=np.int64)

    # Key of a lattice point: its exact barycentric weights over the icosahedron's vertex ids (a point on an edge
    # or corner gets the same key from every face that contains it).
    keys = {}
    all_pts = []
    faces = []
    for a, b, c in base_f:
        wa = n - ij[:, 0] - ij[:, 1]
        ids = []
        for (i, j), w in zip(ij, wa):
            key = tuple(sorted(((int(a), int(w)), (int(b), int(i)), (int(c), int(j)))))
            key = tuple(kv for kv in key if kv[1] > 0)
            if key not in keys:
                keys[key] = len(all_pts)
                all_pts.append((w * base_v[a] + i * base_v[b] + j * base_v[c]) / n)
            ids.append(keys[key])
        ids = np.array(ids, dtype=np.int64)
        faces.append(ids[tris])
    verts = np.array(all_pts, dtype=np.float64)
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    faces = np.concatenate(faces, axis=0)
    # Orient every face outward (the lattice order is consistent per base face, but make it explicit).
    v0, v1, v2 = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    flip = (np.cross(v1 - v0, v2 - v0) * (v0 + v1 + v2)).sum(1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return verts, faces


def warp_toward(dirs: np.ndarray, pole: np.ndarray, k: float) -> np.ndarray:
    """Conformal (stereographic) warp of unit vectors that gathers them toward ``pole``.

    A vector at angle ``theta`` from the pole moves to ``2 atan(k tan(theta / 2))``: ``k < 1`` raises the vertex
    density near the pole by ``1 / k**2`` (area) while keeping triangles well shaped.

    Args:
        dirs: [V, 3] unit vectors.
        pole: [3] direction to concentrate toward.
        k: warp strength in (0, 1].
    Returns:
        [V, 3] unit vectors.
    """
    pole = np.asarray(pole, dtype=np.float64)
    pole = pole / np.linalg.norm(pole)
    cos_t = dirs @ pole
    tang = dirs - cos_t[:, None] * pole
    sin_t = np.linalg.norm(tang, axis=1)
    theta = np.arctan2(sin_t, cos_t)
    half_tan = np.tan(np.minimum(theta, np.pi - 1e-9) / 2.0)
    new_theta = np.where(theta >= np.pi - 1e-9, np.pi, 2.0 * np.arctan(k * half_tan))
    axis = np.where(sin_t[:, None] > 1e-12, tang / np.maximum(sin_t, 1e-12)[:, None], 0.0)
    out = np.cos(new_theta)[:, None] * pole + np.sin(new_theta)[:, None] * axis
    return out / np.linalg.norm(out, axis=1, keepdims=True)


@functools.lru_cache(maxsize=4)
def template_sphere(freq: int, pole: tuple[float, float, float], k: float) -> tuple[np.ndarray, np.ndarray]:
    """The head's template: a geodesic sphere warped toward the face (``pole``) so the face gets more vertices.

    Returns:
        dirs: [V, 3] float64 unit vectors (ray directions for the shape projection).
        faces: [F, 3] int64, counter-clockwise seen from outside.
    """
    verts, faces = geodesic_sphere(freq)
    return warp_toward(verts, np.asarray(pole), k), faces


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Smooth, area-weighted vertex normals.

    Args:
        verts: [B, V, 3].
        faces: [F, 3] int64 (counter-clockwise seen from outside, so normals point outward).
    Returns:
        [B, V, 3] unit normals.
    """
    v0 = verts[:, faces[:, 0]]
    v1 = verts[:, faces[:, 1]]
    v2 = verts[:, faces[:, 2]]
    fn = torch.linalg.cross(v1 - v0, v2 - v0)  # length = 2 * area: area weighting for free
    n = torch.zeros_like(verts)
    idx = faces.reshape(-1)
    n.index_add_(1, idx, fn[:, :, None, :].expand(-1, -1, 3, -1).reshape(verts.shape[0], -1, 3))
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def umbrella_laplacian(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Uniform (umbrella) Laplacian ``mean(neighbours) - v`` per vertex.

    Args:
        verts: [B, V, 3].
        faces: [F, 3] int64.
    Returns:
        [B, V, 3]; its component along the outward normal is positive in creases (concave) and negative on bumps.
    """
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
    src = torch.cat([edges[:, 0], edges[:, 1]])
    dst = torch.cat([edges[:, 1], edges[:, 0]])
    acc = torch.zeros_like(verts)
    acc.index_add_(1, dst, verts[:, src])
    deg = torch.zeros(verts.shape[1], dtype=verts.dtype, device=verts.device)
    deg.index_add_(0, dst, torch.ones_like(dst, dtype=verts.dtype))
    return acc / deg[None, :, None] - verts
