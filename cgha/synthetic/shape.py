"""Rest (neutral) shape of an identity: a smooth signed-distance head, meshed by projecting the template sphere.

The head is an implicit surface (ellipsoids for cranium, face, jaw and chin, a rounded cylinder for the neck, a
round cone for the nose, Gaussian bumps and dents for brow ridge, cheeks, eyes, lips and ears, smoothly unioned).
Each template vertex is moved along its ray from ``_RAY_ORIGIN`` to the outermost zero crossing, which keeps the
fixed topology of the template while the shape varies per identity.

The mouth needs one more step: the rest mesh squeezes a band of template rows shut along the line where the lips
meet (``mouth_y``), stretching the lips around it a little. The band's *texture coordinates* keep the unsqueezed
positions, so when the jaw opens and the band unfolds into a cavity, it shows the mouth interior and the teeth.
"""
from __future__ import annotations

import math

import torch

from .identity import IdentityParams
from .layout import FaceLayout
from .mathutil import gaussian

__all__ = ["head_sdf", "project_to_surface", "mouth_warp", "mouth_band_coords", "rest_shape"]

_RAY_ORIGIN = (0.0, -0.12, 0.0)
_RAY_T_MAX = 2.6
_TRACE_STEPS = 200
# The SDF minus bumps is not 1-Lipschitz (bump slopes add up to ~0.8), so sphere-tracing steps are scaled down.
_STEP_SAFETY = 0.55
_STEP_MIN = 0.008
_BISECT_STEPS = 12
_CHUNK = 1 << 16


def _ellipsoid(p, c, r):
    """Approximate signed distance to an axis-aligned ellipsoid (exact on the surface, good near it).

    ``p`` is a tuple of three [N] coordinate tensors (separate components are much faster than [N, 3] on CPU).
    """
    qx = (p[0] - c[0]) / r[0]
    qy = (p[1] - c[1]) / r[1]
    qz = (p[2] - c[2]) / r[2]
    k0 = torch.sqrt(qx * qx + qy * qy + qz * qz)
    k1 = torch.sqrt((qx / r[0]) ** 2 + (qy / r[1]) ** 2 + (qz / r[2]) ** 2).clamp(min=1e-9)
    return k0 * (k0 - 1.0) / k1


def _smin(a, b, k):
    """Polynomial smooth minimum (blend radius ``k``)."""
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b * (1.0 - h) + a * h - k * h * (1.0 - h)


def _gauss(p, c, s):
    """Anisotropic Gaussian bump exp(-|(p - c) / s|^2 / 2)."""
    return gaussian(((p[0] - c[0]) / s[0]) ** 2 + ((p[1] - c[1]) / s[1]) ** 2 + ((p[2] - c[2]) / s[2]) ** 2)


def _round_cone(p, a, b, r1, r2):
    """Signed distance to a cone between spheres (a, r1) and (b, r2) (Inigo Quilez's sdRoundCone)."""
    ba = [b[i] - a[i] for i in range(3)]
    l2 = sum(c * c for c in ba)
    rr = r1 - r2
    a2 = l2 - rr * rr
    il2 = 1.0 / l2
    pa = [p[i] - a[i] for i in range(3)]
    y = pa[0] * ba[0] + pa[1] * ba[1] + pa[2] * ba[2]
    z = y - l2
    x2 = sum((pa[i] * l2 - y * ba[i]) ** 2 for i in range(3))
    y2 = y * y * l2
    z2 = z * z * l2
    k = math.copysign(1.0, rr) * rr * rr * x2
    d_b = torch.sqrt(x2 + z2) * il2 - r2
    d_a = torch.sqrt(x2 + y2) * il2 - r1
    d_m = (torch.sqrt((x2 * a2 * il2).clamp(min=0.0)) + y * rr) * il2 - r1
    return torch.where(torch.sign(z) * a2 * z2 > k, d_b, torch.where(torch.sign(y) * a2 * y2 < k, d_a, d_m))


