"""Render the synthetic head: rasterize, texture per pixel, Lambertian shading, composite over the background.

The mesh is rasterized by ``cgha.render.mesh.rasterize_mesh`` with three interpolated vertex attributes: texture
coordinates (for the per-pixel albedo), smooth world normals (for shading) and a per-vertex ambient-occlusion
term (darker in creases, nostrils and the open mouth). The light is fixed in the world, so the shading changes
with head pose.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from cgha.render.mesh import rasterize_mesh
from cgha.utils.cameras import camera_center

from .expression import EXPRESSION_NAMES
from .head_model import HeadModel, apply_pose
from .mathutil import smoothstep
from .texture import HeadTexture
from .topology import umbrella_laplacian

__all__ = ["Light", "DEFAULT_LIGHT", "vertex_occlusion", "render_views", "max_views_per_batch"]

# Pixels (over all cameras of a batch) textured and composited at once: bounds the buffers to ~200 MB.
_PIXELS_PER_BATCH = 16 * 512 * 512


@dataclasses.dataclass(frozen=True)
class Light:
    """World-fixed lighting: a directional key light plus a hemisphere ambient (brighter from above)."""

    direction: tuple[float, float, float] = (-0.45, 0.55, 0.75)  # toward the light
    colour: tuple[float, float, float] = (1.0, 0.97, 0.92)
    diffuse: float = 0.78
    ambient_sky: float = 0.42
    ambient_ground: float = 0.22


DEFAULT_LIGHT = Light()


def max_views_per_batch(width: int, height: int) -> int:
    """How many views of this size one rasterizer call handles."""
    return max(1, _PIXELS_PER_BATCH // (width * height))


def vertex_occlusion(canon: torch.Tensor, normals: torch.Tensor, faces: torch.Tensor, jaw_open: torch.Tensor,
                     mouth_push: torch.Tensor) -> torch.Tensor:
    """Cheap per-vertex ambient occlusion from mesh concavity plus the depth of the open mouth.

    Args:
        canon: [B, V, 3] expressed canonical vertices.
        normals: [B, V, 3] their unit normals.
        faces: [F, 3].
        jaw_open: [B] jaw coefficients.
        mouth_push: [V] mouth-band push profile (1 deepest).
    Returns:
        [B, V, 1] factors in (0, 1].
    """
    lap = umbrella_laplacian(canon, faces)
    # Normal component of the umbrella Laplacian, relative to the local edge length: a curvature-like measure
    # that is positive in creases.
    edge2 = (lap * lap).sum(-1).clamp(min=1e-12)
    along = (lap * normals).sum(-1)
    ref = 3.2e-4  # squared typical edge length of the face region
    concavity = along / torch.sqrt(edge2 + ref)
    ao = 1.0 - 0.45 * smoothstep(concavity, 0.02, 0.25)
    ao = ao * (1.0 - 0.75 * (jaw_open.clamp(0.0, 1.0)[:, None] * mouth_push[None]).clamp(max=1.0))
    return ao[..., None]


def _shade(albedo, normals, ao, light: Light):
    """Lambert + hemisphere ambient. albedo [N, 3], normals [N, 3] (world, unnormalised), ao [N, 1]."""
    n = normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-8)
    L = torch.tensor(light.direction, dtype=n.dtype, device=n.device)
    L = L / L.norm()
    lam = (n @ L).clamp(min=0.0)[:, None]
    sky = (0.5 + 0.5 * n[:, 1:2])
    ambient = light.ambient_ground + (light.ambient_sky - light.ambient_ground) * sky
    col = torch.tensor(light.colour, dtype=n.dtype, device=n.device)
    return (albedo * (ambient * ao + light.diffuse * lam * (0.35 + 0.65 * ao)) * col).clamp(0.0, 1.0)


def _composite(fg: torch.Tensor, mask: torch.Tensor, bg: torch.Tensor, antialias: bool) -> torch.Tensor:
    """Blend the head over the background; with ``antialias`` the silhouette gets a 1-pixel soft edge.

    The soft edge is a 3x3 tent blur of the mask used as alpha; pixels just outside the mask take the
    (mask-weighted) average colour of their head neighbours. Only the few edge pixels are touched, so this costs
    little more than the hard composite.

    Args:
        fg: [B, 3, H, W] head colours (anything outside the mask).
        mask: [B, 1, H, W] in {0, 1}.
        bg: [B, 3, H, W].
    Returns:
        [B, 3, H, W].
    """
    out = torch.where(mask > 0, fg, bg)
    if not antialias:
        return out
    B, _, H, W = mask.shape
    k = torch.tensor([0.25, 0.5, 0.25], dtype=fg.dtype, device=fg.device)
    # Separable tent blur by shifted slices (much faster than a 1-channel conv2d on CPU).
    m = F.pad(mask, (1, 1, 1, 1), mode="replicate")
    m = 0.25 * m[..., :, :-2] + 0.5 * m[..., :, 1:-1] + 0.25 * m[..., :, 2:]
    alpha = 0.25 * m[..., :-2, :] + 0.5 * m[..., 1:-1, :] + 0.25 * m[..., 2:, :]
    edge = ((alpha > 0) & (alpha < 1)).reshape(-1).nonzero().squeeze(1)  # linear over [B, H, W]
    if edge.numel() == 0:
        return out
    b = edge // (H * W)
    p = edge % (H * W)
    y = p // W
    x = p % W
    fg3 = fg.reshape(B, 3, H * W)
    m_flat = mask.reshape(B, H * W)
    acc = torch.zeros(edge.numel(), 3, dtype=fg.dtype, device=fg.device)
    wsum = torch.zeros(edge.numel(), dtype=fg.dtype, device=fg.device)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            w = float(k[dy + 1] * k[dx + 1])
            j = (y + dy).clamp(0, H - 1) * W + (x + dx).clamp(0, W - 1)
            mj = m_flat[b, j] * w
            acc += fg3[b, :, j] * mj[:, None]
            wsum += mj
    a = alpha.reshape(B, H * W)[b, p][:, None]
    col = torch.where(m_flat[b, p][:, None] > 0, fg3[b, :, p], acc / wsum.clamp(min=1e-8)[:, None])
    out3 = out.reshape(B, 3, H * W)
    out3[b, :, p] = col * a + bg.reshape(B, 3, H * W)[b, :, p] * (1.0 - a)
    return out


@torch.no_grad()
def render_views(head: HeadModel, texture: HeadTexture, exp, pose, scale, viewmats: torch.Tensor, Ks: torch.Tensor,
                 width: int, height: int, backgrounds: torch.Tensor | None = None, light: Light = DEFAULT_LIGHT,
                 antialias: bool = True, views_per_batch: int | None = None,
                 with_tex: bool = False) -> dict[str, torch.Tensor]:
    """Render one expression/pose state of the head from several cameras.

    Args:
        head: the head model (its device is used).
        texture: the identity's texture.
        exp: [D] expression coefficients.
        pose: [6] head pose (axis-angle + translation); ``scale``: scalar head scale.
        viewmats: [C, 4, 4] world-to-camera (OpenCV); Ks: [C, 3, 3] intrinsics in pixels of ``width x height``.
        backgrounds: [C, 3, H, W] or None (black).
        views_per_batch: cameras textured and composited together (default: by image size).
        with_tex: also return the per-pixel texture coordinates (for region tests and debugging).
    Returns:
        dict with ``image`` [C, 3, H, W] in [0, 1], ``mask`` [C, 1, H, W] (exact, {0, 1}),
        ``vertices`` [V, 3] world and ``landmarks`` [68, 3] world; with ``with_tex``, ``tex`` [C, 3, H, W]
        (texture coordinates, 0 outside the mask).
    """
    device, dtype = head.device, head.dtype
    exp = torch.as_tensor(exp, dtype=dtype, device=device).reshape(1, -1)
    pose = torch.as_tensor(pose, dtype=dtype, device=device).reshape(1, 6)
    scale = torch.as_tensor(scale, dtype=dtype, device=device).reshape(1)
    viewmats = viewmats.to(device=device, dtype=dtype)
    Ks = Ks.to(device=device, dtype=dtype)
    C = viewmats.shape[0]
    if viewmats.shape != (C, 4, 4) or Ks.shape != (C, 3, 3):
        raise ValueError(f"viewmats [C, 4, 4] and Ks [C, 3, 3] expected, got {tuple(viewmats.shape)}, "
                         f"{tuple(Ks.shape)}")
    if backgrounds is not None and backgrounds.shape != (C, 3, height, width):
        raise ValueError(f"backgrounds must be [{C}, 3, {height}, {width}], got {tuple(backgrounds.shape)}")

    canon = head.canonical_vertices(exp)  # [1, V, 3]
    world = apply_pose(canon, pose, scale)
    canon_n = head.vertex_normals(canon)
    world_n = head.vertex_normals(world)
    ao = vertex_occlusion(canon, canon_n, head.faces, exp[:, EXPRESSION_NAMES.index("jaw_open")],
                          head.basis.mouth_push)
    attrs = torch.cat([head.tex[None], world_n, ao], dim=-1)  # [1, V, 7]

    # Back faces never win the z-test of a closed mesh, so each view rasterizes only the faces turned toward it:
    # that halves the rasterizer's work (and keeps self-intersecting folds of the open jaw out of sight).
    v0, v1, v2 = (world[0, head.faces[:, i]] for i in range(3))
    face_n = torch.linalg.cross(v1 - v0, v2 - v0)
    centres = camera_center(viewmats)  # [C, 3]
    per = views_per_batch or max_views_per_batch(width, height)
    images, masks, texs = [], [], []
    for start in range(0, C, per):
        views = range(start, min(start + per, C))
        mask_list, pix_list, attr_list = [], [], []
        for c in views:
            front = ((centres[c] - v0) * face_n).sum(-1) > 0
            out = rasterize_mesh(world, head.faces[front], attrs, viewmats[c:c + 1], Ks[c:c + 1], width, height,
                                 soft=False)
            mask = out["mask"]
            # Gather the covered pixels' attributes through a channels-last view (no full-image copies).
            _, yi, xi = (mask[:, 0] > 0).nonzero(as_tuple=True)
            mask_list.append(mask)
            pix_list.append((yi, xi))
            attr_list.append(out["attrs"][0].permute(1, 2, 0)[yi, xi])  # [N_c, A]
            if with_tex:
                texs.append(out["attrs"][:, :3].clone())
        a = torch.cat(attr_list)
        rgb = _shade(texture.albedo(a[:, :3], exp[0]), a[:, 3:6], a[:, 6:7], light)
        fg = torch.zeros(len(views), 3, height, width, dtype=dtype, device=device)
        for i, (chunk, (yi, xi)) in enumerate(zip(rgb.split([len(p[0]) for p in pix_list]), pix_list)):
            fg[i].permute(1, 2, 0)[yi, xi] = chunk
        mask = torch.cat(mask_list)
        bg = backgrounds[start:start + per].to(device=device, dtype=dtype) if backgrounds is not None \
            else torch.zeros_like(fg)
        images.append(_composite(fg, mask, bg, antialias).clamp(0.0, 1.0))
        masks.append(mask)
    result = {
        "image": torch.cat(images),
        "mask": torch.cat(masks),
        "vertices": world[0],
        "landmarks": head.landmarks(world, exp)[0],
    }
    if with_tex:
        result["tex"] = torch.cat(texs)
    return result
