"""68 facial landmarks in iBUG order, attached to vertices of the synthetic head.

Order: jaw 0-16 (from the subject's right ear, i.e. image left in a frontal view, to the left ear), brows 17-26,
nose bridge 27-30, nostril base 31-35, eyes 36-47, outer lips 48-59, inner lips 60-67.

Each landmark is a vertex chosen once per identity from its texture coordinates; the upper-lid points of the eyes
blend toward a second vertex on the closed-lid line with the blink coefficient, because the eyelid closes in the
texture (appearance), not by moving the upper-lid vertices.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from .expression import EXPRESSION_NAMES
from .identity import IdentityParams
from .layout import FaceLayout
from .mathutil import gaussian

__all__ = ["NUM_LANDMARKS", "LandmarkSpec", "build_landmarks", "eyelid_curves", "brow_curve", "lip_heights"]

NUM_LANDMARKS = 68


@dataclasses.dataclass
class LandmarkSpec:
    """Vertex indices of the landmarks.

    Attributes:
        open_idx: [68] int64 vertex of each landmark with open eyes.
        closed_idx: [68] int64 vertex with the eye closed (equal to ``open_idx`` except upper lids).
        blink_coeff: [68] int64 index of the blink coefficient that moves the landmark, or -1.
    """

    open_idx: torch.Tensor
    closed_idx: torch.Tensor
    blink_coeff: torch.Tensor

    def to(self, device) -> "LandmarkSpec":
        return LandmarkSpec(self.open_idx.to(device), self.closed_idx.to(device), self.blink_coeff.to(device))

    def positions(self, verts: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
        """Landmark positions.

        Args:
            verts: [B, V, 3] vertices (any space: canonical or world).
            exp: [B, D] expression coefficients.
        Returns:
            [B, 68, 3].
        """
        a = verts[:, self.open_idx]
        b = verts[:, self.closed_idx]
        coeff = self.blink_coeff.clamp(min=0)
        t = exp.to(verts.dtype)[:, coeff].clamp(0.0, 1.0) * (self.blink_coeff >= 0).to(verts.dtype)
        return a + t[..., None] * (b - a)


def eyelid_curves(X: torch.Tensor, lay: FaceLayout):
    """Open upper and lower lid heights above ``eye_y`` at the normalised eye abscissa ``X`` (|X| <= 1).

    ``X`` runs from the inner corner (-1) to the outer corner (+1); the outer corner sits slightly higher
    (canthal tilt) and the upper lid peaks a little toward the inner side.
    Returns:
        (upper, lower): tensors like ``X``.
    """
    Xc = X.clamp(-1.0, 1.0)
    base = (1.0 - Xc * Xc).clamp(min=0.0)
    tilt = 0.012 * Xc
    upper = lay.lid_upper * base.pow(0.6) * (1.0 - 0.15 * Xc) + tilt
    lower = -lay.lid_lower * base.pow(0.8) + tilt
    return upper, lower


def brow_curve(X: torch.Tensor, idp: IdentityParams, lay: FaceLayout):
    """Brow centre height and half thickness along the brow, ``X`` in [0, 1] from its inner to its outer end."""
    arch = (0.02 + 0.04 * idp.brow_arch) * torch.sin(math.pi * X.clamp(0.0, 1.0) * 0.85)
    y = lay.brow_y + arch + 0.03 * idp.brow_tilt * X - 0.025 * X * X
    half = 0.022 * idp.brow_thickness * (1.0 - 0.55 * X.clamp(0.0, 1.0))
    return y, half


def lip_heights(u: torch.Tensor, idp: IdentityParams):
    """Visible vermilion height of the upper and lower lip in texture space at mouth abscissa ``u``.

    The upper lip has a Cupid's bow (two peaks either side of a central dip).
    """
    taper = (1.0 - (u.abs() / 1.08).clamp(max=1.0) ** 2).clamp(min=0.0).sqrt()
    bow = 0.012 * gaussian(((u.abs() - 0.28) / 0.12) ** 2) - 0.006 * gaussian((u / 0.08) ** 2)
    upper = idp.lip_fullness * (0.042 + bow) * taper
    lower = idp.lip_fullness * 0.06 * taper
    return upper, lower


def _nearest_front(tex: torch.Tensor, normals_z: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Index of the front-facing vertex nearest (in x, y) to each target [K, 2]."""
    cand = ((tex[:, 2] > 0.2) & (normals_z > 0.2)).nonzero().squeeze(1)
    d = torch.cdist(xy.to(tex.dtype), tex[cand, :2])
    return cand[d.argmin(dim=1)]


