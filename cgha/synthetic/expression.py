"""Expression space of the synthetic head: named coefficients that deform the rest mesh.

Most coefficients are linear displacement fields (blendshapes) built once per identity from smooth Gaussian
weights around the features of the layout. ``jaw_open`` is a rotation of the jaw region about a hinge near the
ears, which unfolds the mouth band (squeezed shut at rest) into a cavity pushed into the head. The same
coefficients also drive the texture (eyelids, wrinkles, flush), see ``texture.py``.
Coefficients are meant to lie in [0, 1] (0 = neutral); the deformation is defined for any real value.
"""
from __future__ import annotations

import torch

from .layout import FaceLayout
from .mathutil import gaussian, smoothstep
from .shape import mouth_band_coords

__all__ = ["EXPRESSION_MODEL", "EXPRESSION_NAMES", "EXP_DIM", "ExpressionBasis", "build_expression_basis", "jaw_weight",
           "expression_batch", "named_expression"]

EXPRESSION_NAMES = (
    "jaw_open",
    "smile",
    "smile_left",
    "pucker",
    "brow_up_left",
    "brow_up_right",
    "brow_down",
    "blink_left",
    "blink_right",
    "cheek_puff",
    "jaw_left",
    "jaw_right",
    "mouth_stretch",
    "nose_wrinkle",
    "eye_wide",
    "mouth_frown",
)
EXP_DIM = len(EXPRESSION_NAMES)


