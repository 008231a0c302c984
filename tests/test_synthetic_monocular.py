"""The monocular synthetic preset (make_synthetic.py --monocular): one training camera, an evaluation-only camera,
talking expressions and head turns over yaw +-40 / pitch +-20 degrees."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cgha.config import DatasetConfig
from cgha.dataset import Subject
from cgha.synthetic import (EXPRESSION_NAMES, MONOCULAR_POSE_LIMITS_DEG, SubjectArgumentError,
                            generate_monocular_subject, generate_subject, matrix_to_euler, monocular_pose_trajectory,
                            talking_expression_trajectory)
from cgha.synthetic.trajectory import MONOCULAR_FRAMES, euler_to_matrix
from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix

REPO = Path(__file__).resolve().parents[1]
FRAMES, RES, SEED = 8, 64, 5


def _script(name: str):
    """A script of preprocess/ as a module, to call its main(argv) without a new interpreter."""
    spec = importlib.util.spec_from_file_location(f"_script_{name}", REPO / "preprocess" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mono(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mono") / "subject"
    return generate_monocular_subject(out, identity=0, frames=FRAMES, resolution=RES, seed=SEED, progress=False)


def _euler_deg(poses: np.ndarray) -> np.ndarray:
    """[F, 6] poses -> [F, 3] (yaw, pitch, roll) degrees."""
    R = axis_angle_to_matrix(torch.from_numpy(poses[:, :3]).double()).numpy()
    return np.degrees(matrix_to_euler(R))


def test_meta_has_one_train_camera_and_the_held_out_camera(mono):
    meta = json.loads((mono / "meta.json").read_text())
    assert meta["preset"] == "monocular" and meta["arguments"]["preset"] == "monocular"
    assert meta["arguments"]["frames"] == FRAMES and "cameras" not in meta["arguments"]
    assert meta["camera_ids"] == ["cam00", "oor00"]
    splits = meta["splits"]
    assert splits["train_camera_ids"] == ["cam00"] and splits["eval_camera_ids"] == []
    assert splits["out_of_rig_camera_ids"] == ["oor00"]
    assert splits["eval_frame_ids"] == [f"{FRAMES - 1:04d}"]
    assert meta["monocular"]["pose_limits_deg"] == {"yaw": 40.0, "pitch": 20.0, "roll": 6.0}
    for frame in meta["frame_names"]:
        assert sorted(p.name for p in (mono / "images" / frame).glob("image_*.jpg")) == \
            ["image_cam00.jpg", "image_lowres_cam00.jpg", "image_lowres_oor00.jpg", "image_oor00.jpg"]

    # The dataset reader trains on cam00 only and evaluates oor00 as its out-of-rig split, with or without
    # split_from_meta (the held-out camera must never be trained on).
    for from_meta in (True, False):
        subject = Subject(DatasetConfig(dataroot=str(mono), original_resolution=RES, resolution=RES // 2,
                                        split_from_meta=from_meta))
        assert subject.split("train").cameras == ("cam00",)
        assert subject.split("out_of_rig").cameras == ("oor00",)
        assert "oor00" not in subject.split("all").cameras


def test_check_dataset_accepts_it(mono, capsys):
    _script("check_dataset").main([str(mono), "--exp-dim", str(len(EXPRESSION_NAMES))])
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {mono}: {FRAMES} frames x 2 cameras, images {RES}x{RES}")


def test_params_follow_the_preset_trajectories_and_the_head_is_in_both_views(mono):
    poses = monocular_pose_trajectory(FRAMES, SEED)
    exps = talking_expression_trajectory(FRAMES, SEED)
    for f in range(FRAMES):
        params = np.load(mono / "params" / f"{f:04d}" / "params.npz")
        np.testing.assert_array_equal(params["pose"][0], poses[f])
        np.testing.assert_array_equal(params["exp_coeff"][0], exps[f])
        lmk = np.load(mono / "params" / f"{f:04d}" / "lmk_3d.npy")
        for cam in ("cam00", "oor00"):
            camera = np.load(mono / "cameras" / f"{f:04d}" / f"camera_{cam}.npz")
            mask = cv2.imread(str(mono / "images" / f"{f:04d}" / f"mask_{cam}.jpg"), cv2.IMREAD_GRAYSCALE) > 127
            # The head keeps off the image border, and its landmarks project onto it.
            assert mask.any() and not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())
            uv, z = project_points(lmk[None], camera["extrinsic"], camera["intrinsic"])
            uv = np.asarray(uv)[0]
            assert (np.asarray(z) > 0).all()
            inside = mask[np.clip(uv[:, 1].astype(int), 0, RES - 1), np.clip(uv[:, 0].astype(int), 0, RES - 1)]
            # Landmarks on the face turned away from a side camera can fall just off its silhouette at 64^2.
            assert inside.mean() > (0.95 if cam == "cam00" else 0.8), (f, cam, inside.mean())


def test_default_trajectory_spans_the_requested_head_rotation():
    yaw_lim, pitch_lim, roll_lim = MONOCULAR_POSE_LIMITS_DEG
    assert (yaw_lim, pitch_lim) == (40.0, 20.0)
    for seed in (0, 1, 2):
        poses = monocular_pose_trajectory(MONOCULAR_FRAMES, seed)
        assert poses.shape == (MONOCULAR_FRAMES, 6) and poses.dtype == np.float32
        yaw, pitch, roll = _euler_deg(poses).T
        for values, limit in ((yaw, yaw_lim), (pitch, pitch_lim)):
            assert values.max() > limit - 0.1 and values.min() < -limit + 0.1, (seed, values.min(), values.max())
            assert np.abs(values).max() <= limit + 1e-3
        assert np.abs(roll).max() <= roll_lim + 1e-3
        # Smooth head motion: at most ~2.6 deg per frame (a full sweep takes ~50 frames).
        assert np.abs(np.diff(np.stack([yaw, pitch, roll]), axis=1)).max() < 3.0
        assert np.abs(poses[:, 3:]).max() <= 0.0101
    # Deterministic per seed, different across seeds; matrix_to_euler inverts euler_to_matrix.
    np.testing.assert_array_equal(monocular_pose_trajectory(20, 4), monocular_pose_trajectory(20, 4))
    assert not np.allclose(monocular_pose_trajectory(20, 4), monocular_pose_trajectory(20, 5))
    angles = np.radians([33.0, -17.0, 4.0])
    np.testing.assert_allclose(matrix_to_euler(euler_to_matrix(*angles).numpy()), angles, atol=1e-12)


def test_default_expressions_talk_and_exercise_every_coefficient():
    E = {name: i for i, name in enumerate(EXPRESSION_NAMES)}
    for seed in (0, 1):
        exp = talking_expression_trajectory(MONOCULAR_FRAMES, seed)
        assert exp.shape == (MONOCULAR_FRAMES, len(EXPRESSION_NAMES)) and exp.dtype == np.float32
        assert exp.min() >= 0.0 and exp.max() <= 1.0
        # Every coefficient moves clearly at least once (a tracker's per-coefficient correlation needs variation).
        assert (exp.max(axis=0) > 0.4).all(), dict(zip(EXPRESSION_NAMES, exp.max(axis=0).round(2)))
        # Speech: the jaw opens and closes at syllable rate (a local maximum every few frames while talking) ...
        jaw = exp[:, E["jaw_open"]]
        peaks = np.sum((jaw[1:-1] > jaw[:-2]) & (jaw[1:-1] >= jaw[2:]) & (jaw[1:-1] > 0.2))
        assert peaks >= 25, peaks
        # ... with pauses (silent stretches where the jaw rests), the lips shaped in many syllables, and blinks.
        assert (jaw < 0.1).mean() > 0.1
        assert ((exp[:, E["pucker"]] > 0.2) | (exp[:, E["mouth_stretch"]] > 0.2)).mean() > 0.15
        assert np.sum(np.diff((exp[:, E["blink_left"]] > 0.9).astype(int)) == 1) >= 10
    np.testing.assert_array_equal(talking_expression_trajectory(30, 3), talking_expression_trajectory(30, 3))


def test_reused_refused_and_cli_errors(mono, tmp_path, capsys):
    stamp = (mono / "meta.json").stat().st_mtime_ns
    assert generate_monocular_subject(mono, identity=0, frames=FRAMES, resolution=RES, seed=SEED,
                                      progress=False) == mono
    assert (mono / "meta.json").stat().st_mtime_ns == stamp  # same arguments: reused, nothing written
    # The multi-view generator must not take the monocular folder for one of its own subjects (or overwrite it).
    with pytest.raises(SubjectArgumentError, match="already exists"):
        generate_subject(mono, identity=0, frames=FRAMES, cameras=1, resolution=RES, seed=SEED, progress=False)
    with pytest.raises(SubjectArgumentError, match="resolution"):
        generate_monocular_subject(tmp_path / "bad", resolution=8, progress=False)
    make_synthetic = _script("make_synthetic")
    for argv, message in ((["--monocular", "--cameras", "3"], "drop --cameras 3"),
                          (["--monocular", "--raw-capture"], "cannot be combined")):
        with pytest.raises(SystemExit) as exit_info:
            make_synthetic.main(argv + ["--out", str(tmp_path / "cli")])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
