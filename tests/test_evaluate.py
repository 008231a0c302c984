"""evaluate.py / cgha.apps.evaluation: metric helpers, raw and compact avatars on a tiny subject, CLI errors."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cgha.apps.evaluation import evaluate_avatar, format_table
from cgha.dataset import GaussianDataset
from cgha.dataset.loader import evenly_spaced_indices
from cgha.compact.avatar_file import save_compact_avatar
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec
from cgha.config import TrainConfig, load_config
from cgha.errors import CheckpointError
from cgha.module.gaussian_head import GaussianHeadModule
from cgha.utils.lpips import load_lpips
from cgha.module.mesh_head import MeshHeadModule, pretrain_sphere
from cgha.module.super_resolution import SuperResolutionModule
from cgha.recorder.checkpoint import save_atomic
from cgha.utils.image_io import read_rgb
from cgha.utils.metrics import composite_on_white, masked_psnr, masked_ssim, mouth_box_mask, psnr, ssim

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml"
SMALL = ["meshheadmodule.tet_resolution=20", "gaussianheadmodule.num_add_mouth_points=50"]


def subject_overrides(subject: Path, out: Path) -> list:
    return [f"dataset.dataroot={subject}", "dataset.eval_camera_ids=[cam03]", "dataset.eval_frame_ids=['0003']",
            "dataset.split_from_meta=false", "dataset.original_resolution=64", "dataset.resolution=64",
            "render.backend=torch", "device=cpu", f"recorder.checkpoint_path={out / 'checkpoints'}",
            f"recorder.result_path={out / 'results'}", "recorder.name=tiny", f"recorder.logdir={out / 'log'}"]


@pytest.fixture(scope="module")
def avatar(tmp_path_factory, tiny_subject):
    """An untrained tiny avatar saved both raw (run folder) and compact; -> (out dir, compact path, delta path)."""
    out = tmp_path_factory.mktemp("eval")
    cfg = load_config(TrainConfig, CONFIG, SMALL, stage="gaussianhead")
    generator = torch.Generator().manual_seed(0)
    landmarks = torch.randn(80, 3, generator=generator) * 0.25 + torch.tensor([0.0, 0.0, 0.9])
    torch.manual_seed(0)
    mesh_head = MeshHeadModule(cfg.meshheadmodule, landmarks)
    pretrain_sphere(mesh_head, 60, torch.device("cpu"), batch=2048)
    module = GaussianHeadModule.from_mesh_head(cfg.gaussianheadmodule, mesh_head)
    supres = SuperResolutionModule(cfg.supresmodule)
    run = out / "checkpoints" / "tiny"
    run.mkdir(parents=True)
    save_atomic(module.state_dict(), run / "gaussianhead_latest")
    save_atomic(supres.state_dict(), run / "supres_latest")
    delta = run / "delta_poses_latest"
    save_atomic(torch.zeros(4, 6), delta)
    quantizer = GroupedQuantizer(cfg.compact.groups, GroupSpec.of(GaussianHeadModule), codebook_size=16, kmeans_iters=2)
    quantizer.initialise({key: value.detach() for key, value in module.canonical_attributes().items()})
    compact = out / "avatar.cgha"
    save_compact_avatar(compact, module, supres, quantizer, cfg.compact.store)
    return out, compact, delta


def eval_config(subject: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIG, [*SMALL, *subject_overrides(subject, out), *extra], stage="evaluate")


def test_metric_helpers():
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 32, 32, generator=generator)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1.0
    assert (psnr(image, image) > 100).all() and (masked_psnr(image, image, mask) > 100).all()
    torch.testing.assert_close(ssim(image, image), torch.ones(2))
    torch.testing.assert_close(masked_ssim(image, image, mask), torch.ones(2))
    # An error only outside the mask is invisible to the masked metrics.
    noisy = image.clone()
    noisy[..., :4, :] = 1.0 - noisy[..., :4, :]
    assert (masked_psnr(noisy, image, mask) > 100).all() and (psnr(noisy, image) < 20).all()
    torch.testing.assert_close(masked_ssim(noisy, image, mask), torch.ones(2))
    # Inside the mask, the masked MSE is the plain MSE over the masked pixels.
    shifted = image + 0.1 * mask
    expected = -10 * math.log10(0.01)
    torch.testing.assert_close(masked_psnr(shifted, image, mask), torch.full((2,), expected))
    torch.testing.assert_close(composite_on_white(image, mask)[..., 0, 0], torch.ones(2, 3))
    assert evenly_spaced_indices(10, 0) == list(range(10))
    assert evenly_spaced_indices(10, 3) == [0, 4, 9] and evenly_spaced_indices(3, 5) == [0, 1, 2]
    network, status = load_lpips(False, torch.device("cpu"))
    assert network is None and status == "disabled"


def test_mouth_box_bounds_the_lips_with_a_margin():
    landmarks = torch.zeros(2, 70, 2)
    landmarks[0, 48:68] = torch.tensor([[10.0, 20.0], [30.0, 28.0]]).repeat(10, 1)  # lips span u 10..30, v 20..28
    landmarks[1, 48:68] = torch.tensor([[-40.0, -40.0], [-30.0, -35.0]]).repeat(10, 1)  # mouth outside the image
    landmarks[:, :48] = 5.0  # other landmarks do not widen the box
    mask = mouth_box_mask(landmarks, 40, 50)
    assert mask.shape == (2, 1, 40, 50)
    rows, cols = mask[0, 0].nonzero(as_tuple=True)
    # margin 0.25 of the size: u 5..35, v 18..30 (pixel centres at +0.5)
    assert (cols.min().item(), cols.max().item(), rows.min().item(), rows.max().item()) == (5, 34, 18, 29)
    assert mask[1].sum() == 0
    # An error only outside the box is invisible to the mouth PSNR; one inside it is not.
    image = torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(0))
    elsewhere, lips = image.clone(), image.clone()
    elsewhere[..., :10, :] = 0.0
    lips[..., 22:26, 15:25] = 0.0
    assert masked_psnr(elsewhere, image, mask[:1]) > 100 and masked_psnr(lips, image, mask[:1]) < 25
    with pytest.raises(ValueError, match="68 iBUG landmarks"):
        mouth_box_mask(torch.zeros(1, 20, 2), 8, 8)


def test_lpips_reports_unavailable_instead_of_faking(monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # makes `import lpips` raise ImportError
    network, status = load_lpips(True, torch.device("cpu"))
    assert network is None and status.startswith("unavailable: ") and "lpips" in status


def _check_results(results: dict, path: Path) -> None:
    assert path.is_file() and json.loads(path.read_text()) == json.loads(json.dumps(results))
    assert set(results["splits"]) == {"test_cameras", "test_frames", "out_of_rig"}
    cameras, frames = results["splits"]["test_cameras"], results["splits"]["test_frames"]
    out_of_rig = results["splits"]["out_of_rig"]
    # The training frames 0000-0002 seen from the 5 out-of-rig cameras, with the training pose offsets.
    assert out_of_rig["num_images"] == 15 and out_of_rig["pose_offsets"] is True
    assert 0 < out_of_rig["output"]["psnr"] < 60 and -1 <= out_of_rig["output"]["ssim"] <= 1
    # Per camera: every out-of-rig camera, 3 frames each, so their mean is the split's mean image PSNR.
    per_camera = out_of_rig["per_camera"]
    assert sorted(per_camera) == [f"oor{i:02d}" for i in range(5)]
    assert abs(sum(per_camera.values()) / 5 - out_of_rig["output"]["psnr"]) < 1e-4
    assert len(set(per_camera.values())) == 5
    assert cameras["num_images"] == 3 and frames["num_images"] == 3  # 3 frames x cam03; frame 0003 x 3 cameras
    assert cameras["pose_offsets"] is True and frames["pose_offsets"] is False
    for entry in (cameras, frames):
        assert entry["render_resolution"] == 16 and entry["output_resolution"] == 64
        for level in ("render", "output"):
            values = entry[level]
            assert 0 < values["psnr"] < 60 and 0 < values["psnr_masked"] < 60
            assert -1 <= values["ssim"] <= 1 and -1 <= values["ssim_masked"] <= 1
            assert values["psnr"] != values["psnr_masked"] and values["ssim"] != values["ssim_masked"]
        # The synthetic subject's landmarks start with the iBUG-68 ones: the lips' box is scored on its own.
        assert 0 < entry["output"]["psnr_mouth"] < 60 and "psnr_mouth" not in entry["render"]
        assert entry["speed"]["ms_per_frame"] > 0 and entry["speed"]["fps"] > 0
        assert entry["speed"]["timed_frames"] == 3
    assert results["speed"]["timed_frames"] == 21
    table = format_table(results)
    assert "test_cameras" in table and "test_frames" in table and "out_of_rig" in table and "MB on disk" in table


def test_evaluate_raw_and_compact(avatar, tiny_subject):
    out, compact, delta = avatar
    run = out / "checkpoints" / "tiny"
    raw = evaluate_avatar(eval_config(tiny_subject, out, f"load_delta_poses_checkpoint={delta}"),
                          torch.device("cpu"))
    path = out / "results" / "tiny" / "evaluation.json"
    _check_results(raw, path)
    assert raw["avatar"]["kind"] == "raw"
    sizes = {"gaussianhead": os.path.getsize(run / "gaussianhead_latest"),
             "supres": os.path.getsize(run / "supres_latest")}
    assert raw["avatar"]["bytes"] == sizes and raw["avatar"]["total_bytes"] == sum(sizes.values())
    assert raw["lpips"] == "disabled"

    packed = evaluate_avatar(eval_config(tiny_subject, out, f"load_gaussianhead_checkpoint={compact}",
                                         f"load_delta_poses_checkpoint={delta}", "eval.lpips=true"),
                             torch.device("cpu"))
    _check_results(packed, path)
    assert packed["avatar"]["kind"] == "compact"
    assert packed["avatar"]["bytes"] == {"compact": os.path.getsize(compact)}
    assert packed["avatar"]["total_bytes"] < raw["avatar"]["total_bytes"]
    assert packed["lpips"] in ("ok",) or packed["lpips"].startswith("unavailable: ")
    if packed["lpips"] != "ok":
        assert "lpips" not in packed["splits"]["test_frames"]["output"]
    # The compact avatar is the raw one with quantised attributes: close, not identical.
    assert abs(packed["splits"]["test_frames"]["output"]["psnr"] - raw["splits"]["test_frames"]["output"]["psnr"]) < 5


def test_max_images_caps_each_split(avatar, tiny_subject):
    out, _, _ = avatar
    results = evaluate_avatar(eval_config(tiny_subject, out, "eval.max_images=2", "eval.splits=[test_frames]"),
                              torch.device("cpu"))
    assert list(results["splits"]) == ["test_frames"] and results["splits"]["test_frames"]["num_images"] == 2


def test_contact_sheet_shows_ground_truth_over_output(avatar, tiny_subject):
    out, _, delta = avatar
    results = evaluate_avatar(eval_config(tiny_subject, out, "eval.sheet_images=2", "eval.splits=[out_of_rig]",
                                          f"load_delta_poses_checkpoint={delta}"), torch.device("cpu"))
    entry = results["splits"]["out_of_rig"]
    sheet = read_rgb(entry["sheet"])
    assert sheet.shape == (2 * 64, 2 * 64, 3)  # 2 rows (ground truth, output) x 2 views at the output size
    # The top row is the data: the first out-of-rig view's ground truth, pixel for pixel up to JPEG loss.
    dataset = GaussianDataset(eval_config(tiny_subject, out).dataset, split="out_of_rig", views="all")
    first = dataset[0]["images"].permute(1, 2, 0).numpy()
    assert abs(sheet[:64, :64] - first).mean() < 0.03
    assert abs(sheet[64:, :64] - first).mean() > abs(sheet[:64, :64] - first).mean()


def test_missing_checkpoints_are_user_errors(avatar, tiny_subject, tmp_path):
    out, _, _ = avatar
    with pytest.raises(CheckpointError, match="delta-poses checkpoint not found"):
        evaluate_avatar(eval_config(tiny_subject, out, f"load_delta_poses_checkpoint={tmp_path / 'none'}"),
                        torch.device("cpu"))
    with pytest.raises(CheckpointError, match="super-resolution checkpoint not found"):
        evaluate_avatar(eval_config(tiny_subject, out, f"load_supres_checkpoint={tmp_path / 'none'}"),
                        torch.device("cpu"))
    missing = tmp_path / "missing_gaussianhead"
    command = [sys.executable, str(ROOT / "evaluate.py"), "--config", str(CONFIG), *SMALL,
               *subject_overrides(tiny_subject, tmp_path), f"load_gaussianhead_checkpoint={missing}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]


def test_entry_script_prints_table(avatar, tiny_subject):
    out, compact, _ = avatar
    command = [sys.executable, str(ROOT / "evaluate.py"), "--config", str(CONFIG), *SMALL,
               *subject_overrides(tiny_subject, out), f"load_gaussianhead_checkpoint={compact}",
               "eval.max_images=1"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "test_cameras" in result.stdout and "results: " in result.stdout
    assert Path(result.stdout.strip().splitlines()[-1].split("results: ", 1)[1]).is_file()
