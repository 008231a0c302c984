"""The tracker's landmark fit (cgha/tracking/fitting.py): recovering known pose, expression, identity and scale from
projected landmarks (multi-view and monocular, with noise and missing detections), the solver, bad inputs.

Ground truth comes from the face model itself (a small build, as in test_tracking_face_model.py), so what the fit
gets wrong is the fit's own error, not the model's."""
import math

import numpy as np
import pytest
import torch

from cgha.synthetic import DEFAULT_SCALE, camera_rig, expression_trajectory
from cgha.synthetic.trajectory import euler_to_matrix
from cgha.tracking import FaceModel, FitConfig, fit_landmarks, rotation_error_deg
from cgha.tracking.fitting import _banded_solve, _second_diff_bands, project_landmarks
from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix, matrix_to_axis_angle

SAMPLES, COMPONENTS = 6, 5
RES = 256
FRAMES = 20


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    # Same folder as test_tracking_face_model.py: whichever runs first builds the small model, the other loads it.
    cache = tmp_path_factory.getbasetemp() / "face_model_cache"
    cache.mkdir(exist_ok=True)
    return FaceModel(num_samples=SAMPLES, num_components=COMPONENTS, cache_dir=cache)


def _truth(model, frames=FRAMES, seed=0):
    """A head turning as a person does at 25 fps (yaw +-25, pitch +-12, roll +-5 degrees over 40 frames), the
    generator's expression trajectory and a random identity."""
    g = torch.Generator().manual_seed(seed)
    t = np.arange(frames)
    yaw = np.radians(25.0) * np.sin(2 * np.pi * t / 40.0 + 0.3)
    pitch = np.radians(12.0) * np.sin(2 * np.pi * t / 55.0 + 1.0)
    roll = np.radians(5.0) * np.sin(2 * np.pi * t / 70.0 + 2.0)
    R = torch.stack([euler_to_matrix(float(a), float(b), float(c)) for a, b, c in zip(yaw, pitch, roll)])
    trans = 0.01 * torch.from_numpy(np.stack([np.sin(t / 9.0), np.cos(t / 7.0), np.sin(t / 11.0)], -1))
    pose = torch.cat([matrix_to_axis_angle(R), trans], dim=-1).float()
    exp = torch.from_numpy(expression_trajectory(frames, seed))
    identity = 0.7 * torch.randn(model.num_identity, generator=g)
    return pose, exp, identity


def _observe(model, pose, exp, identity, cameras, noise_px, seed=0):
    """Pixels [T, C, 68, 2] of the true landmarks in ``cameras`` cameras of the rig at RES^2, plus Gaussian noise."""
    rig = camera_rig(cameras, RES)
    world = model.landmarks(identity, exp, pose, DEFAULT_SCALE)
    T = world.shape[0]
    uv, _ = project_points(world[:, None].expand(T, cameras, 68, 3), rig.viewmats[None], rig.Ks[None])
    g = torch.Generator().manual_seed(seed + 1)
    return uv + noise_px * torch.randn(uv.shape, generator=g), rig


def _errors(model, result, pose, exp, identity):
    rot = rotation_error_deg(result.pose[:, :3], pose[:, :3])
    trans = (result.pose[:, 3:] - pose[:, 3:]).norm(dim=-1) / DEFAULT_SCALE  # head units
    # Expression and identity together, as they matter: the canonical landmarks they produce (canonical units,
    # the head is ~2 wide). Coefficient-wise errors are blurred by near-equivalent coefficients (jaw_left is
    # jaw_right's negative), which the prior splits.
    canon = (model.landmarks(result.identity, result.exp) - model.landmarks(identity, exp)).norm(dim=-1)
    jaw = (result.exp[:, 0] - exp[:, 0]).abs()
    return rot, trans, canon, jaw