def _rounded_cylinder_y(p, cx, cz, r, y0, y1, rounding):
    """Signed distance to a vertical cylinder (axis through (cx, cz)) between heights y0 < y1, edges rounded."""
    radial = torch.sqrt((p[0] - cx) ** 2 + (p[2] - cz) ** 2) - (r - rounding)
    vertical = (p[1] - 0.5 * (y0 + y1)).abs() - (0.5 * (y1 - y0) - rounding)
    outside = torch.sqrt(radial.clamp(min=0.0) ** 2 + vertical.clamp(min=0.0) ** 2)
    return torch.minimum(torch.maximum(radial, vertical), torch.zeros_like(radial)) + outside - rounding


def head_sdf(p: torch.Tensor, idp: IdentityParams, lay: FaceLayout) -> torch.Tensor:
    """Signed distance (approximate; negative inside) of the neutral head.

    Args:
        p: [N, 3] canonical points.
    Returns:
        [N] signed distances.
    """
    p = p.unbind(-1)
    w, h, d = idp.head_width, idp.head_height, idp.head_depth
    jw = idp.jaw_width
    ex, ey = lay.eye_x, lay.eye_y
    my = lay.mouth_y

    f = _ellipsoid(p, (0.0, 0.16 * h, -0.10 * d), (0.84 * w, 0.96 * h, 1.0 * d))
    # Face block: flatter front than the cranium.
    f = _smin(f, _ellipsoid(p, (0.0, -0.12, 0.22), (0.66 * w, 0.86 * h, 0.68)), 0.22)
    # Lower face and jaw.
    f = _smin(f, _ellipsoid(p, (0.0, -0.5 * h, 0.16), (0.6 * jw * w, 0.56 * h * idp.chin_length, 0.76)), 0.2)
    for s in (-1.0, 1.0):
        f = _smin(f, _ellipsoid(p, (s * 0.5 * jw * w, -0.6 * h, -0.12), (0.2, 0.24, 0.34)), 0.2)
    chin_c = (0.0, lay.chin_y + 0.17, 0.5 + 0.06 * idp.chin)
    f = _smin(f, _ellipsoid(p, chin_c, (0.23 * jw, 0.18, 0.22 * idp.chin)), 0.16)
    # Neck stub, closed at the bottom.
    f = _smin(f, _rounded_cylinder_y(p, 0.0, -0.2, 0.46 * w, -1.55 * h, -0.2, 0.1), 0.3)

    # Nose: bridge-to-tip round cone plus the two nostril wings.
    tip_z = 0.88 + 0.27 * idp.nose_bridge * idp.nose_length
    nose = _round_cone(p, (0.0, lay.nose_top_y, 0.8), (0.0, lay.nose_tip_y, tip_z - 0.09), 0.055, 0.09)
    for s in (-1.0, 1.0):
        ala = _ellipsoid(p, (s * 0.085 * idp.nose_width, lay.nose_base_y + 0.05, 0.93),
                         (0.07 * idp.nose_width, 0.058, 0.075))
        nose = _smin(nose, ala, 0.05)
    f = _smin(f, nose, 0.06)

    bump = torch.zeros_like(f)
    # Brow ridge and forehead.
    bump += (0.035 + 0.03 * idp.brow_ridge) * _gauss(p, (0.0, lay.brow_y + 0.02, 0.9), (0.4, 0.07, 0.14))
    for s in (-1.0, 1.0):
        # Eye sockets, then the eyeball and the upper-lid fold inside them.
        bump -= 0.1 * _gauss(p, (s * ex, ey + 0.02, 0.86), (0.16, 0.11, 0.12))
        bump += 0.06 * _gauss(p, (s * ex, ey, 0.8), (0.095, 0.06, 0.12))
        bump += 0.02 * _gauss(p, (s * ex, ey + lay.lid_upper + 0.008, 0.85), (0.12, 0.02, 0.06))
        bump += 0.01 * _gauss(p, (s * ex, ey - lay.lid_lower - 0.008, 0.85), (0.11, 0.016, 0.06))
        # Cheekbones and cheeks.
        bump += (0.02 + 0.04 * idp.cheekbones) * _gauss(p, (s * 0.48 * w, -0.16, 0.62), (0.14, 0.09, 0.14))
        bump += (0.015 + 0.045 * idp.cheek_fullness) * _gauss(p, (s * 0.42 * w, -0.46, 0.6), (0.15, 0.14, 0.16))
        # Temples.
        bump -= 0.03 * _gauss(p, (s * 0.72 * w, 0.3, 0.42), (0.1, 0.14, 0.14))
        # Ears: a shell on the side of the head, with a hollow (concha) in its middle.
        es = idp.ear_size
        bump += 0.2 * es * _gauss(p, (s * lay.ear_x, lay.ear_y, lay.ear_z), (0.09, 0.19 * es, 0.11 * es))
        bump += 0.06 * es * _gauss(p, (s * (lay.ear_x + 0.12), lay.ear_y + 0.08, lay.ear_z - 0.06),
                                   (0.06, 0.1 * es, 0.06 * es))
        bump -= 0.07 * es * _gauss(p, (s * (lay.ear_x + 0.2), lay.ear_y - 0.02, lay.ear_z + 0.03),
                                   (0.05, 0.07 * es, 0.045 * es))
        # Nasolabial fold (a soft crease from the nose wing to beyond the mouth corner).
        bump -= 0.012 * _gauss(p, (s * 0.22, (lay.nose_base_y + my) / 2, 0.86), (0.035, 0.1, 0.1))
    # Lips, with the crease where they meet, and the philtrum.
    lf = idp.lip_fullness
    mw = lay.mouth_half_width
    bump += 0.05 * lf * _gauss(p, (0.0, my + 0.035, 0.93), (0.6 * mw, 0.03, 0.08))
    bump += 0.06 * lf * _gauss(p, (0.0, my - 0.05, 0.9), (0.55 * mw, 0.038, 0.08))
    bump -= 0.03 * _gauss(p, (0.0, my, 0.93), (0.75 * mw, 0.012, 0.1))
    bump -= 0.012 * _gauss(p, (0.0, (lay.nose_base_y + my) / 2 + 0.02, 0.95), (0.025, 0.05, 0.08))
    # Mentolabial sulcus (the dip between lower lip and chin).
    bump -= 0.015 * _gauss(p, (0.0, my - 0.14, 0.88), (0.14, 0.03, 0.08))
    # Hair volume on the cranium.
    bump += 0.04 * _gauss(p, (0.0, 0.55, -0.25), (0.75, 0.5, 0.8))
    return f - bump


