"""The main job end to end on a tiny schedule: generate -> mesh head -> compact Gaussian head -> evaluate -> video.

The demo's configs are the shipped demo configs shrunk (64^2, 4 cameras x 4 frames, a few iterations) and
written to a temporary config folder, so the test runs exactly the code `python demo.py` runs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import yaml

from cgha.demo import DemoScale, format_summary, run_demo
from cgha.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]
SUFFIX = "_synthetic_demo"


def _set(data: Dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        data = data.setdefault(key, {})
    data[leaf] = value


def write_tiny_configs(config_dir: Path, out: Path) -> DemoScale:
    """The demo configs at 64^2 with a few iterations, every path under `out`."""
    avatar, driver = out / "data" / "id0", out / "data" / "id1"
    outputs = {"recorder.checkpoint_path": str(out / "checkpoints"), "recorder.result_path": str(out / "results"),
               "device": "cpu"}
    changes = {
        "train_meshhead": {"dataset.dataroot": str(avatar), "dataset.original_resolution": 64,
                           "dataset.resolution": 32, "dataset.num_sample_view": 2, "meshheadmodule.tet_resolution": 20,
                           "train.max_iters": 3, "train.pretrain_sphere_iters": 30,
                           "recorder.logdir": str(out / "log" / "mesh")},
        "train_gaussianhead": {"dataset.dataroot": str(avatar), "dataset.original_resolution": 64,
                               "dataset.resolution": 64, "meshheadmodule.tet_resolution": 20,
                               "gaussianheadmodule.num_add_mouth_points": 20, "train.max_iters": 4,
                               "compact.start_iter": 2, "compact.codebook_size": 16, "render.backend": "torch",
                               "recorder.logdir": str(out / "log" / "gaussian")},
        "reenactment": {"dataset.dataroot": str(driver), "dataset.image_files": "images/*/image_cam01.jpg",
                        "dataset.camera_path": str(avatar / "cameras" / "0000" / "camera_cam01.npz"),
                        "dataset.pose_code_path": str(avatar / "params" / "0000" / "params.npz"),
                        "dataset.original_resolution": 64, "dataset.resolution": 64, "render.backend": "torch"},
    }
    config_dir.mkdir(parents=True)
    for stage, stage_changes in changes.items():
        data = yaml.safe_load((ROOT / "config" / f"{stage}{SUFFIX}.yaml").read_text())
        for key, value in {**outputs, **stage_changes}.items():
            _set(data, key, value)
        (config_dir / f"{stage}{SUFFIX}.yaml").write_text(yaml.safe_dump(data))
    return DemoScale("tiny", SUFFIX, cameras=4, frames=4, driver_frames=5)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    scale = write_tiny_configs(out / "config", out)
    return run_demo(out / "config", scale, torch.device("cpu"), out / "results"), out


def test_demo_runs_every_stage_and_reports_measured_numbers(demo_run):
    summary, out = demo_run
    assert set(summary["seconds"]) == {"generate", "mesh_head", "gaussian_head", "evaluate", "reenact", "total"}
    assert summary["seconds"]["total"] == pytest.approx(sum(v for k, v in summary["seconds"].items() if k != "total"))
    # The synthetic subject's meta.json holds out one camera and the last frames, and names its out-of-rig cameras:
    # all three splits are evaluated.
    assert set(summary["held_out"]) == {"test_cameras", "test_frames", "out_of_rig"}
    for entry in summary["held_out"].values():
        assert math.isfinite(entry["psnr"]) and 0.0 < entry["ssim"] <= 1.0 and entry["images"] > 0
    # Cross-identity ground truth: identity 0 rendered with identity 1's codes (its params are identity 1's exactly).
    cross = summary["cross_identity"]
    assert math.isfinite(cross["psnr"]) and cross["images"] == 5 * 4  # every view of the driver's 5 frames
    truth, driver = out / "data" / "id0_codes_of_id1", out / "data" / "id1"
    for frame in ("0000", "0004"):
        truth_params, driver_params = (np.load(root / "params" / frame / "params.npz") for root in (truth, driver))
        assert np.array_equal(truth_params["exp_coeff"], driver_params["exp_coeff"])
        assert np.array_equal(truth_params["pose"], driver_params["pose"])
    cross_json = json.loads(Path(summary["paths"]["cross_identity_evaluation"]).read_text())
    assert cross_json["splits"]["all"]["pose_offsets"] is False
    evaluation = json.loads(Path(summary["paths"]["evaluation"]).read_text())
    assert evaluation["avatar"]["kind"] == "compact"
    assert evaluation["splits"]["test_frames"]["output"]["psnr"] == summary["held_out"]["test_frames"]["psnr"]
    size = summary["size"]
    assert size["compact_mb"] < size["raw_mb"] and size["ratio"] == pytest.approx(size["raw_mb"] / size["compact_mb"])
    assert Path(summary["paths"]["compact_avatar"]).stat().st_size == pytest.approx(size["compact_mb"] * 1e6)
    assert summary["fps"]["reenactment"] > 0 and summary["fps"]["evaluation"] > 0
    # Identity 1 (5 frames) drives identity 0: a 5-frame video, side by side with the driver's images.
    video = imageio.mimread(summary["paths"]["video"])
    assert len(video) == 5 and video[0].shape == (64, 128, 3)
    strip = imageio.imread(summary["paths"]["strip"])
    assert strip.shape == (64, 4 * 128, 3)
    assert json.loads(Path(summary["paths"]["summary"]).read_text()) == json.loads(json.dumps(summary))


def test_summary_table_and_rerun_commands(demo_run):
    summary, out = demo_run
    table = format_summary(summary)
    for text in ("held-out cameras", "held-out frames", "out-of-rig cameras", "cross-identity", "avatar size", "x smaller", "FPS reenactment", "wall time",
                 summary["paths"]["video"], "python train_gaussianhead.py --config"):
        assert text in table
    evaluate = next(line for line in summary["commands"] if line.startswith("python evaluate.py"))
    assert "gaussianhead_compact.cgha" in evaluate and "device=cpu" in evaluate


def test_demo_refuses_a_config_without_compaction(tmp_path):
    scale = write_tiny_configs(tmp_path / "config", tmp_path)
    path = tmp_path / "config" / f"train_gaussianhead{SUFFIX}.yaml"
    data = yaml.safe_load(path.read_text())
    data["compact"]["enable"] = False
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="compact.enable"):
        run_demo(tmp_path / "config", scale, torch.device("cpu"), tmp_path / "results")


def test_demo_never_overwrites_a_subject_generated_with_other_arguments(tmp_path):
    from cgha.synthetic import generate_subject

    scale = write_tiny_configs(tmp_path / "config", tmp_path)
    # Identity 1 already generated with fewer frames than the demo asks for (e.g. by an older demo).
    generate_subject(tmp_path / "data" / "id1", identity=1, frames=2, cameras=4, resolution=64, seed=1,
                     lowres=32, progress=False)
    with pytest.raises(DataError, match=r"id1 exists but is not the demo's synthetic identity 1 \(5 frames, 4 cameras "
                                        r"at 64\^2\): delete it .* dataset.dataroot in .*reenactment"):
        run_demo(tmp_path / "config", scale, torch.device("cpu"), tmp_path / "results")
    assert len(list((tmp_path / "data" / "id1" / "images").iterdir())) == 2