def expression_batch(exp, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Coefficients ``exp`` [B, D] or [D] as a [B, D] tensor; any other shape is an error naming it."""
    exp = torch.as_tensor(exp, dtype=dtype, device=device)
    if exp.dim() == 1:
        exp = exp[None]
    if exp.dim() != 2 or exp.shape[1] != EXP_DIM:
        raise ValueError(f"exp must be [B, {EXP_DIM}] (or [{EXP_DIM}]), got {tuple(exp.shape)}")
    return exp


def named_expression(coeffs: dict, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A [D] coefficient vector from ``{name: value}``; an unknown name is an error listing the known ones."""
    exp = torch.zeros(EXP_DIM, dtype=dtype, device=device)
    for name, value in coeffs.items():
        if name not in EXPRESSION_NAMES:
            raise ValueError(f"unknown expression {name!r}; known: {', '.join(EXPRESSION_NAMES)}")
        exp[EXPRESSION_NAMES.index(name)] = float(value)
    return exp
# Identifies this expression basis (its coefficients' meaning, not the generator's version) in subjects and avatars:
# codes of another face model must never drive an avatar of this one unnoticed.
EXPRESSION_MODEL = "cgha.synthetic.expression-v1"

_JAW_MAX_ANGLE = 0.28  # radians at jaw_open = 1
_JAW_PROTRUDE = 0.07  # the jaw also slides forward as it opens, which keeps the chin out of the neck
_MOUTH_DEPTH = 0.26  # how far the band's middle is pushed into the head at jaw_open = 1
_JAW_SHIFT = 0.07  # sideways jaw travel at jaw_left / jaw_right = 1


class ExpressionBasis:
    """Per-identity expression deformation.

    Attributes:
        blend: [D, V, 3] linear displacement per unit coefficient (canonical units).
        jaw_weight: [V] how much each vertex follows the jaw (0 skull, 1 chin).
        mouth_push: [V] profile of the inward push of the mouth band (1 at its centre).
        hinge: [3] jaw rotation centre.
    """

    def __init__(self, blend: torch.Tensor, jaw_weight: torch.Tensor, mouth_push: torch.Tensor, hinge):
        self.blend = blend
        self.jaw_weight = jaw_weight
        self.mouth_push = mouth_push
        self.hinge = torch.as_tensor(hinge, dtype=blend.dtype, device=blend.device)

    def to(self, dtype=None, device=None) -> "ExpressionBasis":
        conv = lambda t: t.to(dtype=dtype or t.dtype, device=device or t.device)  # noqa: E731
        return ExpressionBasis(conv(self.blend), conv(self.jaw_weight), conv(self.mouth_push), conv(self.hinge))

    def deform(self, rest: torch.Tensor, exp: torch.Tensor) -> torch.Tensor:
        """Expressed canonical vertices.

        Args:
            rest: [V, 3] neutral vertices.
            exp: [B, D] coefficients.
        Returns:
            [B, V, 3] canonical vertices.
        """
        if exp.dim() != 2 or exp.shape[1] != self.blend.shape[0]:
            raise ValueError(f"exp must be [B, {self.blend.shape[0]}], got {tuple(exp.shape)}")
        exp = exp.to(rest.dtype)
        x = rest[None] + torch.einsum("bd,dvc->bvc", exp, self.blend)
        jaw = exp[:, 0]
        angle = jaw * _JAW_MAX_ANGLE
        c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        rel = x - self.hinge
        # Rotation about the x axis through the hinge; positive angles swing the chin down.
        ry = rel[..., 1] * c - rel[..., 2] * s
        rz = rel[..., 1] * s + rel[..., 2] * c
        w = self.jaw_weight[None]
        y = x[..., 1] + w * (ry + self.hinge[1] - x[..., 1])
        z = x[..., 2] + w * (rz + self.hinge[2] - x[..., 2] + _JAW_PROTRUDE * jaw[:, None])
        z = z - jaw[:, None] * _MOUTH_DEPTH * self.mouth_push[None]
        return torch.stack([x[..., 0], y, z], dim=-1)


def _g(tex, cx, cy, sx, sy):
    """Gaussian weight over the (x, y) of texture coordinates [V, 3] -> [V]."""
    return gaussian(((tex[:, 0] - cx) / sx) ** 2 + ((tex[:, 1] - cy) / sy) ** 2)


def _vec(w: torch.Tensor, d) -> torch.Tensor:
    """[V] weight times a constant displacement (3 floats) -> [V, 3]."""
    return w[:, None] * torch.tensor(d, dtype=w.dtype, device=w.device)


def jaw_weight(tex: torch.Tensor, lay: FaceLayout) -> torch.Tensor:
    """How much each vertex follows the jaw: below the mouth line, in front of the ears, above the neck.

    Args:
        tex: [V, 3] texture coordinates (unsqueezed rest positions).
    Returns:
        [V] weights in [0, 1]. Across the mouth band it falls linearly from 1 (lower lip) to 0 (upper lip), so
        the band stretches evenly when the jaw opens.
    """
    u, _, hb = mouth_band_coords(tex, lay)
    delta = tex[:, 1] - lay.mouth_y
    # Transition half-height: the band itself between the corners, widening over the cheeks beyond them.
    h = torch.sqrt(hb * hb + (0.2 * (u.abs() - 0.85).clamp(min=0.0)) ** 2).clamp(min=1e-3)
    vertical = (0.5 - 0.5 * delta / h).clamp(0.0, 1.0)
    front = smoothstep(tex[:, 2], -0.45, -0.05)
    # The mandible's lower edge runs from the jaw angle (z=-0.2, y=-0.62) to under the chin.
    z0, y0 = -0.2, -0.62
    z1, y1 = 0.55, lay.chin_y - 0.02
    line = y0 + (tex[:, 2] - z0) * (y1 - y0) / (z1 - z0)
    above_neck = smoothstep(tex[:, 1] - line, -0.22, 0.06)
    return vertical * front * above_neck


def build_expression_basis(tex: torch.Tensor, lay: FaceLayout) -> ExpressionBasis:
    """Expression deformation of one identity.

    Args:
        tex: [V, 3] texture coordinates (unsqueezed rest positions), float64.
    Returns:
        ExpressionBasis with ``blend`` [D, V, 3].
    """
    V = tex.shape[0]
    blend = torch.zeros(EXP_DIM, V, 3, dtype=tex.dtype, device=tex.device)
    face = smoothstep(tex[:, 2], 0.1, 0.5)
    ex, ey, my, mw = lay.eye_x, lay.eye_y, lay.mouth_y, lay.mouth_half_width
    idx = {n: i for i, n in enumerate(EXPRESSION_NAMES)}
    wj = jaw_weight(tex, lay)

    def corner(s):
        return _g(tex, s * mw, my, 0.13, 0.11) * face

    def smile_side(s):
        d = _vec(corner(s), (s * 0.045, 0.065, -0.03))
        d += _vec(_g(tex, s * 0.4, -0.3, 0.14, 0.12) * face, (s * 0.01, 0.035, 0.03))
        d += _vec(_g(tex, s * ex, ey - lay.lid_lower - 0.03, 0.12, 0.04) * face, (0.0, 0.015, 0.005))
        return d

    mouth = _g(tex, 0.0, my, 0.85 * mw, 0.09) * face
    # jaw_open: besides the hinge rotation (see ExpressionBasis.deform), the corners draw in a little.
    blend[idx["jaw_open"]] += torch.stack([-0.12 * tex[:, 0] * mouth, torch.zeros_like(mouth), -0.01 * mouth], -1)
    blend[idx["smile"]] = smile_side(1.0) + smile_side(-1.0)
    blend[idx["smile_left"]] = smile_side(1.0)
    blend[idx["pucker"]] = torch.stack(
        [-0.45 * tex[:, 0] * mouth, 0.1 * (tex[:, 1] - my) * mouth, 0.1 * mouth], dim=-1
    )
    for name, s in (("brow_up_left", 1.0), ("brow_up_right", -1.0)):
        blend[idx[name]] = _vec(_g(tex, s * 0.3, lay.brow_y, 0.17, 0.11) * face, (0.0, 0.065, 0.005))
        blend[idx[name]] += _vec(_g(tex, s * 0.28, 0.45, 0.2, 0.18) * face, (0.0, 0.02, 0.0))
    for s in (1.0, -1.0):
        blend[idx["brow_down"]] += _vec(_g(tex, s * 0.16, lay.brow_y - 0.02, 0.1, 0.09) * face,
                                        (-s * 0.035, -0.045, 0.015))
    for name, s in (("blink_left", 1.0), ("blink_right", -1.0)):
        blend[idx[name]] = _vec(_g(tex, s * ex, ey + 0.03, 0.12, 0.045) * face, (0.0, -0.02, 0.014))
        blend[idx[name]] += _vec(_g(tex, s * ex, ey - 0.05, 0.11, 0.03) * face, (0.0, 0.006, 0.004))
    for s in (1.0, -1.0):
        blend[idx["cheek_puff"]] += _vec(_g(tex, s * 0.42, -0.5, 0.15, 0.14) * face, (s * 0.07, -0.01, 0.08))
        blend[idx["mouth_stretch"]] += _vec(_g(tex, s * mw, my, 0.13, 0.12) * face, (s * 0.055, -0.03, -0.02))
        blend[idx["nose_wrinkle"]] += _vec(_g(tex, s * 0.09, lay.nose_base_y + 0.1, 0.07, 0.07) * face,
                                           (0.0, 0.025, 0.01))
        blend[idx["nose_wrinkle"]] += _vec(_g(tex, s * 0.15, lay.brow_y, 0.1, 0.08) * face, (0.0, -0.015, 0.0))
        blend[idx["eye_wide"]] += _vec(_g(tex, s * ex, ey + 0.05, 0.12, 0.04) * face, (0.0, 0.012, 0.004))
        blend[idx["eye_wide"]] += _vec(_g(tex, s * 0.32, lay.brow_y, 0.18, 0.1) * face, (0.0, 0.025, 0.0))
        blend[idx["mouth_frown"]] += _vec(corner(s), (0.0, -0.06, -0.005))
    blend[idx["cheek_puff"]] += _vec(mouth, (0.0, 0.0, 0.02))
    blend[idx["mouth_stretch"]] += _vec(_g(tex, 0.0, my - 0.05, 0.2, 0.05) * face, (0.0, -0.025, -0.01))
    blend[idx["nose_wrinkle"]] += _vec(_g(tex, 0.0, my + 0.06, 0.16, 0.05) * face, (0.0, 0.018, 0.008))
    blend[idx["mouth_frown"]] += _vec(_g(tex, 0.0, lay.chin_y + 0.25, 0.15, 0.12) * face, (0.0, 0.02, 0.025))
    blend[idx["jaw_left"]] = _vec(wj, (_JAW_SHIFT, 0.0, 0.0))
    blend[idx["jaw_right"]] = _vec(wj, (-_JAW_SHIFT, 0.0, 0.0))

    u, v, _ = mouth_band_coords(tex, lay)
    inside = (u.abs() < 1.0) & (v.abs() < 1.0) & (tex[:, 2] > 0.4)
    push = torch.sqrt((1.0 - u * u).clamp(min=0.0)) * torch.sqrt((1.0 - v * v).clamp(min=0.0))
    push = torch.where(inside, push, torch.zeros_like(push))
    return ExpressionBasis(blend, wj, push, lay.jaw_hinge)
