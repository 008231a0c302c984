"""Smooth per-frame expression and head-pose trajectories (deterministic per seed).

Expressions: every coefficient gets at least one clear event (a raised-cosine bump to 0.75..1) at its own time,
so a 40-frame sequence exercises all of them; on top sit natural blinks of both eyes and a low, slowly varying
background. Pose: sums of slow sines within yaw/pitch/roll limits and a small translation.

The monocular preset (``talking_expression_trajectory``, ``monocular_pose_trajectory``) is a person talking to one
camera: syllable-rate jaw and lip motion in phrases with pauses, smiles, blinks, brow emphasis, and head turns
sweeping the full ``MONOCULAR_POSE_LIMITS_DEG`` (yaw +-40, pitch +-20 degrees), the range a tracker must cope with.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from cgha.utils.rotations import matrix_to_axis_angle

from .expression import EXP_DIM, EXPRESSION_NAMES

__all__ = ["POSE_LIMITS_DEG", "TRANSLATION_LIMIT", "expression_trajectory", "pose_trajectory", "euler_to_matrix",
           "matrix_to_euler", "MONOCULAR_POSE_LIMITS_DEG", "MONOCULAR_FRAMES", "talking_expression_trajectory",
           "monocular_pose_trajectory"]

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


def matrix_to_euler(R) -> np.ndarray:
    """Inverse of ``euler_to_matrix``: rotation matrices [..., 3, 3] -> (yaw, pitch, roll) [..., 3] in radians.

    Unique for |pitch| < 90 degrees (R = Ry(yaw) Rx(pitch) Rz(roll); row 1 of R is (cos p sin r, cos p cos r, -sin p)).
    """
    R = np.asarray(R, dtype=np.float64)
    yaw = np.arctan2(R[..., 0, 2], R[..., 2, 2])
    pitch = np.arcsin(np.clip(-R[..., 1, 2], -1.0, 1.0))
    roll = np.arctan2(R[..., 1, 0], R[..., 1, 1])
    return np.stack([yaw, pitch, roll], axis=-1)


# ---------------------------------------------------------------------------------------------------- monocular
MONOCULAR_POSE_LIMITS_DEG = (40.0, 20.0, 6.0)  # |yaw|, |pitch|, |roll|: the sweep a monocular tracker must follow
MONOCULAR_FRAMES = 300  # the preset's default length: several full yaw and pitch sweeps
# Periods (frames) of the yaw and pitch sweeps: a full left-right turn every ~4 s at 25 fps, pitch on an
# incommensurate period so that yaw and pitch combine in every way (a Lissajous path) instead of moving in lockstep.
_YAW_PERIOD = (90.0, 110.0)
_PITCH_PERIOD = (125.0, 150.0)
_ROLL_PERIOD = (150.0, 220.0)
# Speech: syllables every 5-9 frames (3-5 per second at 25 fps) in phrases of 30-90 frames with 8-30 frame pauses.
_SYLLABLE_FRAMES = (5, 9)
_PHRASE_FRAMES = (30, 90)
_PAUSE_FRAMES = (8, 30)


def _sweep(rng: np.random.Generator, t: np.ndarray, limit: float, period: tuple[float, float]) -> np.ndarray:
    """A sine of amplitude ``limit`` and a random period and phase: any run of frames longer than its period
    reaches +-limit (within ``limit * (1 - cos(pi / period))``, < 0.1 %, from sampling)."""
    p = rng.uniform(*period)
    return limit * np.sin(2.0 * np.pi * t / p + rng.uniform(0.0, 2.0 * np.pi))


def monocular_pose_trajectory(num_frames: int, seed: int) -> np.ndarray:
    """Head pose of every frame of the monocular preset: axis-angle (radians) + translation.

    Yaw and pitch are full-amplitude sines (``MONOCULAR_POSE_LIMITS_DEG``), so every sequence of at least
    ``MONOCULAR_FRAMES`` frames spans yaw +-40 and pitch +-20 degrees; roll is a slower sine within +-6 degrees and
    the translation a small smooth drift (``TRANSLATION_LIMIT`` per axis).

    Returns:
        [F, 6] float32.
    """
    rng = np.random.default_rng([seed, 0x303E])
    t = np.arange(num_frames, dtype=np.float64)
    yaw_lim, pitch_lim, roll_lim = MONOCULAR_POSE_LIMITS_DEG
    angles = [np.radians(_sweep(rng, t, yaw_lim, _YAW_PERIOD)), np.radians(_sweep(rng, t, pitch_lim, _PITCH_PERIOD)),
              np.radians(_sweep(rng, t, roll_lim, _ROLL_PERIOD))]
    trans = np.stack([_smooth_curve(rng, t, TRANSLATION_LIMIT) for _ in range(3)], axis=-1)
    R = torch.stack([euler_to_matrix(float(y), float(p), float(r)) for y, p, r in zip(*angles)])
    aa = matrix_to_axis_angle(R).numpy()
    return np.concatenate([aa, trans], axis=-1).astype(np.float32)


def _phrases(rng: np.random.Generator, num_frames: int) -> list[tuple[int, int]]:
    """(start, end) frames of the spoken phrases; silence between them."""
    out, start = [], int(rng.integers(0, _PAUSE_FRAMES[1]))
    while start < num_frames:
        end = min(num_frames, start + int(rng.integers(*_PHRASE_FRAMES)))
        out.append((start, end))
        start = end + int(rng.integers(*_PAUSE_FRAMES))
    return out


def talking_expression_trajectory(num_frames: int, seed: int) -> np.ndarray:
    """Expression coefficients of every frame of the monocular preset: a person talking.

    - speech: in each phrase the jaw opens once per syllable (0.25-0.8), each syllable shaped toward an "oo"
      (``pucker``), an "ee" (``mouth_stretch``) or neither; silence between phrases;
    - smiles: slow ``smile`` swells of 30-60 frames, one in four of them the one-sided ``smile_left``;
    - blinks of both eyes every 12-25 frames (three frames each), as in ``expression_trajectory``;
    - brows: ``brow_up_left`` and ``brow_up_right`` together at the start of phrases (emphasis), ``brow_down`` now
      and then;
    - the remaining coefficients (cheek puff, jaw sideways, nose wrinkle, wide eyes, frown) get occasional moderate
      events, so that every coefficient varies and a tracker's per-coefficient correlation can be measured.

    Returns:
        [F, D] float32 in [0, 1].
    """
    rng = np.random.default_rng([seed, 0x7A1C])
    F = num_frames
    t = np.arange(F, dtype=np.float64)
    E = {n: i for i, n in enumerate(EXPRESSION_NAMES)}
    exp = np.zeros((F, EXP_DIM))

    for start, end in _phrases(rng, F):
        # Emphasis: the brows rise with the first syllables of about half the phrases.
        if rng.uniform() < 0.5:
            lift = rng.uniform(0.4, 0.9) * _bump(t, start + 4.0, 8.0)
            exp[:, E["brow_up_left"]] += lift
            exp[:, E["brow_up_right"]] += lift * rng.uniform(0.8, 1.0)
        s = float(start)
        while s < end:
            length = float(rng.integers(*_SYLLABLE_FRAMES))
            centre, half = s + 0.5 * length, 0.5 * length + 1.0  # neighbouring syllables overlap a little
            bump = _bump(t, centre, half)
            exp[:, E["jaw_open"]] += rng.uniform(0.25, 0.8) * bump
            shape = rng.uniform()
            if shape < 0.3:
                exp[:, E["pucker"]] += rng.uniform(0.3, 0.8) * bump
            elif shape < 0.6:
                exp[:, E["mouth_stretch"]] += rng.uniform(0.3, 0.7) * bump
            s += length

    # Smiles: about one swell per 80 frames; the second of every four is the one-sided smile_left.
    for k in range(max(1, int(round(F / 80.0)))):
        name = "smile_left" if k % 4 == 1 else "smile"
        exp[:, E[name]] += rng.uniform(0.5, 1.0) * _bump(t, rng.uniform(0, max(F - 1, 1)), rng.uniform(15.0, 30.0))
    # Occasional frowning brows, and moderate events of the coefficients speech does not use.
    others = ("brow_down", "cheek_puff", "jaw_left", "jaw_right", "nose_wrinkle", "eye_wide", "mouth_frown")
    for _ in range(max(1, int(round(F / 100.0)))):
        for name in others:
            exp[:, E[name]] += rng.uniform(0.4, 0.8) * _bump(t, rng.uniform(0, max(F - 1, 1)), rng.uniform(6.0, 14.0))

    start = int(rng.integers(3, 12))
    while start < F:
        for j, v in enumerate(_BLINK_SHAPE):
            if start + j < F:
                for name in ("blink_left", "blink_right"):
                    exp[start + j, E[name]] = max(exp[start + j, E[name]], v)
        start += int(rng.integers(12, 26))
    return np.clip(exp, 0.0, 1.0).astype(np.float32)
