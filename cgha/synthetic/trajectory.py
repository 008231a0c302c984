"""Smooth per-frame expression and head-pose trajectories (deterministic per seed).

Expressions: every coefficient gets at least one clear event (a raised-cosine bump to 0.75..1) at its own time,
so a 40-frame sequence exercises all of them; on top sit natural blinks of both eyes and a low, slowly varying
background. Pose: sums of slow sines within yaw/pitch/roll limits and a small translation.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cgha.utils.rotations import matrix_to_axis_angle

from .expression import EXP_DIM, EXPRESSION_NAMES

__all__ = ["POSE_LIMITS_DEG", "TRANSLATION_LIMIT", "expression_trajectory", "pose_trajectory", "euler_to_matrix"]

POSE_LIMITS_DEG = (20.0, 12.0, 8.0)  # |yaw|, |pitch|, |roll|
TRANSLATION_LIMIT = 0.01  # world units per axis
_BLINK_SHAPE = (0.45, 1.0, 0.45)  # a natural blink over three frames


def _bump(frames: np.ndarray, centre: float, half_width: float) -> np.ndarray:
    """Raised cosine: 1 at ``centre``, 0 beyond ``half_width`` frames away."""
    d = np.clip(np.abs(frames - centre) / half_width, 0.0, 1.0)
    return 0.5 * (1.0 + np.cos(np.pi * d))


def expression_trajectory(num_frames: int, seed: int, exp_dim: int = EXP_DIM) -> np.ndarray:
    """Expression coefficients of every frame.

    Returns:
        [F, D] float32 in [0, 1].
    """
    if exp_dim != EXP_DIM:
        raise ValueError(f"the synthetic head has {EXP_DIM} expression coefficients, not {exp_dim}")
    rng = np.random.default_rng([seed, 0xE4B])
    F = num_frames
    t = np.arange(F, dtype=np.float64)
    exp = np.zeros((F, EXP_DIM))
    # Low background: two slow sines per coefficient.
    for d in range(EXP_DIM):
        for _ in range(2):
            period = rng.uniform(18.0, 45.0)
            exp[:, d] += 0.05 * (1.0 + np.sin(2.0 * np.pi * t / period + rng.uniform(0, 2 * np.pi)))
    # Events: one per coefficient per ~40 frames, at staggered times so all are exercised.
    passes = max(1, int(round(F / 40.0)))
    half = float(np.clip(F / 8.0, 2.5, 7.0))
    for p in range(passes):
        order = rng.permutation(EXP_DIM)
        lo, hi = p * F / passes, (p + 1) * F / passes
        for k, d in enumerate(order):
            centre = lo + (k + 0.5) / EXP_DIM * (hi - lo) + rng.uniform(-0.3, 0.3) * (hi - lo) / EXP_DIM
            if F > 1:
                centre = float(np.clip(centre, 0.0, F - 1.0))
            w = half * (0.6 if EXPRESSION_NAMES[d].startswith("blink") else 1.0)
            exp[:, d] += rng.uniform(0.75, 1.0) * _bump(t, centre, max(w, 1.5))
    # Natural blinks (both eyes) every 12-25 frames.
    b_left = EXPRESSION_NAMES.index("blink_left")
    b_right = EXPRESSION_NAMES.index("blink_right")
    start = int(rng.integers(3, 12))
    while start < F:
        for j, v in enumerate(_BLINK_SHAPE):
            if start + j < F:
                exp[start + j, b_left] = max(exp[start + j, b_left], v)
                exp[start + j, b_right] = max(exp[start + j, b_right], v)
        start += int(rng.integers(12, 26))
    return np.clip(exp, 0.0, 1.0).astype(np.float32)


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> torch.Tensor:
    """R = Ry(yaw) @ Rx(pitch) @ Rz(roll) (radians), float64 [3, 3]."""
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    Rx = torch.tensor([[1, 0, 0], [0, cp, -sp], [0, sp, cp]], dtype=torch.float64)
    Rz = torch.tensor([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]], dtype=torch.float64)
    return Ry @ Rx @ Rz


def _smooth_curve(rng: np.random.Generator, t: np.ndarray, limit: float) -> np.ndarray:
    """Sum of three slow sines whose amplitudes add up to at most ``limit``."""
    weights = rng.dirichlet(np.ones(3)) * limit * rng.uniform(0.8, 1.0)
    out = np.zeros_like(t)
    for w in weights:
        period = rng.uniform(24.0, 80.0)
        out += w * np.sin(2.0 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return out


def pose_trajectory(num_frames: int, seed: int) -> np.ndarray:
    """Head pose of every frame: axis-angle (radians) + translation.

    Returns:
        [F, 6] float32.
    """
    rng = np.random.default_rng([seed, 0x905E])
    t = np.arange(num_frames, dtype=np.float64)
    angles = [np.radians(_smooth_curve(rng, t, lim)) for lim in POSE_LIMITS_DEG]
    trans = np.stack([_smooth_curve(rng, t, TRANSLATION_LIMIT) for _ in range(3)], axis=-1)
    R = torch.stack([euler_to_matrix(float(y), float(p), float(r)) for y, p, r in zip(*angles)])
    aa = matrix_to_axis_angle(R).numpy()
    return np.concatenate([aa, trans], axis=-1).astype(np.float32)
