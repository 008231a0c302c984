"""Simple closed meshes for tests and benchmarks."""
from __future__ import annotations

import math

import torch


def uv_sphere(n_lat: int, n_lon: int, radius: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """UV sphere centred at the origin with `n_lat` rings of latitude and `n_lon` meridians.

    Returns verts [2 + (n_lat - 1) n_lon, 3] float32 and faces [2 n_lon (n_lat - 1), 3] int64, counter-clockwise
    seen from outside (cross(v1 - v0, v2 - v0) points away from the centre).
    """
    theta = torch.linspace(0, math.pi, n_lat + 1, dtype=torch.float64)[1:-1]
    phi = torch.arange(n_lon, dtype=torch.float64) * 2 * math.pi / n_lon
    T, P = torch.meshgrid(theta, phi, indexing="ij")
    ring = torch.stack([T.sin() * P.cos(), T.cos(), T.sin() * P.sin()], -1).reshape(-1, 3)
    verts = torch.cat([torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), ring,
                       torch.tensor([[0.0, -1.0, 0.0]], dtype=torch.float64)]) * radius
    j = torch.arange(n_lon)
    jn = (j + 1) % n_lon
    faces = [torch.stack([torch.zeros_like(j), 1 + j, 1 + jn], -1)]
    for i in range(n_lat - 2):
        a, b = 1 + i * n_lon + j, 1 + i * n_lon + jn
        faces += [torch.stack([a, b + n_lon, b], -1), torch.stack([a, a + n_lon, b + n_lon], -1)]
    last = 1 + (n_lat - 2) * n_lon
    faces.append(torch.stack([last + j, torch.full_like(j, verts.shape[0] - 1), last + jn], -1))
    faces = torch.cat(faces)
    # Orient every face outward whatever winding the parametrisation above produced.
    corners = verts[faces]
    normal = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    flip = (normal * corners.mean(1)).sum(-1) < 0
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return verts.float(), faces
