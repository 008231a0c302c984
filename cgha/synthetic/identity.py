"""Identity parameters of the synthetic head: shape proportions and colours.

Identity 0 is a hand-tuned "average" person; every other index draws its parameters from a generator seeded by
the index alone, so an identity looks the same whatever the trajectory seed of the capture.
"""
from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["IdentityParams", "identity_params"]

# sRGB anchor colours, interpolated by a scalar parameter (light -> dark skin, etc.).
_SKIN = np.array(
    [[0.94, 0.80, 0.70], [0.87, 0.67, 0.54], [0.74, 0.53, 0.38], [0.52, 0.35, 0.24], [0.33, 0.22, 0.15]]
)
_HAIR = np.array(
    [[0.05, 0.04, 0.035], [0.20, 0.12, 0.07], [0.38, 0.24, 0.13], [0.72, 0.57, 0.34], [0.52, 0.22, 0.09],
     [0.58, 0.57, 0.55]]
)
_IRIS = np.array(
    [[0.33, 0.19, 0.08], [0.45, 0.36, 0.16], [0.28, 0.42, 0.25], [0.30, 0.46, 0.66], [0.45, 0.50, 0.55]]
)
_SHIRT = np.array(
    [[0.15, 0.22, 0.38], [0.55, 0.12, 0.12], [0.85, 0.85, 0.82], [0.12, 0.12, 0.13], [0.20, 0.40, 0.25]]
)


@dataclasses.dataclass(frozen=True)
class IdentityParams:
    """Per-identity parameters; shape factors are multipliers around 1, amounts are in [0, 1]."""

    identity: int
    head_width: float = 1.0
    head_height: float = 1.0
    head_depth: float = 1.0
    jaw_width: float = 1.0
    chin: float = 1.0  # chin prominence
    chin_length: float = 1.0
    nose_length: float = 1.0
    nose_width: float = 1.0
    nose_bridge: float = 1.0  # how far the bridge sticks out
    eye_spacing: float = 1.0
    eye_size: float = 1.0
    cheek_fullness: float = 0.5
    cheekbones: float = 0.5
    brow_ridge: float = 0.5
    lip_fullness: float = 1.0
    mouth_width: float = 1.0
    ear_size: float = 1.0
    brow_arch: float = 0.5
    brow_thickness: float = 1.0
    brow_tilt: float = 0.0  # outer end up (+) or down (-)
    hairline: float = 0.5  # 0 high forehead, 1 low
    skin_rgb: tuple[float, float, float] = (0.87, 0.67, 0.54)
    hair_rgb: tuple[float, float, float] = (0.20, 0.12, 0.07)
    iris_rgb: tuple[float, float, float] = (0.33, 0.19, 0.08)
    lip_rgb: tuple[float, float, float] = (0.72, 0.38, 0.36)
    shirt_rgb: tuple[float, float, float] = (0.15, 0.22, 0.38)
    freckles: float = 0.1
    stubble: float = 0.0
    noise_seed: int = 0  # seed of the skin/hair noise lattice

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def _palette(anchors: np.ndarray, t: float) -> tuple[float, float, float]:
    """Piecewise-linear colour from ``anchors`` [K, 3] at ``t`` in [0, 1]."""
    x = float(np.clip(t, 0.0, 1.0)) * (len(anchors) - 1)
    i = min(int(x), len(anchors) - 2)
    c = anchors[i] * (1.0 - (x - i)) + anchors[i + 1] * (x - i)
    return tuple(float(round(v, 6)) for v in c)


def _lip_colour(skin: tuple[float, float, float], rng: np.random.Generator | None) -> tuple[float, float, float]:
    s = np.asarray(skin)
    tint = np.array([0.80, 0.36, 0.38]) if rng is None else np.array([0.80, 0.33, 0.36]) + rng.uniform(-0.04, 0.04, 3)
    c = 0.55 * s + 0.45 * tint * (0.5 + 0.5 * s.mean())
    return tuple(float(round(v, 6)) for v in np.clip(c, 0.0, 1.0))


def identity_params(identity: int) -> IdentityParams:
    """Parameters of identity ``identity`` (>= 0); deterministic in the index."""
    if isinstance(identity, bool) or not isinstance(identity, (int, np.integer)) or identity < 0:
        raise ValueError(f"identity must be a non-negative int, got {identity!r}")
    identity = int(identity)
    if identity == 0:
        skin = _palette(_SKIN, 0.28)
        return IdentityParams(identity=0, skin_rgb=skin, lip_rgb=_lip_colour(skin, None), noise_seed=1000)
    rng = np.random.default_rng([identity, 0x5EAD])

    def u(lo, hi):
        return float(round(rng.uniform(lo, hi), 6))

    skin = _palette(_SKIN, rng.uniform(0.0, 1.0))
    hair_t = rng.uniform(0.0, 1.0)
    return IdentityParams(
        identity=identity,
        head_width=u(0.93, 1.07),
        head_height=u(0.94, 1.06),
        head_depth=u(0.95, 1.05),
        jaw_width=u(0.88, 1.14),
        chin=u(0.75, 1.25),
        chin_length=u(0.9, 1.12),
        nose_length=u(0.85, 1.2),
        nose_width=u(0.85, 1.25),
        nose_bridge=u(0.8, 1.25),
        eye_spacing=u(0.93, 1.07),
        eye_size=u(0.9, 1.1),
        cheek_fullness=u(0.0, 1.0),
        cheekbones=u(0.0, 1.0),
        brow_ridge=u(0.0, 1.0),
        lip_fullness=u(0.75, 1.3),
        mouth_width=u(0.9, 1.12),
        ear_size=u(0.85, 1.15),
        brow_arch=u(0.0, 1.0),
        brow_thickness=u(0.7, 1.35),
        brow_tilt=u(-0.5, 0.5),
        hairline=u(0.0, 1.0),
        skin_rgb=skin,
        hair_rgb=_palette(_HAIR, hair_t),
        iris_rgb=_palette(_IRIS, rng.uniform(0.0, 1.0)),
        lip_rgb=_lip_colour(skin, rng),
        shirt_rgb=_palette(_SHIRT, rng.uniform(0.0, 1.0)),
        freckles=u(0.0, 0.6),
        stubble=u(0.0, 1.0) if rng.uniform() < 0.4 else 0.0,
        noise_seed=1000 + identity,
    )
