"""Point insertion and deletion (cgha/points): rows of the model, the optimiser state and the quantiser indices stay
in step; the schedule's choices; sphere initialisation; resume after insertion is exact; a tiny monocular run."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cgha.compact.config import CompactSection
from cgha.compact.quantizer import GroupSpec
from cgha.compact.strategy import CompactionStrategy
from cgha.config import TrainConfig, load_config
from cgha.dataset import GaussianDataset
from cgha.errors import ConfigError
from cgha.module.gaussian_head import GaussianHeadModule
from cgha.points import PointsSection, PointStrategy, edit_gaussians, sphere_points
from cgha.trainer.gaussian_head_trainer import GaussianHeadTrainer
from cgha.utils.device import resolve_device

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml"
GAUSSIAN_PARAMETERS = ("xyz", "feature", "scales", "rotation", "opacity")


def small_module(count: int = 40, seed: int = 0) -> GaussianHeadModule:
    cfg = load_config(TrainConfig, CONFIG, ["points.init=sphere"], stage="gaussianhead")
    generator = torch.Generator().manual_seed(seed)
    xyz = sphere_points(count, 1.0, generator)
    landmarks = torch.randn(68, 3, generator=generator) * 0.3 + torch.tensor([0.0, 0.0, 0.9])
    torch.manual_seed(seed)
    return GaussianHeadModule.from_point_cloud(cfg, xyz, landmarks)


def one_step(module: GaussianHeadModule, optimizer: torch.optim.Optimizer, attributes=None) -> None:
    optimizer.zero_grad(set_to_none=True)
    gaussians = module.generate(torch.randn(2, 16), torch.randn(2, 6) * 0.1, torch.ones(2, 1),
                                attributes=attributes)
    loss = sum(value.square().mean() for value in (gaussians.features, gaussians.means, gaussians.opacities,
                                                  gaussians.scales, gaussians.quats[..., 1:]))
    loss.backward()
    optimizer.step()


def test_sphere_points_lie_on_the_sphere_and_cover_it():
    points = sphere_points(4000, 0.7, torch.Generator().manual_seed(1))
    torch.testing.assert_close(points.norm(dim=1), torch.full((4000,), 0.7))
    assert points.mean(0).abs().max() < 0.03  # uniform: no direction favoured
    assert (points[:, 2] > 0).float().mean().sub(0.5).abs() < 0.03


def test_edit_keeps_parameters_adam_moments_and_code_indices_in_step():
    module = small_module()
    optimizer = torch.optim.Adam([{"params": [module.xyz, module.feature], "lr": 1e-2},
                                  {"params": [module.scales, module.rotation, module.opacity], "lr": 1e-2},
                                  {"params": list(module.exp_color_mlp.parameters()), "lr": 1e-3}])
    compact = CompactSection(enable=True, codebook_size=8, groups=["scale_rot", "feature"])
    compaction = CompactionStrategy(compact, GroupSpec.of(module), 0, 0, torch.device("cpu"))
    compaction.before_step(module, 0)
    one_step(module, optimizer, compaction.attributes(module))
    old = {name: getattr(module, name).detach().clone() for name in GAUSSIAN_PARAMETERS}
    old_state = {name: {key: value.clone() for key, value in optimizer.state[getattr(module, name)].items()}
                 for name in GAUSSIAN_PARAMETERS}
    old_index = {group: q.index.clone() for group, q in compaction.quantizer.quantizers.items()}

    rows = torch.tensor([0, 2, 3, 5, 7, 2, 2, 7])  # 1, 4, 6 and 8.. deleted; 2 and 7 duplicated
    new_positions = torch.randn(3, 3)
    edit_gaussians(module, rows, 5, new_positions, optimizer, compaction)

    assert module.num_gaussians == 8
    for name in GAUSSIAN_PARAMETERS:
        parameter = getattr(module, name)
        expected = old[name][rows]
        if name == "xyz":
            expected[5:] = new_positions
        torch.testing.assert_close(parameter.detach(), expected)
        assert any(parameter is p for group in optimizer.param_groups for p in group["params"])
        state = optimizer.state[parameter]
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(state[key][:5], old_state[name][key][rows[:5]])
            assert not state[key][5:].any(), (name, key)  # inserted rows start from zero moments
        torch.testing.assert_close(state["step"], old_state[name]["step"])
    for group, quantizer in compaction.quantizer.quantizers.items():
        assert torch.equal(quantizer.index, old_index[group][rows]), group
    one_step(module, optimizer, compaction.attributes(module))  # everything indexed by Gaussian agrees on 8 rows
    compaction.after_step(module, 1)


def test_edit_deletes_transparent_and_escaped_points_then_grows_near_parents():
    module = small_module(count=100)
    with torch.no_grad():
        module.opacity[:10] = -20.0  # transparent
        module.xyz[10:15] *= 5.0  # far outside the head's region
    cfg = PointsSection(every=1, growth=1.5, max_points=1000, prune_opacity=0.005, region_radius=2.5,
                        parents="uniform", jitter=1.0)
    counts = PointStrategy(cfg, seed=3).edit(module, None, None, iteration=1)
    assert counts == {"pruned_opacity": 10, "pruned_region": 5, "inserted": math.ceil(85 * 1.5) - 85,
                      "num_gaussians": math.ceil(85 * 1.5)}
    assert torch.sigmoid(module.opacity).min() >= 0.005 and module.xyz.norm(dim=1).max() <= 2.5 + 0.5
    kept = module.xyz[:85].detach()
    new = module.xyz[85:].detach()
    # Each new point lies within half a spacing (per axis) of some kept point: the nearest is close.
    nearest = torch.cdist(new, kept).min(dim=1).values
    assert nearest.max() < 0.5 * math.sqrt(3) * 0.5

    capped = PointStrategy(PointsSection(every=1, growth=4.0, max_points=200), seed=0).edit(module, None, None, 1)
    assert capped["num_gaussians"] == 200 and module.num_gaussians == 200


def test_edits_are_deterministic_and_gradient_parents_follow_the_gradient():
    def edited(parents: str, seed: int) -> GaussianHeadModule:
        module = small_module(count=60)
        with torch.no_grad():
            module.feature[:, 0] = torch.arange(60.0)  # a tag: inserted points copy their parent's feature
        strategy = PointStrategy(PointsSection(every=1, growth=2.0, parents=parents), seed=seed)
        module.xyz.grad = torch.zeros_like(module.xyz)
        module.xyz.grad[:5] = 1.0  # only the first five points' positions are pulled on
        strategy.accumulate(module)
        strategy.edit(module, None, None, iteration=7)
        return module

    torch.testing.assert_close(edited("gradient", 0).xyz, edited("gradient", 0).xyz)
    assert not torch.equal(edited("gradient", 0).xyz, edited("gradient", 1).xyz)
    assert (edited("gradient", 0).feature[60:, 0] < 5).all()
    assert (edited("uniform", 0).feature[60:, 0] >= 5).any()


def test_points_config_errors():
    with pytest.raises(ConfigError, match="'points.sphere_count' \\(500\\) is larger than 'points.max_points'"):
        load_config(TrainConfig, CONFIG, ["points.init=sphere", "points.sphere_count=500", "points.max_points=100"],
                    stage="gaussianhead")
    with pytest.raises(ConfigError, match="'points.stop_iter' \\(5\\) is before the first edit"):
        load_config(TrainConfig, CONFIG, ["points.every=10", "points.stop_iter=5"], stage="gaussianhead")
    with pytest.raises(ConfigError, match="points.init"):
        load_config(TrainConfig, CONFIG, ["points.init=cube"], stage="gaussianhead")


@pytest.fixture(scope="module")
def tiny_monocular_subject(tmp_path_factory) -> Path:
    from cgha.synthetic import generate_monocular_subject

    out = tmp_path_factory.mktemp("subjects") / "mono0"
    return generate_monocular_subject(out, identity=0, frames=8, resolution=64, seed=0, lowres=32, progress=False)


def monocular_config(subject: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, CONFIG, [
        f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=64",
        "dataset.num_workers=0", "device=cpu", "render.backend=torch", "train.epochs=0",
        f"recorder.checkpoint_path={out}/ck", f"recorder.logdir={out}/log", f"recorder.result_path={out}/res",
        "recorder.log_freq=1", "recorder.save_freq=4", "recorder.show_freq=100", "points.init=sphere",
        "points.sphere_count=48", "points.every=4", "points.prune_opacity=0.2", "compact.start_iter=6",
        "compact.codebook_size=16", "compact.assign_every=3", *extra], stage="gaussianhead")


def train(cfg: TrainConfig):
    dataset = GaussianDataset(cfg.dataset)
    held_out = {"test_frames": GaussianDataset(cfg.dataset, split="test_frames", views="all",
                                               subject=dataset.subject)}
    trainer = GaussianHeadTrainer(cfg, resolve_device(cfg.device), dataset, held_out)
    return trainer, trainer.fit()


def test_tiny_monocular_run_grows_compacts_and_resumes_exactly(tiny_monocular_subject, tmp_path):
    from cgha.recorder.metrics_log import read_metrics

    torch.manual_seed(0)
    whole, metrics = train(monocular_config(tiny_monocular_subject, tmp_path / "whole", "train.max_iters=11"))
    assert set(metrics) == {"test_frames_psnr", "test_frames_ssim"} and metrics["test_frames_psnr"] > 5
    counts = {r["iter"]: r["num_gaussians"] for r in read_metrics(tmp_path / "whole" / "log" / "metrics.jsonl")
              if "num_gaussians" in r}
    assert counts[1] == 48 and counts[4] > 48 and counts[8] > counts[4] and counts[11] == counts[8]
    assert (tmp_path / "whole" / "ck" / whole.cfg.recorder.name / "gaussianhead_compact.cgha").is_file()

    # Interrupted after the edit of iteration 8 (checkpoint at 8), resumed to 11: identical to the whole run.
    torch.manual_seed(0)
    first, _ = train(monocular_config(tiny_monocular_subject, tmp_path / "split", "train.max_iters=8"))
    resumed, _ = train(monocular_config(tiny_monocular_subject, tmp_path / "split", "train.max_iters=11"))
    assert resumed.model.num_gaussians == whole.model.num_gaussians
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0, msg=name)
    for group, quantizer in whole.compaction.quantizer.quantizers.items():
        assert torch.equal(resumed.compaction.quantizer.quantizers[group].index, quantizer.index)


@pytest.mark.cuda
def test_sphere_start_trains_on_the_gpu(tiny_monocular_subject, tmp_path):
    cfg = monocular_config(tiny_monocular_subject, tmp_path, "train.max_iters=9", "device=cuda",
                           "render.backend=auto")
    trainer, metrics = train(cfg)
    assert trainer.model.xyz.is_cuda and trainer.model.num_gaussians > 48 and metrics["test_frames_psnr"] > 5


def test_a_start_at_max_points_is_warned_that_edits_never_insert(tiny_monocular_subject, tmp_path, caplog):
    strategy = PointStrategy(PointsSection(every=300, max_points=100_000), seed=0)
    assert strategy.start_warning(99_999) is None
    assert "108482 Gaussians, not below points.max_points (100000)" in strategy.start_warning(108_482)

    caplog.set_level("WARNING", logger="cgha.trainer.gaussian_head_trainer")
    trainer, _ = train(monocular_config(tiny_monocular_subject, tmp_path, "points.max_points=48", "train.max_iters=5"))
    assert "48 Gaussians, not below points.max_points (48)" in caplog.text and "never insert" in caplog.text
    assert trainer.model.num_gaussians <= 48  # the edit at iteration 4 ran and inserted nothing
