"""CPU determinism: gradients are summed in a fixed order, items do not depend on loader workers, and a run stopped
and resumed reproduces the uninterrupted run bit for bit (logged losses and final weights), for both stages."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cgha.config import TrainConfig, load_config
from cgha.dataset import GaussianDataset, MeshDataset
from cgha.module.mesh_head import MeshHeadModule, pretrain_sphere
from cgha.recorder.checkpoint import save_atomic
from cgha.recorder.metrics_log import read_metrics
from cgha.trainer.gaussian_head_trainer import GaussianHeadTrainer
from cgha.trainer.mesh_head_trainer import MeshHeadTrainer

ROOT = Path(__file__).resolve().parents[1]
MESH_CONFIG = ROOT / "config" / "train_meshhead_synthetic_demo.yaml"
GAUSSIAN_CONFIG = ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml"
CPU = torch.device("cpu")
TOTAL_ITERS = 10
COMPACTION_START = 4  # Gaussian head: stops at 5 and 7 fall after codebook compaction has started


def recorder_overrides(out: Path) -> List[str]:
    return [f"recorder.checkpoint_path={out}/ck", f"recorder.logdir={out}/log", f"recorder.result_path={out}/res",
            "recorder.log_freq=1", "recorder.show_freq=1000", "recorder.save_freq=1000", "train.epochs=0",
            "train.eval_every=0", "device=cpu"]


def mesh_config(subject: Path, out: Path, *extra: str) -> TrainConfig:
    overrides = [f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=32",
                 "dataset.num_sample_view=2", "dataset.num_workers=0", "dataset.split_from_meta=false",
                 "dataset.eval_camera_ids=[cam03]", "meshheadmodule.tet_resolution=24",
                 "train.pretrain_sphere_iters=150", "train.deform_prior_iters=30", "lr_net=3e-3", *recorder_overrides(out), *extra]
    return load_config(TrainConfig, MESH_CONFIG, overrides, stage="meshhead")


def gaussian_config(subject: Path, out: Path, mesh_head: Path, *extra: str) -> TrainConfig:
    overrides = [f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=64",
                 "dataset.num_workers=0", "dataset.split_from_meta=false", "dataset.eval_camera_ids=[cam03]",
                 "meshheadmodule.tet_resolution=20", "gaussianheadmodule.num_add_mouth_points=50",
                 f"load_meshhead_checkpoint={mesh_head}", "lr_net=2e-3", "render.backend=torch",
                 "train.cuda_graphs=false", "compact.enable=true", f"compact.start_iter={COMPACTION_START}",
                 "compact.codebook_size=16", "compact.assign_every=3", *recorder_overrides(out), *extra]
    return load_config(TrainConfig, GAUSSIAN_CONFIG, overrides, stage="gaussianhead")


@pytest.fixture(scope="module")
def mesh_head_checkpoint(tmp_path_factory) -> Path:
    """A sphere-initialised mesh head (landmarks on its front) for the Gaussian head to start from."""
    cfg = load_config(TrainConfig, GAUSSIAN_CONFIG, ["meshheadmodule.tet_resolution=20"], stage="gaussianhead")
    landmarks = torch.randn(80, 3, generator=torch.Generator().manual_seed(0)) * 0.25 + torch.tensor([0.0, 0.0, 0.9])
    torch.manual_seed(0)
    mesh_head = MeshHeadModule(cfg.meshheadmodule, landmarks)
    pretrain_sphere(mesh_head, 150, CPU, batch=2048)
    path = tmp_path_factory.mktemp("meshhead") / "meshhead_latest"
    save_atomic(mesh_head.state_dict(), path)
    return path


def train_mesh_head(cfg: TrainConfig) -> Dict[str, torch.Tensor]:
    trainer = MeshHeadTrainer(cfg, CPU, MeshDataset(cfg.dataset))
    trainer.fit()
    return {f"module.{k}": v for k, v in trainer.module.state_dict().items()}


def train_gaussian_head(cfg: TrainConfig) -> Dict[str, torch.Tensor]:
    trainer = GaussianHeadTrainer(cfg, CPU, GaussianDataset(cfg.dataset))
    trainer.fit()
    states = {f"model.{k}": v for k, v in trainer.model.state_dict().items()}
    states.update({f"post_render.{k}": v for k, v in trainer.post_render.state_dict().items()})
    states.update({f"quantizer.{k}": v for k, v in (trainer.compaction.state_dict() or {}).items()
                   if isinstance(v, torch.Tensor)})
    states["delta_poses"] = trainer.delta_poses.detach()
    return states


def logged_losses(out: Path) -> Dict[int, Dict[str, float]]:
    """Every logged loss by iteration (a resumed run's records follow the interrupted run's)."""
    losses: Dict[int, Dict[str, float]] = {}
    for record in read_metrics(out / "log" / "metrics.jsonl"):
        values = {k: v for k, v in record.items() if k.startswith("loss")}
        if values:
            losses.setdefault(record["iter"], {}).update(values)
    return losses


def assert_identical(expected: Tuple[dict, dict], actual: Tuple[dict, dict]) -> None:
    expected_losses, expected_weights = expected
    actual_losses, actual_weights = actual
    assert sorted(actual_losses) == list(range(1, TOTAL_ITERS + 1))
    for iteration, values in expected_losses.items():
        assert actual_losses[iteration] == values, f"iteration {iteration}"
    assert expected_weights.keys() == actual_weights.keys()
    for key, value in expected_weights.items():
        assert torch.equal(actual_weights[key], value), key


# ------------------------------------------------------------------------------ gradients in a fixed order
class UnorderedAccumulation(TorchDispatchMode):
    """Records the float `index_put_(accumulate=True)` calls that add several values into one element: the CPU runs
    them with atomic adds from several threads (from 32768 elements on), in an order that varies between runs."""

    def __init__(self):
        super().__init__()
        self.calls: List[Tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.__name__.split(".")[0] in ("index_put", "index_put_", "_index_put_impl_"):
            target, indices = args[0], args[1]
            accumulate = args[3] if len(args) > 3 else kwargs.get("accumulate", False)
            if accumulate and target.is_floating_point() and self._repeats(indices):
                self.calls.append(tuple(target.shape))
        return func(*args, **kwargs)

    @staticmethod
    def _repeats(indices) -> bool:
        used = [index for index in indices if index is not None]
        if not used or any(index.dtype == torch.bool for index in used):
            return False  # a mask selects each element at most once
        rows = torch.stack([index.reshape(-1) for index in torch.broadcast_tensors(*used)], dim=1)
        return rows.unique(dim=0).shape[0] < rows.shape[0]


def unordered_accumulations(trainer, batch) -> List[Tuple[int, ...]]:
    recorder = UnorderedAccumulation()
    with recorder:
        trainer.training_step(trainer.to_device(batch))
    return recorder.calls


def test_mesh_head_step_sums_gradients_in_a_fixed_order(tiny_subject, tmp_path):
    # Before: marching tets' `features[lo]` (and the Laplacian's `verts[:, faces]`) backpropagated through such
    # an index_put_; two CPU runs of one config drifted apart (seen at iteration 90 of the demo).
    cfg = mesh_config(tiny_subject, tmp_path, "train.max_iters=1")
    trainer = MeshHeadTrainer(cfg, CPU, MeshDataset(cfg.dataset))
    assert unordered_accumulations(trainer, next(iter(trainer.loader))) == []


def test_gaussian_head_step_sums_gradients_in_a_fixed_order(tiny_subject, mesh_head_checkpoint, tmp_path):
    cfg = gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint, "compact.start_iter=0",
                          "train.max_iters=1")
    trainer = GaussianHeadTrainer(cfg, CPU, GaussianDataset(cfg.dataset))
    assert unordered_accumulations(trainer, next(iter(trainer.loader))) == []


# ----------------------------------------------------------------------------------- workers and resume
def test_mesh_head_items_do_not_depend_on_loader_workers(tiny_subject, tmp_path):
    # Before: views were drawn from each worker's torch generator, so num_workers=0 and 2 trained on other views.
    runs = []
    for workers in (0, 2):
        out = tmp_path / f"workers{workers}"
        cfg = mesh_config(tiny_subject, out, "train.max_iters=6", "train.pretrain_sphere_iters=20",
                          f"dataset.num_workers={workers}")
        weights = train_mesh_head(cfg)
        runs.append((logged_losses(out), weights))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        assert torch.equal(runs[1][1][key], value), key


@pytest.fixture(scope="module")
def uninterrupted_mesh_head(tiny_subject, tmp_path_factory):
    out = tmp_path_factory.mktemp("mesh_straight")
    weights = train_mesh_head(mesh_config(tiny_subject, out, f"train.max_iters={TOTAL_ITERS}"))
    return logged_losses(out), weights


@pytest.mark.parametrize("stop", [3, 7])
def test_mesh_head_resume_reproduces_the_uninterrupted_run(tiny_subject, tmp_path, uninterrupted_mesh_head, stop):
    train_mesh_head(mesh_config(tiny_subject, tmp_path, f"train.max_iters={stop}"))
    weights = train_mesh_head(mesh_config(tiny_subject, tmp_path, f"train.max_iters={TOTAL_ITERS}"))
    assert_identical(uninterrupted_mesh_head, (logged_losses(tmp_path), weights))


@pytest.fixture(scope="module")
def uninterrupted_gaussian_head(tiny_subject, mesh_head_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("gaussian_straight")
    weights = train_gaussian_head(gaussian_config(tiny_subject, out, mesh_head_checkpoint,
                                                  f"train.max_iters={TOTAL_ITERS}"))
    return logged_losses(out), weights


@pytest.mark.parametrize("stop", [3, COMPACTION_START + 1, 7])
def test_gaussian_head_resume_reproduces_the_uninterrupted_run(tiny_subject, mesh_head_checkpoint, tmp_path,
                                                               uninterrupted_gaussian_head, stop):
    # Before: the crop augmentation's generator restarted from train.seed and torch's was never restored.
    train_gaussian_head(gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint, f"train.max_iters={stop}"))
    weights = train_gaussian_head(gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint,
                                                  f"train.max_iters={TOTAL_ITERS}"))
    assert_identical(uninterrupted_gaussian_head, (logged_losses(tmp_path), weights))


def test_training_state_holds_every_generator_and_loads_without_pickle(tiny_subject, mesh_head_checkpoint, tmp_path):
    cfg = gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=2")
    trainer = GaussianHeadTrainer(cfg, CPU, GaussianDataset(cfg.dataset))
    trainer.fit()
    state = torch.load(trainer.recorder.checkpoint(trainer.state_kind), weights_only=True)
    assert state["iter"] == 2 and state["torch_rng"].dtype == torch.uint8
    assert state["augmentation_rng"]["internal"] == list(trainer.rng.getstate()[1])