def _sdf_chunked(p: torch.Tensor, idp: IdentityParams, lay: FaceLayout) -> torch.Tensor:
    """``head_sdf`` in chunks: small temporaries stay in cache and out of the allocator's slow path."""
    if p.shape[0] <= _CHUNK:
        return head_sdf(p, idp, lay)
    return torch.cat([head_sdf(c, idp, lay) for c in p.split(_CHUNK)])


def project_to_surface(dirs: torch.Tensor, idp: IdentityParams, lay: FaceLayout) -> torch.Tensor:
    """Move unit ray directions from ``_RAY_ORIGIN`` to the outermost zero crossing of the head SDF.

    Sphere tracing from outside (``t = _RAY_T_MAX``) inward with conservative steps finds the outermost crossing
    (the nose tip, not the face behind it); a short bisection then polishes it.

    Args:
        dirs: [V, 3] unit vectors.
    Returns:
        [V, 3] surface points (canonical).
    """
    origin = torch.tensor(_RAY_ORIGIN, dtype=dirs.dtype, device=dirs.device)
    n = dirs.shape[0]
    t_out = torch.full((n,), _RAY_T_MAX, dtype=dirs.dtype, device=dirs.device)  # known outside
    t_in = torch.zeros(n, dtype=dirs.dtype, device=dirs.device)  # inside once the ray has crossed
    active = torch.arange(n, device=dirs.device)
    f_out = _sdf_chunked(origin + dirs * t_out[:, None], idp, lay)
    for _ in range(_TRACE_STEPS):
        if active.numel() == 0:
            break
        step = (_STEP_SAFETY * f_out).clamp(min=_STEP_MIN)
        t_try = (t_out[active] - step).clamp(min=0.0)
        f_try = _sdf_chunked(origin + dirs[active] * t_try[:, None], idp, lay)
        crossed = f_try < 0
        t_in[active[crossed]] = t_try[crossed]
        t_out[active[~crossed]] = t_try[~crossed]
        active = active[~crossed]
        f_out = f_try[~crossed]
    if active.numel() > 0:
        raise RuntimeError("synthetic head: a template ray does not reach the head surface")
    lo, hi = t_in, t_out
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        inside = _sdf_chunked(origin + dirs * mid[:, None], idp, lay) < 0
        lo = torch.where(inside, mid, lo)
        hi = torch.where(inside, hi, mid)
    return origin + dirs * (0.5 * (lo + hi))[:, None]