def _nearest_3d(tex: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    return torch.cdist(pts.to(tex.dtype), tex).argmin(dim=1)


def build_landmarks(tex: torch.Tensor, normals: torch.Tensor, idp: IdentityParams, lay: FaceLayout) -> LandmarkSpec:
    """Choose the landmark vertices of one identity.

    Args:
        tex: [V, 3] texture coordinates (unsqueezed rest positions).
        normals: [V, 3] rest vertex normals.
    Returns:
        LandmarkSpec.
    """
    dt = tex.dtype
    # Jaw contour: from below the right ear, round the chin, to below the left ear.
    jaw = []
    for k in range(17):
        a = math.pi * (k / 16.0 - 0.5) * 0.92
        c = math.cos(a)
        jaw.append((math.sin(a) * 0.68 * idp.jaw_width * idp.head_width,
                    -0.22 + (lay.chin_y + 0.22) * c ** 1.6,
                    -0.1 + 0.72 * c))
    jaw_idx = _nearest_3d(tex, torch.tensor(jaw, dtype=dt))

    xy = []
    # Brows 17-21 (right, outer -> inner) and 22-26 (left, inner -> outer).
    Xb = torch.linspace(0.0, 1.0, 5, dtype=dt)
    yb, _ = brow_curve(Xb, idp, lay)
    bx = lay.brow_inner_x + Xb * (lay.brow_outer_x - lay.brow_inner_x)
    for i in range(5):
        xy.append((-float(bx[4 - i]), float(yb[4 - i])))
    for i in range(5):
        xy.append((float(bx[i]), float(yb[i])))
    # Nose bridge 27-30 and nostril base 31-35.
    for t in range(4):
        xy.append((0.0, lay.eye_y + 0.03 + (lay.nose_tip_y - lay.eye_y - 0.03) * t / 3.0))
    nw = lay.nose_half_width
    for x in (-0.62, -0.32, 0.0, 0.32, 0.62):
        xy.append((x * nw, lay.nose_base_y + (0.02 if x == 0.0 else 0.035)))
    # Eyes 36-47: open positions, and closed positions for the upper lid points.
    ew = lay.eye_half_width
    eye_open, eye_closed, eye_blink = [], [], []
    for s, outer_first, coeff in ((-1.0, True, EXPRESSION_NAMES.index("blink_right")),
                                  (1.0, False, EXPRESSION_NAMES.index("blink_left"))):
        # iBUG walks each eye clockwise in the image starting at its left-most corner.
        Xs = [1.0, 0.35, -0.35, -1.0, -0.35, 0.35] if outer_first else [-1.0, -0.35, 0.35, 1.0, 0.35, -0.35]
        upper = [False, True, True, False, False, False]
        for X, up in zip(Xs, upper):
            Xt = torch.tensor([X], dtype=dt)
            yu, yl = eyelid_curves(Xt, lay)
            x = s * lay.eye_x + s * X * ew
            y_open = float(yu if up else yl) if abs(X) < 1.0 else float(yl)
            eye_open.append((x, lay.eye_y + y_open))
            eye_closed.append((x, lay.eye_y + float(yl) + 0.004))
            eye_blink.append(coeff if up else -1)
    # Outer lips 48-59 and inner lips 60-67 (band edges).
    mw, my = lay.mouth_half_width, lay.mouth_y
    outer_u = [-1.02, -0.6, -0.28, 0.0, 0.28, 0.6, 1.02, 0.6, 0.28, 0.0, -0.28, -0.6]
    outer_side = [0, 1, 1, 1, 1, 1, 0, -1, -1, -1, -1, -1]
    inner_u = [-0.9, -0.4, 0.0, 0.4, 0.9, 0.4, 0.0, -0.4]
    inner_side = [0, 1, 1, 1, 0, -1, -1, -1]
    lips = []
    for us, sides, outer in ((outer_u, outer_side, True), (inner_u, inner_side, False)):
        for u, side in zip(us, sides):
            ut = torch.tensor([u], dtype=dt)
            hb = lay.band_half_height * math.sqrt(max(0.0, 1.0 - u * u))
            up, lo = lip_heights(ut, idp)
            if side == 0:
                dy = 0.0
            elif outer:
                dy = side * (hb + float(up if side > 0 else lo)) * 0.92
            else:
                dy = side * hb * 0.97
            lips.append((u * mw, my + dy))

    xy_t = torch.tensor(xy, dtype=dt)
    face_idx = _nearest_front(tex, normals[:, 2], xy_t)
    eye_idx = _nearest_front(tex, normals[:, 2], torch.tensor(eye_open, dtype=dt))
    eye_closed_idx = _nearest_front(tex, normals[:, 2], torch.tensor(eye_closed, dtype=dt))
    lip_idx = _nearest_front(tex, normals[:, 2], torch.tensor(lips, dtype=dt))

    open_idx = torch.cat([jaw_idx, face_idx, eye_idx, lip_idx])
    closed_idx = torch.cat([jaw_idx, face_idx, eye_closed_idx, lip_idx])
    blink = torch.full((NUM_LANDMARKS,), -1, dtype=torch.int64)
    blink[36:48] = torch.tensor(eye_blink, dtype=torch.int64)
    closed_idx = torch.where(blink >= 0, closed_idx, open_idx)
    assert open_idx.numel() == NUM_LANDMARKS
    return LandmarkSpec(open_idx, closed_idx, blink)
