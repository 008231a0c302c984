"""Subject and driver faults run as a user would, through the entry scripts (issue 24, issue 15 item 13).

Each case is a mistake a user can make with real data: a config whose `original_resolution` is not the
subject's, cameras in the wrong convention, a damaged driver sequence. Each must end with one line naming the
culprit and a non-zero exit status instead of a wrong result.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cgha.config import TrainConfig, load_config
from cgha.errors import UserError
from cgha.module.gaussian_head import GAUSSIAN_FEATURE_DIM, GaussianHeadModule
from cgha.module.super_resolution import SuperResolutionModule
from cgha.recorder.checkpoint import save_atomic
from cgha.trainer.progress import NoProgressError, check_gaussian_coverage, check_mesh_progress

ROOT = Path(__file__).resolve().parents[1]
MESH_CONFIG = ROOT / "config" / "train_meshhead_synthetic_demo.yaml"
GAUSSIAN_CONFIG = ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml"
REENACT_CONFIG = ROOT / "config" / "reenactment_synthetic_demo.yaml"
TINY_RESOLUTION = 64  # conftest's tiny_subject


def run_script(script: str, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *arguments], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The one-line error a user sees: exit status 2, no traceback, `error: ...` as the last stderr line."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), result.stderr[-3000:]
    return last


def train_meshhead(subject: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_script("train_meshhead.py", "--config", str(MESH_CONFIG), f"dataset.dataroot={subject}",
                      f"dataset.original_resolution={TINY_RESOLUTION}", "dataset.resolution=32",
                      "dataset.num_sample_view=2", "dataset.num_workers=0", "meshheadmodule.tet_resolution=24",
                      "train.pretrain_sphere_iters=150", "train.max_iters=2", "device=cpu",
                      f"recorder.checkpoint_path={out}/ck", f"recorder.logdir={out}/log",
                      f"recorder.result_path={out}/res", "train.deform_prior_iters=0",
                      "train.loss_weights.expression_prior=0", *overrides)


# ------------------------------------------------------------------------------- 24.1: the subject's resolution
def test_meshhead_refuses_an_original_resolution_the_subject_does_not_have(tiny_subject, tmp_path):
    """The issue's run: a 64^2 subject with the demo config's original_resolution (256) trained to IoU 0, exit 0."""
    line = error_line(train_meshhead(tiny_subject, tmp_path, "dataset.original_resolution=256"))
    assert "dataset.original_resolution" in line and "256" in line and str(TINY_RESOLUTION) in line
    assert str(tiny_subject) in line and "meta.json" in line


def test_gaussianhead_refuses_an_original_resolution_the_subject_does_not_have(tiny_subject, tmp_path):
    result = run_script("train_gaussianhead.py", "--config", str(GAUSSIAN_CONFIG), f"dataset.dataroot={tiny_subject}",
                        "dataset.original_resolution=256", "dataset.resolution=64", "dataset.num_workers=0",
                        "device=cpu", f"load_meshhead_checkpoint={tmp_path}/meshhead_latest",
                        f"recorder.checkpoint_path={tmp_path}/ck", f"recorder.logdir={tmp_path}/log",
                        f"recorder.result_path={tmp_path}/res")
    line = error_line(result)
    assert "dataset.original_resolution is 256" in line and str(tiny_subject) in line


def test_without_meta_json_the_principal_point_tells_the_resolution(broken, tmp_path):
    """A GHA-preprocessed subject has no meta.json, and its images may be stored smaller than original_resolution
    (the intrinsics stay in original_resolution pixels): that trains; a wrong original_resolution does not."""
    (broken / "meta.json").unlink()
    for path in (broken / "images").glob("*/*.jpg"):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(path), cv2.resize(image, (TINY_RESOLUTION // 2, TINY_RESOLUTION // 2),
                                          interpolation=cv2.INTER_AREA))
    held_out = ("dataset.split_from_meta=false", "dataset.eval_camera_ids=[cam03]")
    assert train_meshhead(broken, tmp_path / "right", *held_out).returncode == 0
    line = error_line(train_meshhead(broken, tmp_path / "wrong", *held_out, "dataset.original_resolution=256"))
    assert "dataset.original_resolution is 256" in line and "principal point" in line and str(broken) in line


def test_a_nersemble_preprocessed_subject_is_checked_against_its_preprocess_json(broken, tmp_path):
    """preprocess/preprocess_nersemble.py writes no meta.json; its preprocess.json records the intrinsics' size.
    Twice the true resolution would leave a centred principal point at 0.25 of the side: the record decides."""
    (broken / "meta.json").unlink()
    (broken / "preprocess.json").write_text(json.dumps({"version": 1, "settings": {"size": TINY_RESOLUTION}}))
    line = error_line(train_meshhead(broken, tmp_path, "dataset.split_from_meta=false",
                                     f"dataset.original_resolution={2 * TINY_RESOLUTION}"))
    assert f"records {TINY_RESOLUTION} (preprocess.json settings.size)" in line
    assert f"dataset.original_resolution={TINY_RESOLUTION}" in line


# --------------------------------------------------------------------------- 24.2: a stage that makes no progress
def test_meshhead_with_cameras_in_the_wrong_convention_stops_with_the_likely_causes(broken, tmp_path):
    """Camera-to-world matrices where world-to-camera ones belong: no view sees the head, so nothing can be learnt."""
    for path in (broken / "cameras").glob("*/*.npz"):
        camera = dict(np.load(path))
        rotation, translation = camera["extrinsic"][:, :3], camera["extrinsic"][:, 3]
        camera["extrinsic"] = np.concatenate([rotation.T, (-rotation.T @ translation)[:, None]], 1)
        np.savez(path, **camera)
    line = error_line(train_meshhead(broken, tmp_path))
    assert "silhouette" in line
    for cause in ("cameras", "original_resolution", "scale", "pose"):
        assert cause in line, cause


def test_gaussianhead_whose_render_covers_no_mask_stops_with_the_likely_causes(tiny_subject, broken, tmp_path):
    """A mesh head trained on the subject, then the Gaussian stage on a copy whose cameras are in the wrong
    convention: it stops before the first step instead of training on garbage."""
    assert train_meshhead(tiny_subject, tmp_path / "mesh", "recorder.name=mesh").returncode == 0
    for path in (broken / "cameras").glob("*/*.npz"):
        camera = dict(np.load(path))
        rotation, translation = camera["extrinsic"][:, :3], camera["extrinsic"][:, 3]
        camera["extrinsic"] = np.concatenate([rotation.T, (-rotation.T @ translation)[:, None]], 1)
        np.savez(path, **camera)
    overrides = [f"dataset.original_resolution={TINY_RESOLUTION}", "dataset.resolution=64", "dataset.num_workers=0",
                 "meshheadmodule.tet_resolution=24", "gaussianheadmodule.num_add_mouth_points=50",
                 "train.max_iters=2", "device=cpu", f"load_meshhead_checkpoint={tmp_path}/mesh/ck/mesh/meshhead_latest",
                 f"recorder.checkpoint_path={tmp_path}/ck", f"recorder.logdir={tmp_path}/log",
                 f"recorder.result_path={tmp_path}/res"]
    right = run_script("train_gaussianhead.py", "--config", str(GAUSSIAN_CONFIG), f"dataset.dataroot={tiny_subject}",
                       *overrides, "recorder.name=right")
    assert right.returncode == 0, right.stderr[-2000:]
    line = error_line(run_script("train_gaussianhead.py", "--config", str(GAUSSIAN_CONFIG),
                                 f"dataset.dataroot={broken}", *overrides, "recorder.name=wrong"))
    assert "covers none of the" in line
    for cause in ("cameras", "original_resolution", "scale", "pose"):
        assert cause in line, cause


def masks_with_a_square(size: int = 16) -> torch.Tensor:
    masks = torch.zeros(2, 1, size, size)
    masks[:, :, 4:12, 4:12] = 1.0
    return masks


def test_gaussian_coverage_check_rejects_a_render_beside_every_mask():
    masks = masks_with_a_square()
    beside = torch.zeros_like(masks)
    beside[:, :, 12:, 12:] = 1.0
    with pytest.raises(NoProgressError, match="covers none of the 2 masks") as error:
        check_gaussian_coverage(beside, masks, iteration=1)
    assert isinstance(error.value, UserError) and "\n" not in str(error.value)
    overlapping = beside.clone()
    overlapping[1, :, 8:12, 8:12] = 1.0
    check_gaussian_coverage(overlapping, masks, iteration=1)


def test_mesh_progress_check_rejects_zero_held_out_iou():
    with pytest.raises(NoProgressError, match="mask IoU 0"):
        check_mesh_progress({"mask_iou": 0.0, "psnr": 9.0, "views": 3}, iteration=30)
    check_mesh_progress({"mask_iou": 0.02, "psnr": 9.0, "views": 3}, iteration=30)


# -------------------------------------------------------------------------------- 24.3: low-res copies
def test_make_synthetic_never_writes_lowres_copies_larger_than_the_images(tmp_path):
    out = tmp_path / "small"
    result = run_script("preprocess/make_synthetic.py", "--out", str(out), "--frames", "1", "--cameras", "1",
                        "--resolution", "64", "--quiet")
    assert result.returncode == 0, result.stderr
    assert cv2.imread(str(out / "images" / "0000" / "image_lowres_cam00.jpg")).shape == (64, 64, 3)
    assert json.loads((out / "meta.json").read_text())["lowres_resolution"] == 64
    line = error_line(run_script("preprocess/make_synthetic.py", "--out", str(tmp_path / "other"), "--frames", "1",
                                 "--cameras", "1", "--resolution", "64", "--lowres", "128", "--quiet"))
    assert "lowres 128 is larger than resolution 64" in line


# ---------------------------------------------------------------- issue 15 item 13: the reenactment driver
@pytest.fixture(scope="module")
def avatar(tmp_path_factory) -> Path:
    """Raw checkpoints of an untrained demo-config avatar (Gaussians on a sphere, random networks): enough to
    drive; reenactment needs a valid avatar, not a good one."""
    cfg = load_config(TrainConfig, GAUSSIAN_CONFIG, [], stage="gaussianhead")
    generator = torch.Generator().manual_seed(0)
    xyz = torch.nn.functional.normalize(torch.randn(500, 3, generator=generator), dim=-1)
    feature = torch.randn(500, GAUSSIAN_FEATURE_DIM, generator=generator) * 0.5
    landmarks = torch.randn(68, 3, generator=generator) * 0.25 + torch.tensor([0.0, 0.0, 0.9])
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("avatar")
    save_atomic(GaussianHeadModule(cfg.gaussianheadmodule, xyz, feature, landmarks).state_dict(),
                out / "gaussianhead_latest")
    save_atomic(SuperResolutionModule(cfg.supresmodule).state_dict(), out / "supres_latest")
    return out


def reenact(driver: Path, avatar: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_script("reenactment.py", "--config", str(REENACT_CONFIG),
                      f"load_gaussianhead_checkpoint={avatar / 'gaussianhead_latest'}",
                      f"load_supres_checkpoint={avatar / 'supres_latest'}", f"dataset.dataroot={driver}",
                      "dataset.image_files=images/*/image_cam01.jpg",
                      f"dataset.camera_path={driver / 'cameras' / '0000' / 'camera_cam01.npz'}",
                      "dataset.pose_code_path=''", "dataset.pose_transfer=absolute", "dataset.freeview=false",
                      f"dataset.original_resolution={TINY_RESOLUTION}", "dataset.resolution=64",
                      "render.backend=torch", "device=cpu", f"recorder.result_path={out}", "recorder.name=run",
                      *overrides)


def test_reenactment_refuses_a_camera_at_another_resolution(tiny_subject, avatar, tmp_path):
    line = error_line(reenact(tiny_subject, avatar, tmp_path, "dataset.original_resolution=256"))
    assert "dataset.original_resolution is 256" in line and str(TINY_RESOLUTION) in line
    assert str(tiny_subject) in line


def test_reenactment_names_the_frame_with_the_wrong_expression_dimension(broken, avatar, tmp_path):
    path = broken / "params" / "0002" / "params.npz"
    params = dict(np.load(path))
    params["exp_coeff"] = params["exp_coeff"][:, :-1]
    np.savez(path, **params)
    line = error_line(reenact(broken, avatar, tmp_path))
    assert "params/0002/params.npz" in line and "params/0000" not in line
    assert "gaussianheadmodule.exp_coeffs_dim" in line


def test_reenactment_names_the_missing_driver_image(broken, avatar, tmp_path):
    (broken / "images" / "0002" / "image_cam01.jpg").unlink()
    line = error_line(reenact(broken, avatar, tmp_path))
    assert "images/0002/image_cam01.jpg" in line and "missing" in line


def test_reenactment_rejects_a_truncated_driver_jpeg_as_training_does(broken, avatar, tmp_path):
    image = broken / "images" / "0001" / "image_cam01.jpg"
    image.write_bytes(image.read_bytes()[: image.stat().st_size // 2])
    line = error_line(reenact(broken, avatar, tmp_path))
    assert "images/0001/image_cam01.jpg: truncated JPEG" in line
    assert not (tmp_path / "run" / "frames").exists()