def test_recovers_multiview(model):
    pose, exp, identity = _truth(model)
    lmk, rig = _observe(model, pose, exp, identity, cameras=4, noise_px=0.5)
    result = fit_landmarks(model, lmk, torch.ones(lmk.shape[:3]), rig.Ks, rig.viewmats, (RES, RES), device="cpu")
    rot, trans, canon, jaw = _errors(model, result, pose, exp, identity)
    assert float(rot.max()) < 0.3
    assert float(trans.max()) < 0.01
    assert float(canon.mean()) < 0.005 and float(canon.max()) < 0.02
    assert float(jaw.max()) < 0.03
    assert result.scale_fitted and abs(float(result.scale) / DEFAULT_SCALE - 1.0) < 0.005
    assert float((result.identity - identity).norm()) < 0.05 * float(identity.norm())
    # Reprojection: the noise's own size (mean distance of 2D Gaussian noise of 0.5 px: 0.63 px), not more.
    assert bool(result.observed.all()) and float(result.reprojection_px.median()) < 0.8
    assert result.pose.dtype == torch.float32 and result.pose.device.type == "cpu"
    assert result.landmarks_3d.shape == (FRAMES, 68, 3) and result.residuals_px.shape == lmk.shape
    reproj = project_landmarks(result.landmarks_3d, rig.Ks, rig.viewmats)
    assert torch.allclose(reproj - lmk, result.residuals_px, atol=1e-3)


def test_recovers_monocular_with_missing_detections(model):
    pose, exp, identity = _truth(model, seed=1)
    lmk, rig = _observe(model, pose, exp, identity, cameras=1, noise_px=0.5, seed=1)
    conf = torch.ones(lmk.shape[:3])
    conf[7] = 0.0  # a frame without a face
    lmk[7] = float("nan")  # ... whose landmarks are garbage
    conf[:, :, 0:4] = 0.0  # an occluded jaw side in every frame
    conf[12, :, 36:48] = 0.0  # eyes missed in one frame
    result = fit_landmarks(model, lmk, conf, rig.Ks, rig.viewmats, (RES, RES), device="cpu")
    rot, trans, canon, jaw = _errors(model, result, pose, exp, identity)
    assert result.observed.tolist() == [t != 7 for t in range(FRAMES)]
    assert not result.scale_fitted and float(result.scale) == pytest.approx(DEFAULT_SCALE)
    seen = result.observed
    assert float(rot[seen].median()) < 0.5 and float(rot[seen].max()) < 1.0
    # The missing frame's pose is carried over from its neighbours by the temporal terms.
    assert float(rot[7]) < 1.0 and float(trans[7]) < 0.02
    assert float(canon[seen].mean()) < 0.01
    assert float(jaw[seen].median()) < 0.03
    corr = np.corrcoef(result.exp[seen, 0].numpy(), exp[seen, 0].numpy())[0, 1]
    assert corr > 0.98
    assert math.isnan(float(result.reprojection_px[7])) and float(result.reprojection_px[seen].median()) < 0.8
    assert bool(torch.isfinite(result.pose).all()) and bool(torch.isfinite(result.exp).all())
    assert float(result.exp.min()) >= 0.0 and float(result.exp.max()) <= 1.0


def test_init_pose_and_config(model):
    pose, exp, identity = _truth(model, frames=8, seed=2)
    lmk, rig = _observe(model, pose, exp, identity, cameras=2, noise_px=0.0, seed=2)
    conf = torch.ones(lmk.shape[:3])
    # A given initial pose (here the truth, turned 20 degrees off) replaces the closed-form estimate.
    turn = euler_to_matrix(math.radians(20.0), 0.0, 0.0).float()
    init = torch.cat([matrix_to_axis_angle(turn @ axis_angle_to_matrix(pose[:, :3])), pose[:, 3:]], dim=-1)
    result = fit_landmarks(model, lmk, conf, rig.Ks, rig.viewmats, (RES, RES), init_pose=init)
    assert float(rotation_error_deg(result.pose[:, :3], pose[:, :3]).max()) < 0.3
    # Fixed scale and identity when asked.
    fixed = fit_landmarks(model, lmk, conf, rig.Ks, rig.viewmats, (RES, RES),
                          config=FitConfig(fit_scale=False, fit_identity=False))
    assert not fixed.scale_fitted and float(fixed.scale) == pytest.approx(DEFAULT_SCALE)
    assert float(fixed.identity.abs().max()) == 0.0
    assert fixed.iterations["joint"] >= 1 and fixed.losses["joint"] <= fixed.losses["rigid"] <= fixed.losses["init"]


def _good_inputs(model):
    pose, exp, identity = _truth(model, frames=3)
    lmk, rig = _observe(model, pose, exp, identity, cameras=2, noise_px=0.0)
    return dict(landmarks=lmk, confidence=torch.ones(lmk.shape[:3]), Ks=rig.Ks, viewmats=rig.viewmats,
                image_size=(RES, RES))


