"""Procedural albedo of the synthetic head, evaluated per pixel from interpolated texture coordinates.

Texture coordinates are canonical rest positions (``HeadModel.tex``), so detail does not depend on the image
resolution. Features come from the identity's layout (``layout.py``) and the expression coefficients:
eyelids close with blinks, the mouth band shows teeth and a dark interior (visible once the jaw opens), and
brows/smiles/frowns add wrinkles and flush.

Regions are painted back to front: skin (tone variation, pores, freckles, flush, stubble), shirt, hair, brows,
lips, mouth interior, nostrils, eyes.
"""
from __future__ import annotations

import math

import torch

from .expression import EXPRESSION_NAMES
from .identity import IdentityParams
from .landmarks import brow_curve, eyelid_curves, lip_heights
from .layout import FaceLayout
from .mathutil import gaussian, smoothstep
from .noise import PeriodicNoise
from .shape import mouth_band_coords

__all__ = ["HeadTexture", "REGION_NAMES"]

REGION_NAMES = ("eye_open", "iris", "pupil", "mouth_interior", "teeth", "lips", "hair", "brows")
_CHUNK = 1 << 19
_TWO_PI = 2.0 * math.pi
# Circumference-to-period factor: azimuth turns into noise periods; y uses the same arc-length scale.
_ARC = 1.0 / (_TWO_PI * 0.9)
_E = {name: i for i, name in enumerate(EXPRESSION_NAMES)}


def _lerp(a: torch.Tensor, b, t: torch.Tensor) -> torch.Tensor:
    """a + (b - a) * t with colours [N, 3] and weights [N]."""
    return a + (b - a) * t[:, None]


def _g2(x, y, cx, cy, sx, sy):
    return gaussian(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2)


