"""Rendering a batch of meshes, each from several cameras, through `rasterize_mesh`."""
from __future__ import annotations

from typing import Dict

import torch

from cgha.render.mesh import rasterize_mesh


def render_mesh_views(verts: torch.Tensor, faces: torch.Tensor, colors: torch.Tensor, viewmats: torch.Tensor,
                      Ks: torch.Tensor, resolution: int, sigma: float = 1.0, soft: bool = True) -> Dict[str, torch.Tensor]:
    """Render B meshes (shared faces) from V views each.

    verts [B, M, 3] world, faces [F, 3], colors [B, M, C], viewmats [B, V, 4, 4], Ks [B, V, 3, 3].
    Returns images [B, V, C, R, R] (colours on black, as GHA), masks / soft_masks [B, V, 1, R, R],
    normals [B, V, 3, R, R] (camera space), depth [B, V, 1, R, R].
    """
    batch, views = viewmats.shape[:2]
    flat_verts = verts[:, None].expand(-1, views, -1, -1).reshape(batch * views, *verts.shape[1:])
    flat_colors = colors[:, None].expand(-1, views, -1, -1).reshape(batch * views, *colors.shape[1:])
    out = rasterize_mesh(flat_verts, faces, flat_colors, viewmats.reshape(-1, 4, 4), Ks.reshape(-1, 3, 3),
                         resolution, resolution, sigma=sigma, soft=soft)
    result = {
        "images": (out["attrs"] * out["mask"]).clamp(0, 1),
        "masks": out["mask"],
        "normals": out["normals"],
        "depth": out["depth"],
    }
    if soft:
        result["soft_masks"] = out["soft_mask"]
    return {key: value.reshape(batch, views, *value.shape[1:]) for key, value in result.items()}
