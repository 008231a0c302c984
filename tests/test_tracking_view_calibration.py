"""The view-dependent landmark calibration (cgha/tracking/view_calibration.py, calibration.py): the directions it
is a function of, its estimate, the detections' correction the monocular fit applies, and its file (version 2)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cgha.errors import UserError
from cgha.synthetic import DEFAULT_SCALE, camera_rig
from cgha.synthetic.head_model import apply_pose
from cgha.tracking.calibration import (CalibrationViews, calibrated_landmarks, estimate_view_coefficients,
                                       landmark_errors_px, load_calibration, save_calibration, view_offsets)
from cgha.tracking.pipeline import TrackOptions
from cgha.tracking.view_calibration import (NUM_FEATURES, camera_centres, detection_shift_px, head_directions,
                                            view_features)
from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix
from test_tracking_calibration import _calibration, model  # noqa: F401 (model: the shared face-model fixture)


def _poses(frames: int, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    pose = np.zeros((frames, 6))
    pose[:, :3] = g.uniform(-1, 1, (frames, 3)) * np.array([0.35, 0.6, 0.1])  # pitch, yaw, roll (radians)
    pose[:, 3:] = g.normal(0, 0.01, (frames, 3))
    return pose


def _coefficients(base: np.ndarray, seed: int) -> np.ndarray:
    """B [68, 6, 3]: the fixed offset plus terms that turn with the view (a few px at 512)."""
    B = np.zeros((68, NUM_FEATURES, 3))
    B[:, 0] = base
    B[:, 1:] = np.random.default_rng(seed).normal(0, 0.02, (68, NUM_FEATURES - 1, 3))
    return B


def test_directions_and_features():
    rig = camera_rig(4, 64)
    viewmats = rig.viewmats.double().numpy()
    pose = _poses(3, 0)
    d = head_directions(pose, viewmats)
    assert d.shape == (3, 4, 3) and np.allclose(np.linalg.norm(d, axis=-1), 1.0)
    # The same as rotating the world direction to each camera into the head's frame, frame by frame.
    R = axis_angle_to_matrix(torch.from_numpy(pose[:, :3])).numpy()
    to_camera = camera_centres(viewmats)[None] - pose[:, None, 3:]
    expected = np.einsum("tji,tcj->tci", R, to_camera)
    np.testing.assert_allclose(d, expected / np.linalg.norm(expected, axis=-1, keepdims=True), atol=1e-12)
    phi = view_features(np.array([[0.0, 0.0, 1.0], [0.6, -0.8, 0.0]]))
    np.testing.assert_allclose(phi, [[1, 0, 0, 0, 0, 0], [1, 0.6, -0.8, 0.36, 0.64, -0.48]], atol=1e-12)
    with pytest.raises(ValueError, match=r"pose \[T, 6\]"):
        head_directions(np.zeros((3, 3)), viewmats)


def _views(model, coefficients: np.ndarray, seed: int) -> CalibrationViews:
    """Rig views whose detections are the landmarks moved by the view-dependent offset of ``coefficients``."""
    rig = camera_rig(16, 256)
    frames = 6
    pose = _poses(frames, seed)
    exp = np.random.default_rng(seed).uniform(0, 0.6, (frames, 16))
    canonical = model.landmarks(None, torch.from_numpy(exp)).numpy()
    pairs = [(t, c) for t in range(frames) for c in range(0, 16, 2)]
    views = CalibrationViews(
        points=np.zeros((len(pairs), 68, 2)), canonical=np.stack([canonical[t] for t, _ in pairs]),
        exp=np.stack([exp[t] for t, _ in pairs]), pose=np.stack([pose[t] for t, _ in pairs]),
        scale=np.full(len(pairs), DEFAULT_SCALE), Ks=np.stack([rig.Ks[c].double().numpy() for _, c in pairs]),
        viewmats=np.stack([rig.viewmats[c].double().numpy() for _, c in pairs]), image_size=np.full(len(pairs), 256.0),
        identity=np.zeros(len(pairs), dtype=np.int64))
    world = calibrated_landmarks(model, views.canonical, views.exp, views.pose, views.scale,
                                 view_offsets(views, coefficients))
    uv, _ = project_points(world, torch.from_numpy(views.viewmats), torch.from_numpy(views.Ks))
    views.points = uv.numpy()
    return views


def test_estimate_explains_a_view_dependent_offset_that_a_fixed_one_cannot(model):
    truth = _coefficients(np.random.default_rng(3).normal(0, 0.05, (68, 3)), seed=4)
    views = _views(model, truth, seed=5)
    estimated = estimate_view_coefficients(model, views)
    assert estimated.shape == (68, NUM_FEATURES, 3)
    fixed = np.median(landmark_errors_px(model, views, truth[:, 0]))  # the fixed part alone
    left = landmark_errors_px(model, views, view_offsets(views, estimated))
    assert fixed > 1.0 and np.median(left) < 0.05 * fixed, (fixed, np.median(left))
    # Held-out views of other poses and expressions: the estimate carries over.
    other = _views(model, truth, seed=6)
    assert np.median(landmark_errors_px(model, other, view_offsets(other, estimated))) < 0.1 * fixed


def test_detection_shift_is_the_projected_difference_of_the_two_offsets(model):
    base = np.random.default_rng(7).normal(0, 0.05, (68, 3))
    B = _coefficients(base, seed=8)
    rig = camera_rig(5, 128)
    Ks, viewmats = rig.Ks.double().numpy(), rig.viewmats.double().numpy()
    pose = _poses(4, 9)
    exp = np.random.default_rng(9).uniform(0, 0.5, (4, 16))
    canonical = model.landmarks(None, torch.from_numpy(exp))
    J = model.landmark_offset_jacobian(torch.from_numpy(exp))  # [T, 68, 3, 3]

    def world(offsets):  # offsets [T, 68, 3] -> posed landmarks [T, 68, 3]
        return apply_pose(canonical + torch.einsum("tlij,tlj->tli", J, torch.as_tensor(offsets)),
                          torch.from_numpy(pose), torch.full((4,), DEFAULT_SCALE, dtype=torch.float64))

    fitted = world(np.tile(base, (4, 1, 1)))
    shift = detection_shift_px(model, pose, DEFAULT_SCALE, exp, fitted.numpy(), Ks, viewmats, B, base)
    assert shift.shape == (4, 5, 68, 2)
    phi = view_features(head_directions(pose, viewmats))  # [T, C, 6]
    for c in range(5):
        moved = world(np.einsum("tk,lkj->tlj", phi[:, c], B))
        V, K = torch.from_numpy(viewmats[c]), torch.from_numpy(Ks[c])
        expected = project_points(moved, V, K)[0] - project_points(fitted, V, K)[0]
        np.testing.assert_allclose(shift[:, c], expected.numpy(), atol=1e-8)
    assert np.abs(shift).max() > 0.5  # the test's terms move points by pixels, not by nothing
    # Without view-dependent terms (B = the fixed offset) nothing moves.
    still = np.zeros_like(B)
    still[:, 0] = base
    assert np.abs(detection_shift_px(model, pose, DEFAULT_SCALE, exp, fitted.numpy(), Ks, viewmats, still,
                                     base)).max() < 1e-9


def test_calibration_file_version_2_and_version_1(tmp_path):
    view = np.random.default_rng(0).normal(0, 0.01, (68, NUM_FEATURES, 3)).astype(np.float32)
    loaded = load_calibration(save_calibration(_calibration(view_coefficients=view), tmp_path / "v2.npz"))
    np.testing.assert_array_equal(loaded.view_coefficients, view)
    assert load_calibration(save_calibration(_calibration(), tmp_path / "plain.npz")).view_coefficients is None
    # A version 1 file (before view-dependent offsets) still loads; one claiming view coefficients is refused.
    with np.load(tmp_path / "plain.npz") as data:
        arrays = {k: data[k] for k in data.files}
    np.savez(tmp_path / "v1.npz", **{**arrays, "version": np.array(1, dtype=np.int64)})
    assert load_calibration(tmp_path / "v1.npz").view_coefficients is None
    np.savez(tmp_path / "v1_view.npz", **{**arrays, "version": np.array(1, dtype=np.int64),
                                          "view_coefficients": view})
    with pytest.raises(ValueError, match="v1_view.npz: view_coefficients in a version 1 file"):
        load_calibration(tmp_path / "v1_view.npz")
    bad = save_calibration(_calibration(view_coefficients=view[:, :3]), tmp_path / "bad.npz")
    with pytest.raises(ValueError, match=r"bad.npz: view_coefficients must be finite \[68, 6, 3\]"):
        load_calibration(bad)
    np.savez(tmp_path / "v3.npz", **{**arrays, "version": np.array(3, dtype=np.int64)})
    with pytest.raises(ValueError, match="version 3, this code reads versions 1, 2"):
        load_calibration(tmp_path / "v3.npz")


def test_shipped_calibration_has_its_view_dependent_part():
    calibration = load_calibration()
    assert calibration.view_coefficients is not None and calibration.view_coefficients.shape == (68, 6, 3)
    assert np.isfinite(calibration.view_coefficients).all()


@pytest.mark.parametrize("mode", ["sometimes", None, 1])
def test_bad_view_calibration_mode_is_refused(mode):
    with pytest.raises(UserError, match="view_calibration must be one of monocular, always, off"):
        TrackOptions(view_calibration=mode).check()
