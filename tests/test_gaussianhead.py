"""Gaussian head: initialisation from a mesh head, batched generate, pose handling, a tiny CPU training run."""
from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cgha.config import TrainConfig, load_config
from cgha.dataset import GaussianDataset
from cgha.errors import CheckpointError
from cgha.module.gaussian_head import INHERITED_MLPS, GaussianHeadModule, ReachPadding
from cgha.module.mesh_head import MeshHeadModule, pretrain_sphere
from cgha.recorder.checkpoint import save_atomic
from cgha.recorder.metrics_log import read_metrics
from cgha.trainer.gaussian_head_trainer import GaussianHeadTrainer, stage2_losses
from cgha.utils.knn import mean_sq_distance_to_3nn
from cgha.utils.rotations import axis_angle_to_matrix, quaternion_to_matrix

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml"


@pytest.fixture(scope="module")
def mesh_head_checkpoint(tmp_path_factory) -> Path:
    """A sphere-initialised mesh head (landmarks on its front) saved as a checkpoint."""
    cfg = load_config(TrainConfig, CONFIG, ["meshheadmodule.tet_resolution=20"], stage="gaussianhead")
    generator = torch.Generator().manual_seed(0)
    landmarks = torch.randn(80, 3, generator=generator) * 0.25 + torch.tensor([0.0, 0.0, 0.9])
    torch.manual_seed(0)
    mesh_head = MeshHeadModule(cfg.meshheadmodule, landmarks)
    pretrain_sphere(mesh_head, 150, torch.device("cpu"), batch=2048)
    path = tmp_path_factory.mktemp("meshhead") / "meshhead_latest"
    save_atomic(mesh_head.state_dict(), path)
    return path


def small_config(*extra: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIG, ["meshheadmodule.tet_resolution=20",
                                             "gaussianheadmodule.num_add_mouth_points=50", *extra],
                       stage="gaussianhead")


def module_from(checkpoint: Path, cfg: TrainConfig) -> tuple[GaussianHeadModule, MeshHeadModule]:
    state = torch.load(checkpoint, weights_only=True)
    mesh_head = MeshHeadModule(cfg.meshheadmodule, state["landmarks_3d_neutral"])
    mesh_head.load_state_dict(state)
    return GaussianHeadModule.from_mesh_head(cfg.gaussianheadmodule, mesh_head), mesh_head


def test_initialisation_from_mesh_head(mesh_head_checkpoint):
    cfg = small_config()
    module, mesh_head = module_from(mesh_head_checkpoint, cfg)
    with torch.no_grad():
        surface = mesh_head.reconstruct_neutral(subdivide=True)["verts"]
    assert module.num_gaussians == surface.shape[0] + 50
    torch.testing.assert_close(module.xyz[: surface.shape[0]], surface)
    for name in INHERITED_MLPS:
        for ours, theirs in zip(getattr(module, name).parameters(), getattr(mesh_head, name).parameters()):
            torch.testing.assert_close(ours, theirs)
    # Scales start at sqrt of the mean squared distance to the 3 nearest neighbours (3DGS / GHA's distCUDA2;
    # the kNN itself is tested against brute force in test_knn.py), the same on all three axes.
    spacing = mean_sq_distance_to_3nn(module.xyz.detach()).clamp_min(1e-7).sqrt()
    torch.testing.assert_close(module.scales, spacing.log()[:, None].expand(-1, 3))
    torch.testing.assert_close(torch.sigmoid(module.opacity), torch.full_like(module.opacity, 0.3))
    torch.testing.assert_close(module.rotation, torch.tensor([1.0, 0, 0, 0]).expand_as(module.rotation))