def mouth_band_coords(tex: torch.Tensor, lay: FaceLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coordinates of texture-space points relative to the mouth band.

    Args:
        tex: [N, 3] texture coordinates (unsqueezed rest positions).
    Returns:
        u: [N] x over the mouth half width (|u| < 1 between the corners).
        v: [N] (y - mouth_y) over the band half height at that u (|v| < 1 inside the band; +1 = upper lip side).
        hb: [N] band half height at u (0 beyond the corners).
    """
    u = tex[:, 0] / lay.mouth_half_width
    hb = lay.band_half_height * torch.sqrt((1.0 - u * u).clamp(min=0.0))
    v = (tex[:, 1] - lay.mouth_y) / hb.clamp(min=1e-6)
    return u, v, hb


def mouth_warp(tex: torch.Tensor, lay: FaceLayout) -> torch.Tensor:
    """Rest-geometry height of texture-space points: the band is squeezed shut, the lips stretched around it.

    ``delta = y - mouth_y`` maps linearly ``[0, hb] -> [0, eps]`` and ``[hb, reach] -> [eps, reach]`` (and
    symmetrically below); beyond ``reach`` or outside the corners nothing moves. Only on the face front.

    Args:
        tex: [N, 3] texture coordinates.
    Returns:
        [N] rest y.
    """
    u, _, hb = mouth_band_coords(tex, lay)
    eps = lay.band_rest_half_height * hb / lay.band_half_height
    reach = lay.warp_reach
    delta = tex[:, 1] - lay.mouth_y
    a = delta.abs()
    inner = a * eps / hb.clamp(min=1e-9)
    outer = eps + (a - hb) * (reach - eps) / (reach - hb)
    warped = torch.where(a <= hb, inner, torch.where(a < reach, outer, a))
    front = tex[:, 2] > 0.4
    moved = front & (hb > 0)
    return torch.where(moved, lay.mouth_y + torch.sign(delta) * warped, tex[:, 1])


def _reproject_z(points: torch.Tensor, idp: IdentityParams, lay: FaceLayout) -> torch.Tensor:
    """Slide front-facing points along z onto the surface (the face is a height field z(x, y) around the mouth)."""
    lo = points[:, 2] - 0.25
    hi = points[:, 2] + 0.25
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        fm = head_sdf(torch.stack([points[:, 0], points[:, 1], mid], dim=-1), idp, lay)
        lo = torch.where(fm < 0, mid, lo)
        hi = torch.where(fm < 0, hi, mid)
    return torch.stack([points[:, 0], points[:, 1], 0.5 * (lo + hi)], dim=-1)


def rest_shape(dirs: torch.Tensor, idp: IdentityParams, lay: FaceLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Neutral mesh vertices and their texture coordinates for one identity.

    Args:
        dirs: [V, 3] float64 template directions.
    Returns:
        rest: [V, 3] neutral vertex positions (mouth squeezed shut).
        tex: [V, 3] texture coordinates (same as ``rest`` except around the mouth, where they keep the unsqueezed
            positions).
    """
    tex = project_to_surface(dirs, idp, lay)
    y = mouth_warp(tex, lay)
    moved = (y - tex[:, 1]).abs() > 0
    rest = tex.clone()
    if bool(moved.any()):
        pts = tex[moved].clone()
        pts[:, 1] = y[moved]
        rest[moved] = _reproject_z(pts, idp, lay)
    return rest, tex