def _with(inputs, **changes):
    out = dict(inputs)
    out.update(changes)
    return out


def _nan_landmark(x):
    x = x.clone()
    x[1, 0, 5, 0] = float("nan")
    return x


BAD = [
    ("landmarks", lambda i: _with(i, landmarks=i["landmarks"][..., :1])),
    ("landmarks", lambda i: _with(i, landmarks=i["landmarks"][:, :, :60])),
    ("landmarks", lambda i: _with(i, landmarks=_nan_landmark(i["landmarks"]))),
    ("landmarks", lambda i: _with(i, landmarks="not numbers")),
    ("confidence", lambda i: _with(i, confidence=i["confidence"][:, :1])),
    ("confidence", lambda i: _with(i, confidence=-i["confidence"])),
    ("confidence", lambda i: _with(i, confidence=i["confidence"] * float("nan"))),
    ("no frame", lambda i: _with(i, confidence=torch.zeros_like(i["confidence"]))),
    ("Ks", lambda i: _with(i, Ks=i["Ks"][:1])),
    ("Ks", lambda i: _with(i, Ks=i["Ks"] * float("nan"))),
    ("Ks", lambda i: _with(i, Ks=-i["Ks"])),
    ("viewmats", lambda i: _with(i, viewmats=i["viewmats"][:, :2])),
    ("viewmats", lambda i: _with(i, viewmats=torch.cat([2 * i["viewmats"][:, :3], i["viewmats"][:, 3:]], 1))),
    ("image_size", lambda i: _with(i, image_size=(RES, 0))),
    ("image_size", lambda i: _with(i, image_size=(RES, RES, 3))),
    ("init_pose", lambda i: _with(i, init_pose=torch.zeros(2, 6))),
]


@pytest.mark.parametrize("name, make", BAD, ids=[f"{n}-{k}" for k, (n, _) in enumerate(BAD)])
def test_bad_inputs_name_the_argument(model, name, make):
    with pytest.raises(ValueError, match=name):
        fit_landmarks(model, **make(_good_inputs(model)))


def test_bad_model_and_config(model):
    inputs = _good_inputs(model)
    with pytest.raises(TypeError, match="model"):
        fit_landmarks("flame", **inputs)
    with pytest.raises(TypeError, match="config"):
        fit_landmarks(model, **inputs, config={"huber_px": 1.0})
    with pytest.raises(ValueError, match="huber_px"):
        FitConfig(huber_px=0.0)
    with pytest.raises(ValueError, match="smooth_rotation"):
        FitConfig(smooth_rotation=-1.0)
    with pytest.raises(ValueError, match="min_landmarks"):
        FitConfig(min_landmarks=2)
    with pytest.raises(ValueError, match="joint_iterations"):
        FitConfig(joint_iterations=1.5)


@pytest.mark.parametrize("frames", [1, 2, 3, 6, 7, 13])
def test_banded_solver_matches_dense(frames):
    """The block cyclic reduction solve against a dense solve of the same pentadiagonal-block matrix."""
    g = torch.Generator().manual_seed(frames)
    n, r = 4, 3
    G = torch.randn(frames, n, n, generator=g, dtype=torch.float64)
    A = G @ G.transpose(-1, -2) + 0.1 * torch.eye(n, dtype=torch.float64)
    main, band1, band2 = _second_diff_bands(frames, torch.float64, "cpu")
    smooth = 5.0 * torch.rand(n, generator=g, dtype=torch.float64)
    A = A + torch.diag_embed(main[:, None] * smooth)
    off1, off2 = band1[:, None] * smooth, band2[:, None] * smooth
    H = torch.zeros(frames * n, frames * n, dtype=torch.float64)
    for t in range(frames):
        H[t * n:(t + 1) * n, t * n:(t + 1) * n] = A[t]
        for k, off in ((1, off1), (2, off2)):
            if t + k < frames:
                H[(t + k) * n:(t + k + 1) * n, t * n:(t + 1) * n] = torch.diag(off[t])
                H[t * n:(t + 1) * n, (t + k) * n:(t + k + 1) * n] = torch.diag(off[t])
    rhs = torch.randn(frames, n, r, generator=g, dtype=torch.float64)
    expected = torch.linalg.solve(H, rhs.reshape(frames * n, r)).reshape(frames, n, r)
    assert torch.allclose(_banded_solve(A, off1, off2, rhs), expected, atol=1e-10)