def test_generate_is_batched_normalised_and_pose_consistent(mesh_head_checkpoint):
    cfg = small_config()
    module, _ = module_from(mesh_head_checkpoint, cfg)
    with torch.no_grad():
        module.rotation.add_(torch.randn_like(module.rotation) * 0.3)  # non-unit, non-identity rotations
    exp = torch.randn(3, 16) * 0.5
    pose = torch.tensor([[0.2, -0.3, 0.1, 0.01, -0.02, 0.03], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                         [-0.1, 0.4, 0.0, 0.0, 0.05, 0.0]])
    scale = torch.tensor([[0.125], [1.0], [0.2]])
    code = torch.zeros(3, 6)
    batched = module.generate(exp, pose, scale, pose_code=code)
    for b in range(3):
        single = module.generate(exp[b:b + 1], pose[b:b + 1], scale[b:b + 1], pose_code=code[b:b + 1])
        for key in ("means", "features", "scales", "quats", "opacities"):
            torch.testing.assert_close(getattr(batched, key)[b:b + 1], getattr(single, key), atol=1e-5, rtol=1e-5)
    norms = batched.quats.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))  # each Gaussian's quaternion (GHA normalised dim 1)
    # Same expression and pose code, different head pose: positions and orientations follow the head transform.
    same = module.generate(exp[:1].expand(2, -1), torch.stack([pose[0], torch.zeros(6)]),
                           torch.tensor([[0.125], [1.0]]), pose_code=torch.zeros(2, 6))
    rotation = axis_angle_to_matrix(pose[0, :3])
    expected = 0.125 * same.means[1] @ rotation.T + pose[0, 3:]
    torch.testing.assert_close(same.means[0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(quaternion_to_matrix(same.quats[0]),
                               rotation @ quaternion_to_matrix(same.quats[1]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(same.scales[0], 0.125 * same.scales[1])
    with pytest.raises(ValueError, match=r"exp_coeff must be \[B, 16\]"):
        module.generate(torch.zeros(1, 10), torch.zeros(1, 6), torch.ones(1, 1))


def generate_loss(module: GaussianHeadModule, attributes=None, batch: int = 2):
    """generate() on a fixed batch (up to 2 frames) and a loss that reads every output: -> (outputs, loss, pose)."""
    generator = torch.Generator().manual_seed(1)
    device = module.xyz.device
    exp = (torch.randn(2, module.cfg.exp_coeffs_dim, generator=generator) * 0.5)[:batch].to(device)
    pose = torch.tensor([[0.2, -0.3, 0.1, 0.01, -0.02, 0.03], [-0.1, 0.4, 0.0, 0.0, 0.05, 0.0]])[:batch].to(device)
    pose.requires_grad_(True)
    scale = torch.tensor([[0.125], [1.0]])[:batch].to(device)
    generated = module.generate(exp, pose, scale, attributes=attributes).as_dict()
    weights = torch.Generator().manual_seed(2)
    loss = sum((value * torch.rand(value.shape, generator=weights).to(device)).sum() for value in generated.values())
    return generated, loss, pose


def test_padded_reach_gives_the_same_gaussians_and_gradients(mesh_head_checkpoint):
    """ReachPadding's extra rows (Gaussian 0, weight 0) change neither the output nor any gradient."""
    module, _ = module_from(mesh_head_checkpoint, small_config())
    module = module.double()  # float64: only the summation order differs, so the results agree to 1e-12
    with torch.no_grad():
        module.rotation.add_(torch.randn_like(module.rotation) * 0.3)
    reach = module.reach(module.xyz)
    assert 0 < reach.exp_index.numel() < module.num_gaussians and 0 < reach.pose_index.numel() < module.num_gaussians
    # The branches against a brute-force nearest-landmark distance, and GHA's weights.
    dist_sq = (module.xyz[:, None] - module.landmarks_3d_neutral[None]).square().sum(-1).amin(1).detach()
    near, far = module.cfg.dist_threshold_near, module.cfg.dist_threshold_far
    assert torch.equal(reach.exp_index, torch.nonzero(dist_sq < far)[:, 0])
    assert torch.equal(reach.pose_index, torch.nonzero(dist_sq > near)[:, 0])
    expected = ((far - dist_sq) / (far - near)).clamp(0, 1)[:, None]
    torch.testing.assert_close(reach.exp_weight, expected[reach.exp_index])
    torch.testing.assert_close(reach.pose_weight, 1 - expected[reach.pose_index])
    padded = module.reach(module.xyz, ReachPadding())
    assert padded.exp_index.numel() % ReachPadding.GRANULE == 0 and padded.exp_index.numel() > reach.exp_index.numel()
    assert padded.pose_weight.shape == (padded.pose_index.numel(), 1)
    for full, short in ((padded.exp_index, reach.exp_index), (padded.pose_index, reach.pose_index)):
        assert torch.equal(full[:short.numel()], short) and not full[short.numel():].any()
    for full, short in ((padded.exp_weight, reach.exp_weight), (padded.pose_weight, reach.pose_weight)):
        assert torch.equal(full[:short.numel()], short) and not full[short.numel():].any()
    exp, pose = torch.randn(2, 16, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64) * 0.2
    scale = torch.tensor([[0.125], [1.0]], dtype=torch.float64)
    inputs = (module.xyz, module.feature, module.scales, module.rotation, module.opacity, exp, pose, scale, pose)
    results = []
    for choice in (reach, padded):
        module.zero_grad(set_to_none=True)
        out = module(*inputs, choice)
        loss = sum((value * torch.linspace(0.5, 1.5, value.numel(), dtype=value.dtype).view_as(value)).sum()
                   for value in out.values())
        loss.backward()
        results.append((out, {name: p.grad.clone() for name, p in module.named_parameters()}))
    (exact, exact_grads), (pad, pad_grads) = results
    for key in exact:
        torch.testing.assert_close(pad[key], exact[key], rtol=1e-12, atol=1e-12)
    for name in exact_grads:
        torch.testing.assert_close(pad_grads[name], exact_grads[name], rtol=1e-10, atol=1e-12, msg=name)


def test_reach_padding_rows_change_only_past_the_slack():
    padding = ReachPadding()
    granule, slack = ReachPadding.GRANULE, ReachPadding.SLACK

    def rows(exp_count: int) -> int:
        return padding(exp_count, 1)[0]

    assert rows(5 * granule + 1) == 6 * granule
    assert rows(6 * granule) == 6 * granule  # grows only past the rows
    assert rows(6 * granule - slack) == 6 * granule  # shrinking within the slack keeps them
    assert rows(6 * granule - slack - 1) == 2 * granule  # then they follow the count down
    padding = ReachPadding()
    assert rows(0) == granule  # an empty branch still has rows (all padding)


@pytest.mark.cuda
def test_cuda_graphs_replay_the_eager_generate(mesh_head_checkpoint):
    """Training-mode generate() from CUDA graphs matches eager: outputs, gradients of parameters, pose and
    substituted attributes; after optimizer steps; after Gaussians cross the distance thresholds; with another batch
    size (a new capture); evaluation stays eager."""
    device = torch.device("cuda")
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # TF32 would differ between the padded and the exact shapes
    module, _ = module_from(mesh_head_checkpoint, small_config())
    module = module.to(device).train()
    eager = copy.deepcopy(module)
    module.use_cuda_graphs()
    optimizers = [torch.optim.SGD(m.parameters(), lr=1e-2) for m in (module, eager)]
    expected_captures = 1
    for step in range(5):
        batch = 1 if step == 4 else 2
        expected_captures += step == 4
        if step == 2:  # move Gaussians across the distance thresholds: other branch members, maybe other shapes
            rows, reach = list(module._reach_padding.rows), module.reach(module.xyz)
            for m in (module, eager):
                with torch.no_grad():
                    m.xyz.mul_(0.8)
            moved = module.reach(module.xyz)
            assert not torch.equal(moved.exp_weight[:64], reach.exp_weight[:64])
            expected_captures += list(module._reach_padding(len(moved.exp_index), len(moved.pose_index))) != rows
        results = []
        for m, optimizer in zip((module, eager), optimizers):
            optimizer.zero_grad(set_to_none=True)
            # From step 1 on, a substituted attribute (as compaction's straight-through ones are) where the first
            # capture saw the parameter itself.
            opacity = m.opacity + 0.5 if step > 0 else m.opacity
            if step > 0:
                opacity.retain_grad()
            out, loss, pose = generate_loss(m, {"opacity": opacity}, batch)
            loss.backward()
            grads = {name: p.grad.clone() for name, p in m.named_parameters()}
            results.append(({k: v.detach().clone() for k, v in out.items()}, grads, pose.grad.clone(),
                            opacity.grad.clone()))
            optimizer.step()
        # The graphed module's own parameters follow the eager ones (a static input sharing a parameter's storage
        # would have overwritten the opacity with the substituted +0.5 at step 1).
        for name, parameter in eager.named_parameters():
            torch.testing.assert_close(module.get_parameter(name), parameter, rtol=1e-3,
                                       atol=1e-4 * float(parameter.abs().max()),
                                       msg=lambda message: f"step {step} parameter {name}: {message}")
        (graphed, graphed_grads, graphed_pose, graphed_opacity), (ref, ref_grads, ref_pose, ref_opacity) = results
        for key in ref:
            torch.testing.assert_close(graphed[key], ref[key], rtol=1e-4, atol=1e-5, msg=f"step {step} {key}")
        # Gradients are sums over many Gaussians in another order (padded shapes): compared relative to their scale.
        for name, got, expected in [*((n, graphed_grads[n], ref_grads[n]) for n in ref_grads),
                                    ("pose", graphed_pose, ref_pose), ("opacity input", graphed_opacity, ref_opacity)]:
            torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()),
                                       msg=lambda message: f"step {step} grad {name}: {message}")
    assert module._graphed_forward.captures == expected_captures
    module.eval()
    with torch.no_grad():
        generate_loss(module)
    assert module._graphed_forward.captures == expected_captures
    torch.set_float32_matmul_precision(precision)


def tiny_training_config(subject: Path, out: Path, mesh_head: Path, *extra: str) -> TrainConfig:
    return small_config(f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=64",
                        "dataset.num_workers=0", "dataset.split_from_meta=false", "dataset.eval_camera_ids=[cam03]",
                        "dataset.eval_frame_ids=[0003]", f"load_meshhead_checkpoint={mesh_head}", "device=cpu",
                        "lr_net=2e-3", "render.backend=torch", f"recorder.checkpoint_path={out}/ck",
                        f"recorder.logdir={out}/log", f"recorder.result_path={out}/res", "recorder.log_freq=1",
                        "recorder.show_freq=4", "recorder.save_freq=4", *extra)


def test_tiny_training_run_learns_and_resumes(tiny_subject, mesh_head_checkpoint, tmp_path):
    torch.manual_seed(0)
    cfg = tiny_training_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=12")
    dataset = GaussianDataset(cfg.dataset)
    held_out = {"test_cameras": GaussianDataset(cfg.dataset, split="test_cameras", views="all", subject=dataset.subject)}
    trainer = GaussianHeadTrainer(cfg, torch.device("cpu"), dataset, held_out)
    fixed = trainer.to_device({key: value[None] for key, value in GaussianDataset(cfg.dataset, views="all")[0].items()})

    def fixed_loss() -> float:
        with torch.no_grad():
            losses, _ = stage2_losses(trainer.model, trainer.post_render, fixed, trainer.delta_poses,
                                      random.Random(0), "torch")
        assert all(torch.isfinite(value) for value in losses.values())
        return float(losses["rgb_lr"] + losses["rgb_hr"])

    before = fixed_loss()
    metrics = trainer.fit()
    assert fixed_loss() < before
    assert set(metrics) == {"test_cameras_psnr", "test_cameras_ssim"} and metrics["test_cameras_psnr"] > 5
    run = tmp_path / "ck" / cfg.recorder.name
    for kind in ("gaussianhead", "supres", "delta_poses", "gaussianhead_train_state"):
        assert (run / f"{kind}_latest").is_file(), kind
    assert (tmp_path / "res" / cfg.recorder.name / "000012.jpg").is_file()
    assert [r["iter"] for r in read_metrics(tmp_path / "log" / "metrics.jsonl") if "loss_rgb_hr" in r] == list(range(1, 13))

    resumed = GaussianHeadTrainer(tiny_training_config(tiny_subject, tmp_path, mesh_head_checkpoint,
                                                       "train.max_iters=14"), torch.device("cpu"), dataset, held_out)
    assert resumed.iteration == 12
    torch.testing.assert_close(resumed.model.xyz, trainer.model.xyz)
    torch.testing.assert_close(resumed.delta_poses, trainer.delta_poses)

    # A training state whose optimizer grouped the parameters otherwise (e.g. written by an older version) is a
    # one-line error that says how to proceed, not a traceback from inside torch.optim.
    state_path = run / "gaussianhead_train_state_latest"
    state = torch.load(state_path, weights_only=True)
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:-1]
    torch.save(state, state_path)
    with pytest.raises(CheckpointError, match="cannot resume from this gaussianhead training state.*train.resume=false"):
        GaussianHeadTrainer(tiny_training_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=14"),
                            torch.device("cpu"), dataset, held_out)


def test_checkpoint_errors(tiny_subject, mesh_head_checkpoint, tmp_path):
    dataset_cfg = tiny_training_config(tiny_subject, tmp_path, mesh_head_checkpoint)
    dataset = GaussianDataset(dataset_cfg.dataset)
    missing = tiny_training_config(tiny_subject, tmp_path / "a", tmp_path / "nope")
    with pytest.raises(CheckpointError, match="mesh-head checkpoint not found: .*train the mesh head first"):
        GaussianHeadTrainer(missing, torch.device("cpu"), dataset)
    poses = tmp_path / "poses.pt"
    torch.save(torch.zeros(3, 6), poses)
    wrong = tiny_training_config(tiny_subject, tmp_path / "b", mesh_head_checkpoint, f"load_delta_poses_checkpoint={poses}")
    with pytest.raises(CheckpointError, match=r"delta poses must be a \[4, 6\] tensor"):
        GaussianHeadTrainer(wrong, torch.device("cpu"), dataset)


def test_entry_script_one_line_errors(tiny_subject, tmp_path):
    gha = ROOT / "config" / "train_gaussianhead_N031.yaml"
    result = subprocess.run([sys.executable, "train_gaussianhead.py", "--config", str(gha),
                             f"dataset.dataroot={tiny_subject}", "dataset.camera_ids=[]", "device=cpu"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "exp_coeff has 16 coefficients but gaussianheadmodule.exp_coeffs_dim expects 64" in result.stderr


def test_compaction_writes_a_loadable_compressed_avatar_and_resumes(tiny_subject, mesh_head_checkpoint, tmp_path):
    from cgha.avatar.inference import expand_compact_avatar, load_model
    from cgha.compact.avatar_file import load_compact_avatar
    from cgha.compact.morton import morton_order
    from cgha.recorder.run_files import COMPACT_FILE

    torch.manual_seed(0)
    extra = ("compact.enable=true", "compact.start_iter=4", "compact.codebook_size=16",
             "compact.codebook_sizes.feature=32", "compact.assign_every=3")
    cfg = tiny_training_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=10", *extra)
    dataset = GaussianDataset(cfg.dataset)
    trainer = GaussianHeadTrainer(cfg, torch.device("cpu"), dataset)
    trainer.fit()
    run = tmp_path / "ck" / cfg.recorder.name
    report = json.loads((run / "compact_report.json").read_text())
    assert report["file"] == COMPACT_FILE and report["compact_bytes"] == (run / COMPACT_FILE).stat().st_size
    assert report["ratio"] > 2 and report["codebook_sizes"] == {"scale_rot": 16, "feature": 32}
    assert report["raw_bytes"] == (run / "gaussianhead_latest").stat().st_size + (run / "supres_latest").stat().st_size

    # The compressed avatar reproduces the quantised model (up to fp16 storage and 8-bit opacity), its Gaussians
    # stored in Morton order (cgha/compact/morton.py).
    module, supres, metadata = load_compact_avatar(run / COMPACT_FILE, torch.device("cpu"))
    assert metadata["num_gaussians"] == trainer.model.num_gaussians
    order = torch.from_numpy(morton_order(trainer.model.xyz.detach().numpy(), cfg.compact.store.position_bits))
    exp, pose, scale = torch.zeros(1, 16), torch.zeros(1, 6), torch.full((1, 1), 0.125)
    with torch.no_grad():
        expected = trainer.model.generate(exp, pose, scale, attributes=trainer.quantized_attributes())
        loaded = module.generate(exp, pose, scale)
    for key, tolerance in (("means", 1e-3), ("scales", 2e-3), ("quats", 2e-3), ("opacities", 3e-3), ("features", 2e-2)):
        assert (getattr(loaded, key) - getattr(expected, key)[:, order]).abs().max() < tolerance, key
    assert isinstance(load_model(cfg, run / COMPACT_FILE, torch.device("cpu")), GaussianHeadModule)
    # Expanded back to raw GHA-named checkpoints, it loads like any raw checkpoint and decodes the same attributes.
    written = expand_compact_avatar(run / COMPACT_FILE, tmp_path / "expanded")
    raw = load_model(cfg, written["gaussianhead"], torch.device("cpu"))
    torch.testing.assert_close(raw.state_dict(), module.state_dict())

    # Resume mid-compaction: codebooks and indices come back exactly.
    resumed = GaussianHeadTrainer(tiny_training_config(tiny_subject, tmp_path, mesh_head_checkpoint,
                                                       "train.max_iters=12", *extra), torch.device("cpu"), dataset)
    assert resumed.iteration == 10 and resumed.compaction.initialised
    for group in ("scale_rot", "feature"):
        torch.testing.assert_close(resumed.compaction.quantizer.quantizers[group].codebook,
                                   trainer.compaction.quantizer.quantizers[group].codebook)
        assert torch.equal(resumed.compaction.quantizer.quantizers[group].index,
                           trainer.compaction.quantizer.quantizers[group].index)


def test_residual_prior_and_zoom_range_reach_the_training_step(tiny_subject, mesh_head_checkpoint, tmp_path):
    """`train.loss_weights.sr_residual` adds its term to the step's losses (absent at weight 0, GHA's default), and
    `train.crop_scale_range` sets the zoom of the crop the super-resolution net sees."""
    dataset_batch = None
    for extra, expect_prior in (((), False), (("train.loss_weights.sr_residual=0.1",
                                               "train.crop_scale_range=[0.5,0.5]"), True)):
        cfg = tiny_training_config(tiny_subject, tmp_path / str(expect_prior), mesh_head_checkpoint,
                                   "train.max_iters=1", *extra)
        dataset = GaussianDataset(cfg.dataset)
        trainer = GaussianHeadTrainer(cfg, torch.device("cpu"), dataset, {})
        if dataset_batch is None:
            dataset_batch = {key: value[None] for key, value in GaussianDataset(cfg.dataset, views="all")[0].items()}
        losses, visuals = trainer.compute_losses(trainer.to_device(dataset_batch))
        assert ("sr_residual" in losses) == expect_prior
        if expect_prior:
            assert float(losses["sr_residual"].detach()) > 0
            # Zoomed out by 0.5: a white frame of at least a quarter of the side on two sides of the target crop.
            target = visuals["target"][0]
            side = target.shape[-1]
            white_rows = int((target.min(0).values.min(1).values > 0.999).sum())
            assert white_rows >= side // 2 - 1
