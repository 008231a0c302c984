"""Mesh head: module geometry, a tiny CPU training run (losses finite, silhouette loss falls), checkpoints, resume."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cgha.config import TrainConfig, load_config
from cgha.dataset import MeshDataset
from cgha.errors import CheckpointError
from cgha.module.mesh_head import (MeshHeadModule, blend_weights, pose_to_world, pretrain_sphere,
                                   warm_up_expression_deformation, world_to_canonical)
from cgha.recorder.metrics_log import read_metrics
from cgha.trainer.mesh_head_trainer import MeshHeadTrainer

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "config" / "train_meshhead_synthetic_demo.yaml"


def tiny_config(subject: Path, out: Path, *extra: str) -> TrainConfig:
    overrides = [f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=32",
                 "dataset.num_sample_view=2", "dataset.num_workers=0", "dataset.split_from_meta=false",
                 "dataset.eval_camera_ids=[cam03]", "meshheadmodule.tet_resolution=24",
                 "train.pretrain_sphere_iters=150", "train.deform_prior_iters=30", "device=cpu", f"recorder.checkpoint_path={out}/ck",
                 f"recorder.logdir={out}/log", f"recorder.result_path={out}/res", "recorder.log_freq=1",
                 "recorder.show_freq=5", "recorder.save_freq=4", "lr_net=3e-3", *extra]
    return load_config(TrainConfig, DEMO_CONFIG, overrides, stage="meshhead")


def test_pose_transform_round_trip():
    points = torch.randn(2, 5, 3)
    pose = torch.tensor([[0.1, -0.3, 0.2, 0.01, 0.02, -0.5], [0.0, 0.5, 0.0, 0.0, 0.0, 0.0]])
    scale = torch.tensor([[0.125], [2.0]])
    torch.testing.assert_close(world_to_canonical(pose_to_world(points, pose, scale), pose, scale), points)


def test_blend_weights_follow_squared_distance():
    landmarks = torch.zeros(1, 3)
    points = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, 0.4], [0.0, 0.0, 0.45], [0.0, 0.0, 1.0]])
    weights = blend_weights(points, landmarks, near=0.1, far=0.25)[:, 0]
    # squared distances 0.01, 0.16, 0.2025, 1.0 against thresholds 0.1 / 0.25
    torch.testing.assert_close(weights, torch.tensor([1.0, 0.6, 0.3166667, 0.0]), rtol=1e-5, atol=1e-5)


def test_sphere_pretraining_gives_a_closed_outward_mesh():
    cfg = load_config(TrainConfig, DEMO_CONFIG, ["meshheadmodule.tet_resolution=24"], stage="meshhead")
    torch.manual_seed(0)
    module = MeshHeadModule(cfg.meshheadmodule, torch.zeros(10, 3))
    pretrain_sphere(module, 200, torch.device("cpu"), batch=2048)
    mesh = module.reconstruct_neutral()
    verts, faces = mesh["verts"].detach(), mesh["faces"]
    radius = verts.norm(dim=-1)
    assert 0.8 < radius.mean() < 1.2
    corners = verts[faces]
    normals = torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)
    assert (normals * corners.mean(1)).sum(-1).gt(0).float().mean() > 0.99  # outward
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    assert len({tuple(e) for e in edges.tolist()}) == len(edges)  # each directed edge once: closed, consistent


def test_reconstruct_shapes_and_expression_dimension_check():
    cfg = load_config(TrainConfig, DEMO_CONFIG, ["meshheadmodule.tet_resolution=16"], stage="meshhead")
    module = MeshHeadModule(cfg.meshheadmodule, torch.randn(20, 3) * 0.5)
    pretrain_sphere(module, 20, torch.device("cpu"), batch=512)
    out = module.reconstruct(torch.zeros(3, 16), torch.zeros(3, 6), torch.full((3, 1), 0.125))
    count = out["verts_neutral"].shape[0]
    assert out["verts"].shape == (3, count, 3) and out["colors"].shape == (3, count, 32)
    assert out["verts"].abs().max() < 0.5  # scaled into world units
    with pytest.raises(ValueError, match="exp_coeff has 10 coefficients, the mesh head takes 16"):
        module.reconstruct(torch.zeros(1, 10), torch.zeros(1, 6), torch.ones(1, 1))


def test_expression_warm_up_fits_landmark_motion_and_touches_nothing_else():
    cfg = load_config(TrainConfig, DEMO_CONFIG, ["meshheadmodule.tet_resolution=16"], stage="meshhead")
    torch.manual_seed(0)
    neutral = torch.randn(30, 3) * 0.5
    module = MeshHeadModule(cfg.meshheadmodule, neutral)
    pretrain_sphere(module, 20, torch.device("cpu"), batch=512)
    # Coefficient 0 opens a "jaw": the lower landmarks move down by 0.2 x the coefficient.
    exp = torch.zeros(8, 16)
    exp[:, 0] = torch.linspace(0, 1, 8)
    lower = (neutral[:, 1] < 0).float()[:, None]
    with torch.no_grad():
        surface = module.surface_points(neutral)
    target = surface[None] + exp[:, :1, None] * lower[None] * torch.tensor([0.0, -0.2, 0.0])
    others = {name: value.clone() for name, value in module.state_dict().items() if not name.startswith("exp_deform")}
    before = torch.nn.functional.mse_loss(module.deform(neutral[None].expand(8, -1, -1), exp), target).item()
    after = warm_up_expression_deformation(module, exp, target, 300, lr=3e-3)
    assert after < before / 20
    for name, value in module.state_dict().items():
        if not name.startswith("exp_deform"):
            torch.testing.assert_close(value, others[name])
    opened = torch.zeros(1, 16)
    opened[0, 0] = 1.0
    with torch.no_grad():
        motion = module.deform(neutral[None], opened) - module.deform(neutral[None], torch.zeros(1, 16))
    assert motion[0, lower[:, 0] > 0, 1].mean() < -0.15 and motion[0, lower[:, 0] == 0].norm(dim=-1).mean() < 0.05


def test_tiny_training_run_learns_and_resumes(tiny_subject, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(tiny_subject, tmp_path, "train.max_iters=8")
    dataset = MeshDataset(cfg.dataset)
    held_out = MeshDataset(cfg.dataset, split="test_cameras", subject=dataset.subject)
    trainer = MeshHeadTrainer(cfg, torch.device("cpu"), dataset, held_out)
    fixed = trainer.to_device({key: value[None] for key, value in dataset.all_views(0).items()})
    with torch.no_grad():
        before, _ = trainer.compute_losses(fixed)
    metrics = trainer.fit()
    with torch.no_grad():
        after, _ = trainer.compute_losses(fixed)
    assert all(torch.isfinite(value) for value in after.values())
    assert after["sil"] < before["sil"], (before["sil"], after["sil"])
    assert 0.0 < metrics["mask_iou"] <= 1.0 and metrics["views"] == len(held_out)

    run = tmp_path / "ck" / cfg.recorder.name
    for name in ("meshhead_latest", "meshhead_train_state_latest", "config.yaml"):
        assert (run / name).is_file(), name
    assert list(run.glob("meshhead_epoch_*"))
    results = tmp_path / "res" / cfg.recorder.name
    assert (results / "meshhead_neutral.obj").is_file() and (results / "meshhead_neutral.ply").is_file()
    assert (results / "000005.jpg").is_file()
    assert json.loads((results / "meshhead_eval.json").read_text())["iter"] == 8
    records = read_metrics(tmp_path / "log" / "metrics.jsonl")
    assert [r["iter"] for r in records if "loss_sil" in r] == list(range(1, 9))
    assert {"loss_rgb", "loss_sil", "loss_def", "loss_offset", "loss_lmk", "loss_lap", "epoch"} <= set(records[0])

    # Resume: a second run with a higher limit continues from iteration 8 with the saved optimiser state.
    resumed = MeshHeadTrainer(tiny_config(tiny_subject, tmp_path, "train.max_iters=10"), torch.device("cpu"),
                              dataset, held_out)
    assert resumed.iteration == 8
    torch.testing.assert_close(resumed.module.state_dict()["geo_mlp.layers.0.weight"],
                               trainer.module.state_dict()["geo_mlp.layers.0.weight"])
    assert resumed.optimizer.state_dict()["state"], "optimizer moments were restored"
    resumed.fit()
    assert read_metrics(tmp_path / "log" / "metrics.jsonl")[-2]["iter"] == 10


def test_train_seed_makes_runs_repeatable_on_cpu(tiny_subject, tmp_path):
    states = []
    for run, noise in (("a", 1), ("b", 2)):
        torch.manual_seed(noise)  # whatever the global generator held before, the run starts from train.seed
        cfg = tiny_config(tiny_subject, tmp_path / run, "train.max_iters=3", "train.pretrain_sphere_iters=20")
        trainer = MeshHeadTrainer(cfg, torch.device("cpu"), MeshDataset(cfg.dataset))
        trainer.fit()
        states.append(trainer.module.state_dict())
    for key in states[0]:
        torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0, msg=key)
    other = tiny_config(tiny_subject, tmp_path / "c", "train.max_iters=3", "train.pretrain_sphere_iters=20",
                        "train.seed=1")
    trainer = MeshHeadTrainer(other, torch.device("cpu"), MeshDataset(other.dataset))
    assert not torch.equal(trainer.module.state_dict()["geo_mlp.layers.0.weight"],
                           states[0]["geo_mlp.layers.0.weight"])


def test_corrupt_or_foreign_checkpoints_fail_clearly(tiny_subject, tmp_path):
    cfg = tiny_config(tiny_subject, tmp_path, "train.max_iters=1", "train.pretrain_sphere_iters=1")
    dataset = MeshDataset(cfg.dataset)
    run = tmp_path / "ck" / cfg.recorder.name
    run.mkdir(parents=True)
    (run / "meshhead_latest").write_bytes(b"PK\x03\x04 truncated")
    (run / "meshhead_train_state_latest").write_bytes(b"")
    with pytest.raises(CheckpointError, match="meshhead_latest: not a readable mesh-head checkpoint"):
        MeshHeadTrainer(cfg, torch.device("cpu"), dataset)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    cfg = tiny_config(tiny_subject, tmp_path / "other", "train.max_iters=1", f"load_meshhead_checkpoint={foreign}")
    with pytest.raises(CheckpointError, match="does not belong to a MeshHeadModule"):
        MeshHeadTrainer(cfg, torch.device("cpu"), dataset)
    cfg = tiny_config(tiny_subject, tmp_path / "third", "train.max_iters=1", f"load_meshhead_checkpoint={tmp_path}/nope")
    with pytest.raises(CheckpointError, match="load_meshhead_checkpoint not found"):
        MeshHeadTrainer(cfg, torch.device("cpu"), dataset)


def test_entry_script_reports_config_errors_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "train_meshhead.py", "--config", str(DEMO_CONFIG), "train.max_itres=3"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: override 'train.max_itres=3': unknown key 'train.max_itres' "
                                     "(did you mean 'train.max_iters'?)")
