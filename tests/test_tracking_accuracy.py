"""cgha.tracking.accuracy: a tracked subject against its ground truth, and the split of its rotation errors into the
offset every frame shares and the rest."""
from __future__ import annotations

import json

import numpy as np
import torch

from cgha.tracking.accuracy import ground_truth_errors, rotation_about_mean
from cgha.utils.rotations import axis_angle_to_matrix, matrix_to_axis_angle

OFFSET = np.radians([2.0, -1.0, 0.5])  # a tilt of the canonical head: pitch, yaw, roll


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Axis-angle of R(a) @ R(b), both [..., 3]."""
    A = axis_angle_to_matrix(torch.as_tensor(a, dtype=torch.float64))
    B = axis_angle_to_matrix(torch.as_tensor(b, dtype=torch.float64))
    return matrix_to_axis_angle(A @ B).numpy()


def test_a_constant_offset_is_all_shared():
    offsets = np.repeat(OFFSET[None], 12, axis=0)
    shared, residual = rotation_about_mean(offsets)
    assert abs(shared - np.degrees(np.linalg.norm(OFFSET))) < 1e-9
    assert residual.shape == (12,) and residual.max() < 1e-6


def test_frame_errors_about_the_shared_offset_are_the_per_frame_part():
    rng = np.random.default_rng(3)
    per_frame = rng.normal(scale=np.radians(0.4), size=(40, 3))
    per_frame -= per_frame.mean(axis=0)  # no shared part in the per-frame errors themselves
    shared, residual = rotation_about_mean(_compose(np.repeat(OFFSET[None], 40, axis=0), per_frame))
    assert abs(shared - np.degrees(np.linalg.norm(OFFSET))) < 0.02
    # R(offset) @ R(e_f): each frame is |e_f| from the offset, up to second-order terms.
    assert np.allclose(residual, np.degrees(np.linalg.norm(per_frame, axis=1)), atol=0.02)


def test_ground_truth_errors_of_a_tilted_canonical_head(broken, tiny_subject):
    """Every frame's head rotated by the same rotation in its own frame (R_true @ R_offset): the whole error is
    the shared offset, none of it is left about it."""
    meta = json.loads((tiny_subject / "meta.json").read_text())
    for frame in meta["frame_names"]:
        path = broken / "params" / frame / "params.npz"
        params = dict(np.load(path))
        params["pose"] = params["pose"].copy()
        params["pose"][0, :3] = _compose(params["pose"][0, :3].astype(np.float64), OFFSET)
        np.savez(path, **params)
    errors = ground_truth_errors(broken, tiny_subject)
    angle = np.degrees(np.linalg.norm(OFFSET))
    assert abs(errors["rotation_deg"]["median"] - angle) < 1e-3
    assert abs(errors["rotation_about_mean_deg"]["shared_offset"] - angle) < 1e-3
    assert errors["rotation_about_mean_deg"]["median"] < 1e-3
    for vector in errors["rotation_offset_deg"]["per_frame"].values():
        assert np.allclose(vector, np.degrees(OFFSET), atol=1e-3)
    untouched = ground_truth_errors(tiny_subject, tiny_subject)
    assert untouched["rotation_deg"]["median"] < 1e-3 and untouched["rotation_about_mean_deg"]["shared_offset"] < 1e-3