def _pick(idx: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Rows ``idx`` of each tensor."""
    return [t.index_select(0, idx) for t in tensors]


def _piecewise(x: torch.Tensor, knots, values) -> torch.Tensor:
    """Piecewise-linear interpolation of (knots, values) at ``x`` (clamped at the ends)."""
    k = torch.tensor(knots, dtype=x.dtype, device=x.device)
    v = torch.tensor(values, dtype=x.dtype, device=x.device)
    i = torch.searchsorted(k, x.contiguous()).clamp(1, len(knots) - 1)
    k0, k1 = k[i - 1], k[i]
    t = ((x - k0) / (k1 - k0)).clamp(0.0, 1.0)
    return v[i - 1] + (v[i] - v[i - 1]) * t


class HeadTexture:
    """Albedo and semantic regions of one identity.

    Args:
        idp: identity parameters (colours, brow shape, ...).
        lay: feature layout.
        device: torch device for the noise images.
    """

    def __init__(self, idp: IdentityParams, lay: FaceLayout, device="cpu"):
        self.idp = idp
        self.lay = lay
        self.device = torch.device(device)
        self.noise = PeriodicNoise(idp.noise_seed, device=self.device)
        c = lambda rgb: torch.tensor(rgb, dtype=torch.float32, device=self.device)  # noqa: E731
        self.skin = c(idp.skin_rgb)
        self.hair = c(idp.hair_rgb)
        self.iris = c(idp.iris_rgb)
        self.lip = c(idp.lip_rgb)
        self.shirt = c(idp.shirt_rgb)

    # ------------------------------------------------------------------ public

    def albedo(self, tex: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
        """Albedo (sRGB-ish, in [0, 1]) at texture coordinates.

        Args:
            tex: [N, 3] texture coordinates.
            exp: [D] expression coefficients of the frame.
        Returns:
            [N, 3] colours.
        """
        if tex.dim() != 2 or tex.shape[1] != 3:
            raise ValueError(f"tex must be [N, 3], got {tuple(tex.shape)}")
        e = [float(v) for v in exp.reshape(-1).tolist()]
        if len(e) != len(EXPRESSION_NAMES):
            raise ValueError(f"exp must have {len(EXPRESSION_NAMES)} coefficients, got {len(e)}")
        tex = tex.to(device=self.device, dtype=torch.float32)
        if tex.shape[0] == 0:
            return tex.new_zeros(0, 3)
        return torch.cat([self._albedo(chunk, e) for chunk in tex.split(_CHUNK)])

    def regions(self, tex: torch.Tensor, exp: torch.Tensor) -> dict[str, torch.Tensor]:
        """Boolean semantic masks [N] at texture coordinates [N, 3] for expression ``exp`` [D].

        Keys: ``REGION_NAMES``. ``iris``/``pupil`` are only the parts not covered by the eyelids; ``mouth_interior``
        is the whole band between the lips (teeth included), which is squeezed shut when the jaw is closed.
        """
        e = [float(v) for v in exp.reshape(-1).tolist()]
        tex = tex.to(device=self.device, dtype=torch.float32)
        x, y, z = tex.unbind(-1)
        out = {}
        eye_open = torch.zeros_like(x, dtype=torch.bool)
        iris = torch.zeros_like(eye_open)
        pupil = torch.zeros_like(eye_open)
        for s in (1.0, -1.0):
            inside = self._eye_frame(x, y, z, s, e)[0]
            r = self._iris_radius(x, y, s)
            eye_open |= inside
            iris |= inside & (r < self.lay.iris_r)
            pupil |= inside & (r < self.lay.pupil_r)
        out["eye_open"], out["iris"], out["pupil"] = eye_open, iris, pupil
        u, v, _ = mouth_band_coords(tex, self.lay)
        band = (u.abs() < 1.0) & (v.abs() < 1.0) & (z > 0.4)
        out["mouth_interior"] = band
        out["teeth"] = band & (((v > 0.3) & (v < 0.85)) | ((v < -0.35) & (v > -0.85)))
        up, lo = lip_heights(u, self.idp)
        hb = self.lay.band_half_height * torch.sqrt((1.0 - u * u).clamp(min=0.0))
        d = y - self.lay.mouth_y
        out["lips"] = (z > 0.4) & ~band & (((d >= hb) & (d < hb + up)) | ((d <= -hb) & (d > -hb - lo)))
        out["hair"] = self._hair_mask(x, y, z) > 0.5
        out["brows"] = self._brow_mask(x, y, z) > 0.5
        return out

    # ------------------------------------------------------------------ pieces

    def _hairline(self, phi_abs: torch.Tensor) -> torch.Tensor:
        """Height of the hairline as a function of |azimuth| (0 = forehead centre, pi = nape)."""
        hl = self.idp.hairline
        return _piecewise(
            phi_abs,
            (0.0, 0.35, 0.62, 0.95, 1.12, 1.28, 1.45, 1.75, 2.05, 2.4, math.pi),
            (0.6 - 0.1 * hl, 0.62 - 0.1 * hl, 0.56 - 0.08 * hl, 0.42, 0.16, -0.02, 0.16, 0.2, 0.05, -0.35, -0.52),
        )

    def _hair_mask(self, x, y, z, jitter=None) -> torch.Tensor:
        phi = torch.atan2(x, z)
        hl = self._hairline(phi.abs())
        if jitter is not None:
            hl = hl + 0.012 * jitter
        return smoothstep(y - hl, -0.015, 0.03)

    def _brow_mask(self, x, y, z) -> torch.Tensor:
        lay = self.lay
        m = torch.zeros_like(x)
        for s in (1.0, -1.0):
            X = (s * x - lay.brow_inner_x) / (lay.brow_outer_x - lay.brow_inner_x)
            yc, half = brow_curve(X, self.idp, lay)
            ends = smoothstep(X, -0.08, 0.04) * (1.0 - smoothstep(X, 0.95, 1.08))
            m = torch.maximum(m, (1.0 - smoothstep((y - yc).abs(), 0.75 * half, half + 0.006)) * ends)
        return m * (z > 0.3)

    def _eye_frame(self, x, y, z, s, e):
        """Eye-opening test for the eye on side ``s`` (+1 = subject's left).

        Returns:
            inside: [N] bool, within the open lids (eyeball visible).
            X: [N] abscissa from the inner (-1) to the outer (+1) corner.
            Y: [N] height above eye_y.
            upper: [N] current upper-lid height (the lid edge).
        """
        lay = self.lay
        blink = e[_E["blink_left"]] if s > 0 else e[_E["blink_right"]]
        blink = min(max(blink, 0.0), 1.0)
        wide = max(e[_E["eye_wide"]], 0.0)
        smile = max(e[_E["smile"]], 0.0) + (max(e[_E["smile_left"]], 0.0) if s > 0 else 0.0)
        X = s * (x - s * lay.eye_x) / lay.eye_half_width
        Y = y - lay.eye_y
        up_open, low = eyelid_curves(X, lay)
        low = low + 0.25 * min(smile, 1.0) * lay.lid_lower * (1.0 - X * X).clamp(min=0.0)
        up_open = up_open * (1.0 + 0.35 * wide) - 0.25 * min(smile, 1.0) * 0.2 * lay.lid_upper
        upper = up_open + (low - up_open) * blink
        inside = (X.abs() < 1.0) & (Y < upper) & (Y > low) & (z > 0.3)
        return inside, X, Y, upper

    def _iris_radius(self, x, y, s):
        return torch.sqrt((x - s * self.lay.eye_x) ** 2 + (y - self.lay.eye_y - 0.006) ** 2)

    def _albedo(self, tex: torch.Tensor, e: list[float]) -> torch.Tensor:
        """Albedo of one chunk of points; each feature is evaluated only on the points that can show it."""
        lay = self.lay
        x, y, z = tex.t().contiguous()
        phi = torch.atan2(x, z)
        pu = phi / _TWO_PI  # azimuth in turns
        pv = y * _ARC
        # Noise at two scales; channels: 0 smooth, 1 mid, 2/3 fine (see PeriodicNoise).
        n1 = self.noise.sample(pu, pv)
        n8 = self.noise.sample(pu * 8.0 + 0.71, pv * 8.0 + 0.53)
        # Skin everywhere: tone variation, pores and fine mottling.
        pores = 1.0 + 0.03 * n8[:, 2] - 0.05 * (n8[:, 3] - 1.4).clamp(min=0.0)
        tone = (1.0 + 0.035 * n1[:, 0] + 0.018 * n1[:, 1]) * pores
        col = tone[:, None] * self.skin

        sub = lambda m: m.nonzero().squeeze(1)  # noqa: E731
        face = sub(z > 0.15)
        if face.numel():
            col.index_copy_(0, face, self._face(*_pick(face, col, tex, x, y, z, n1, n8), e))
        ears = sub((x.abs() > 0.55) & (z < 0.35) & ((y - lay.ear_y).abs() < 0.45))
        if ears.numel():
            xe, ye = _pick(ears, x, y)
            red = 0.14 * sum(_g2(xe, ye, s * (lay.ear_x + 0.1), lay.ear_y, 0.1, 0.2) for s in (1.0, -1.0))
            col.index_copy_(0, ears, col.index_select(0, ears) * (1.0 - red[:, None] * self._flush_tint))
        low = sub(y < lay.chin_y + 0.05)
        if low.numel():
            col.index_copy_(0, low, self._neck(*_pick(low, col, y, phi, pv, n8)))
        top = sub(y > -0.6)
        if top.numel():
            col.index_copy_(0, top, self._hair(*_pick(top, col, x, y, z, pu, pv, n1, n8)))
        return col.clamp(0.0, 1.0)

    @property
    def _flush_tint(self) -> torch.Tensor:
        return torch.tensor([0.0, 0.28, 0.25], device=self.device)

    def _neck(self, col, y, phi, pv, n8):
        """Neck a little darker toward the bottom; a shirt collar at the bottom."""
        lay, idp = self.lay, self.idp
        col = col * (1.0 - 0.07 * smoothstep(lay.chin_y - y, 0.0, 0.2))[:, None]
        collar_y = -1.32 * idp.head_height + 0.04 * torch.cos(phi)
        shirt_m = smoothstep(collar_y - y, -0.005, 0.005)
        weave = 0.88 + 0.08 * n8[:, 2:3] + 0.04 * torch.sin(pv * 900.0)[:, None]
        return _lerp(col, self.shirt * weave, shirt_m)

    def _hair(self, col, x, y, z, pu, pv, n1, n8):
        """Hair over the cranium: strand-like streaks along the meridians from the crown."""
        hair = self._hair_mask(x, y, z, jitter=0.5 * n1[:, 2] + 0.5 * n8[:, 1])
        on = (hair > 0).nonzero().squeeze(1)
        if on.numel() == 0:
            return col
        strands = self.noise.sample(pu.index_select(0, on) * 16.0 + 0.2, pv.index_select(0, on) * 0.5)
        shade = 0.55 + 0.18 * strands[:, 3:4] + 0.1 * strands[:, 2:3] + 0.08 * n1.index_select(0, on)[:, 1:2]
        sheen = 0.1 * smoothstep(strands[:, 3], 0.8, 2.0)[:, None]
        hair_col = self.hair * shade + sheen * (0.35 + self.hair)
        col = col.clone()
        col.index_copy_(0, on, _lerp(col.index_select(0, on), hair_col, hair.index_select(0, on)))
        return col

    def _face(self, col, tex, x, y, z, n1, n8, e):
        """Everything on the front of the head: flush, freckles, stubble, wrinkles, brows, lips, mouth, nostrils,
        eyes."""
        idp, lay = self.idp, self.lay
        front = smoothstep(z, 0.2, 0.5)
        dev = col.device
        # Flush on cheeks, nose tip and chin; smiles and puffed cheeks add some.
        flush_cheek = 0.14 + 0.1 * min(e[_E["smile"]] + 0.5 * e[_E["smile_left"]], 1.0) + 0.15 * e[_E["cheek_puff"]]
        red = (
            sum(_g2(x, y, s * 0.44, -0.32, 0.14, 0.12) for s in (1.0, -1.0)) * flush_cheek
            + 0.12 * _g2(x, y, 0.0, lay.nose_tip_y, 0.07, 0.06)
            + 0.05 * _g2(x, y, 0.0, lay.chin_y + 0.15, 0.14, 0.1)
        ) * front * (1.0 + 0.5 * n1[:, 1])
        col = col * (1.0 - red[:, None] * self._flush_tint)
        if idp.freckles > 0:
            spots = smoothstep(n8[:, 1], 1.3, 1.8) * idp.freckles * front * _g2(x, y, 0.0, -0.15, 0.45, 0.18)
            col = _lerp(col, col * torch.tensor([0.78, 0.62, 0.5], device=dev), spots)
        # Slightly shadowy upper lids / eye sockets.
        sockets = sum(_g2(x, y, s * lay.eye_x, lay.eye_y + 0.04, 0.16, 0.07) for s in (1.0, -1.0)) * front
        col = col * (1.0 - 0.1 * sockets[:, None] * torch.tensor([0.8, 1.0, 0.9], device=dev))
        if idp.stubble > 0:
            beard = front * smoothstep(lay.nose_base_y - 0.06 - y, 0.0, 0.05)
            beard = beard * smoothstep(y - (lay.chin_y - 0.25), 0.0, 0.1)
            beard = beard * (1.0 - smoothstep(x.abs() - 0.62, -0.05, 0.05))
            dots = smoothstep(n8[:, 3], 0.2, 1.2)
            col = _lerp(col, self.hair * 0.8, 0.45 * idp.stubble * beard * dots)
        col = col * (1.0 - self._wrinkles(x, y, front, n1, e))[:, None]

        sub = lambda m: m.nonzero().squeeze(1)  # noqa: E731
        brow_zone = sub(((y - lay.brow_y - 0.03).abs() < 0.12) & (x.abs() < lay.brow_outer_x + 0.08))
        if brow_zone.numel():
            col.index_copy_(0, brow_zone, self._brows(*_pick(brow_zone, col, x, y, z)))
        mouth_zone = sub((x.abs() < 1.15 * lay.mouth_half_width) & ((y - lay.mouth_y).abs() < 0.2) & (z > 0.4))
        if mouth_zone.numel():
            col.index_copy_(0, mouth_zone, self._lips_and_mouth(*_pick(mouth_zone, col, tex, n1), e))
        nw = lay.nose_half_width
        nose_zone = sub((x.abs() < nw + 0.05) & ((y - lay.nose_base_y - 0.03).abs() < 0.08))
        if nose_zone.numel():
            xn, yn = _pick(nose_zone, x, y)
            nos = sum(_g2(xn, yn, s * 0.42 * nw, lay.nose_base_y + 0.03, 0.22 * nw, 0.022) for s in (1.0, -1.0))
            nos = nos * front.index_select(0, nose_zone) * smoothstep(lay.nose_base_y + 0.07 - yn, 0.0, 0.02)
            col.index_copy_(0, nose_zone, col.index_select(0, nose_zone) * (1.0 - 0.75 * nos.clamp(max=1.0))[:, None])
        eye_zone = sub(((x.abs() - lay.eye_x).abs() < lay.eye_half_width + 0.05) & ((y - lay.eye_y).abs() < 0.14)
                       & (z > 0.3))
        if eye_zone.numel():
            col.index_copy_(0, eye_zone, self._eye_colour(*_pick(eye_zone, x, y, z, col), e))
        return col

    def _wrinkles(self, x, y, front, n1, e) -> torch.Tensor:
        """Darkening [N] from expression wrinkles: forehead, frown, nose, crow's feet, nasolabial folds."""
        lay = self.lay
        wr = torch.zeros_like(x)
        for name, s in (("brow_up_left", 1.0), ("brow_up_right", -1.0)):
            a = max(e[_E[name]], 0.0)
            if a > 0:
                lines = torch.sin((y - 0.3) * 95.0 + 1.5 * n1[:, 1]).clamp(min=0.0) ** 3
                wr += a * 0.22 * lines * _g2(x, y, s * 0.25, 0.42, 0.2, 0.12) * front
        a = max(e[_E["brow_down"]], 0.0)
        if a > 0:
            lines = torch.sin(x * 80.0).clamp(min=0.0) ** 4
            wr += a * 0.3 * lines * _g2(x, y, 0.0, lay.brow_y + 0.02, 0.07, 0.08) * front
        a = max(e[_E["nose_wrinkle"]], 0.0)
        if a > 0:
            lines = torch.sin(y * 110.0).clamp(min=0.0) ** 3
            wr += a * 0.3 * lines * _g2(x, y, 0.0, lay.eye_y - 0.05, 0.11, 0.06) * front
        for s in (1.0, -1.0):
            amt = max(e[_E["smile"]], 0.0) + (max(e[_E["smile_left"]], 0.0) if s > 0 else 0.0)
            amt = min(amt, 1.0)
            if amt <= 0:
                continue
            # Crow's feet: lines fanning out from the outer eye corner.
            dx = s * x - (lay.eye_x + lay.eye_half_width + 0.02)
            ang = torch.atan2(y - lay.eye_y, dx.clamp(min=1e-3))
            wr += amt * 0.25 * torch.sin(ang * 14.0).clamp(min=0.0) ** 2 * _g2(dx, y, 0.05, lay.eye_y, 0.05, 0.08)
            # Deeper nasolabial fold.
            fold_x = s * (0.17 + 0.1 * (lay.nose_base_y - y).clamp(min=0.0))
            wr += amt * 0.3 * _g2(x, y, fold_x, (lay.nose_base_y + lay.mouth_y) / 2 - 0.02, 0.018, 0.12) * front
        return wr.clamp(max=0.6)

    def _brows(self, col, x, y, z):
        brows = self._brow_mask(x, y, z)
        on = (brows > 0).nonzero().squeeze(1)
        if on.numel() == 0:
            return col
        phi = torch.atan2(x.index_select(0, on), z.index_select(0, on))
        bn = self.noise.sample(phi / _TWO_PI * 2.0 + 0.4, y.index_select(0, on) * _ARC * 24.0)
        dens = (0.75 + 0.25 * bn[:, 3]).clamp(0.0, 1.0)
        col = col.clone()
        brow_col = self.hair * (0.7 + 0.15 * bn[:, 2:3])
        col.index_copy_(0, on, _lerp(col.index_select(0, on), brow_col, 0.9 * brows.index_select(0, on) * dens))
        return col

    def _lips_and_mouth(self, col, tex, n1, e):
        """Lips (vermilion with Cupid's bow and lip lines) and the mouth band (interior, teeth)."""
        idp, lay = self.idp, self.lay
        x, y = tex[:, 0], tex[:, 1]
        u, v, hb = mouth_band_coords(tex, lay)
        d = y - lay.mouth_y
        up, lo = lip_heights(u, idp)
        edge = 0.006
        upper = smoothstep(d - hb, -edge, 0.0) * (1.0 - smoothstep(d - hb - up, -edge, edge))
        lower = smoothstep(-d - hb, -edge, 0.0) * (1.0 - smoothstep(-d - hb - lo, -edge, edge))
        lipm = (upper + lower).clamp(max=1.0)
        lines = 1.0 + 0.06 * torch.sin(x * 260.0 + 2.0 * n1[:, 2]) * (1.0 + 0.5 * max(e[_E["pucker"]], 0.0))
        lip_col = self.lip * lines[:, None] * (1.0 + 0.04 * n1[:, 1:2])
        # The vermilion is a bit darker toward the line where the lips meet.
        lip_col = lip_col * (1.0 - 0.18 * smoothstep(0.025 - (d.abs() - hb), 0.0, 0.025))[:, None]
        col = _lerp(col, lip_col, lipm)
        band = ((u.abs() < 1.0) & (v.abs() < 1.0)).nonzero().squeeze(1)
        if band.numel():
            inner = self._mouth_colour(*_pick(band, u, v, n1))
            # With the jaw shut the squeezed band is only the dark line between the lips; the interior fades in
            # as soon as the jaw starts to open.
            shut = (self.lip * 0.4).expand_as(inner)
            opening = smoothstep(torch.full((band.numel(),), e[_E["jaw_open"]], device=u.device), 0.02, 0.15)
            col.index_copy_(0, band, _lerp(shut, inner, opening))
        return col

    def _mouth_colour(self, u, v, n):
        """Colours inside the mouth band at band coordinates (u, v); v = +1 upper lip edge, -1 lower."""
        dark = torch.tensor([0.2, 0.04, 0.05], device=u.device)
        gum = torch.tensor([0.72, 0.36, 0.38], device=u.device)
        tooth = torch.tensor([0.93, 0.9, 0.83], device=u.device)
        tongue = torch.tensor([0.6, 0.25, 0.26], device=u.device)
        col = dark.expand(u.shape[0], 3).clone()
        col = _lerp(col, tongue, smoothstep(-v, 0.0, 0.25) * (1.0 - smoothstep(-v, 0.3, 0.4)) * 0.8)
        # Teeth: separated by thin gaps; the upper row is longer. Shaded darker toward the corners.
        gaps = 1.0 - 0.5 * gaussian(((torch.frac(u * 4.2 + 8.5) - 0.5) / 0.04) ** 2)
        side = (1.0 - 0.55 * u.abs() ** 2)
        upper_t = smoothstep(v, 0.3, 0.36) * (1.0 - smoothstep(v, 0.8, 0.86))
        lower_t = smoothstep(-v, 0.35, 0.41) * (1.0 - smoothstep(-v, 0.8, 0.86))
        teeth = (upper_t + lower_t).clamp(max=1.0)
        col = _lerp(col, tooth * (gaps * side)[:, None] * (1.0 + 0.02 * n[:, 2:3]), teeth)
        gums = smoothstep(v.abs(), 0.86, 0.9)
        col = _lerp(col, gum * side[:, None], gums)
        return col

    def _eye_colour(self, x, y, z, col, e):
        """Eyeballs within the open lids, lashes along the upper lid, and the lid crease."""
        lay = self.lay
        for s in (1.0, -1.0):
            inside, X, Y, upper = self._eye_frame(x, y, z, s, e)
            near = (X.abs() < 1.3) & (Y.abs() < 0.14)
            if not bool(near.any()):
                continue
            # Lid crease above the open eye, lashes along the upper lid edge, faint lower lash line.
            _, low = eyelid_curves(X, lay)
            crease = gaussian(((Y - (lay.lid_upper + 0.028)) / 0.006) ** 2) * (1.0 - X * X).clamp(min=0.0)
            lash = gaussian(((Y - upper - 0.004) / 0.006) ** 2) * smoothstep(1.1 - X.abs(), 0.0, 0.15)
            lash_lo = gaussian(((Y - low + 0.003) / 0.004) ** 2) * smoothstep(1.0 - X.abs(), 0.0, 0.2)
            shade = (1.0 - 0.18 * crease - 0.75 * lash - 0.25 * lash_lo).clamp(min=0.1)
            col = torch.where(near[:, None], col * shade[:, None], col)
            if not bool(inside.any()):
                continue
            # Eyeball: sclera pinker toward the corners, caruncle at the inner corner, then iris and pupil.
            sclera = torch.tensor([0.92, 0.89, 0.86], device=x.device)
            pink = torch.tensor([0.85, 0.55, 0.52], device=x.device)
            ball = _lerp(sclera.expand(x.shape[0], 3), pink, 0.35 * smoothstep(X.abs(), 0.55, 1.0))
            ball = _lerp(ball, pink * 0.9, smoothstep(-X, 0.8, 0.92))
            r = self._iris_radius(x, y, s)
            ang = torch.atan2(y - lay.eye_y, x - s * lay.eye_x)
            rr = r / lay.iris_r
            fib = self.noise.sample(ang / _TWO_PI * 6.0, rr * 0.4)
            iris_col = self.iris * (0.75 + 0.2 * fib[:, 3:4] + 0.15 * torch.sin(ang * 31.0)[:, None])
            iris_col = iris_col * (1.0 - 0.45 * smoothstep(rr, 0.8, 1.0))[:, None]  # dark limbal ring
            iris_col = iris_col * (1.0 + 0.25 * smoothstep(0.75 - rr, 0.0, 0.3))[:, None]  # lighter around pupil
            ball = _lerp(ball, iris_col, smoothstep(lay.iris_r - r, -0.002, 0.002))
            ball = _lerp(ball, torch.full_like(ball, 0.03), smoothstep(lay.pupil_r - r, -0.0015, 0.0015))
            catch = gaussian(((x - s * lay.eye_x + 0.018) ** 2 + (y - lay.eye_y - 0.03) ** 2) / 0.007 ** 2)
            ball = _lerp(ball, torch.full_like(ball, 1.0), 0.8 * catch)
            # The upper lid shadows the top of the eyeball.
            ball = ball * (1.0 - 0.45 * torch.exp(-((upper - Y).clamp(min=0.0) / 0.012).clamp(max=60.0)))[:, None]
            col = torch.where(inside[:, None], ball, col)
        return col
