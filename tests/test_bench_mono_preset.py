"""benchmarks/tracking_mono_preset.py's pieces that decide what it measures: the arm syntax (a misspelled field is
refused, not ignored) and the truth's pose carried into the tracker's world (the diagnostic arms start from it)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from tracking_mono_preset import photometric_config, true_pose  # noqa: E402

from cgha.utils.rotations import axis_angle_to_matrix  # noqa: E402


def test_photometric_arm_changes_only_the_named_fields_and_refuses_unknown_ones():
    config = photometric_config("photometric:refine_identity=true,lr_identity=0.05")
    assert config.refine_identity is True and config.lr_identity == 0.05
    assert config.refine_expression is False and photometric_config("photometric") == type(config)()
    with pytest.raises(SystemExit, match="'lr_identiy' is not a PhotometricConfig field"):
        photometric_config("photometric:lr_identiy=0.05")


def _rotation(axis_angle) -> np.ndarray:
    return axis_angle_to_matrix(torch.tensor(axis_angle, dtype=torch.float64)).numpy()


def test_true_pose_puts_the_head_where_the_truth_camera_sees_it(tmp_path):
    # The truth: a head pose and the camera that rendered it. The tracker: another world, another camera matrix.
    # The head must come out at the same place and orientation relative to the tracker's camera.
    rng = np.random.default_rng(0)
    pose = np.concatenate([rng.normal(0, 0.4, 3), rng.normal(0, 0.1, 3)])
    extrinsic = np.concatenate([_rotation(rng.normal(0, 0.5, 3)), rng.normal(0, 1, (3, 1))], 1)
    (tmp_path / "params" / "0003").mkdir(parents=True)
    (tmp_path / "cameras" / "0003").mkdir(parents=True)
    np.savez(tmp_path / "params" / "0003" / "params.npz", pose=pose[None].astype(np.float32))
    np.savez(tmp_path / "cameras" / "0003" / "camera_cam00.npz", extrinsic=extrinsic)
    viewmat = np.eye(4)
    viewmat[:3, :3], viewmat[:3, 3] = _rotation([0.1, -0.3, 0.2]), [0.05, -0.02, 1.3]

    tracked = true_pose(tmp_path, "0003", viewmat)
    pose = pose.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(viewmat[:3, :3] @ _rotation(tracked[:3]), extrinsic[:, :3] @ _rotation(pose[:3]),
                               atol=1e-9)
    np.testing.assert_allclose(viewmat[:3, :3] @ tracked[3:] + viewmat[:3, 3],
                               extrinsic[:, :3] @ pose[3:] + extrinsic[:, 3], atol=1e-9)
