"""The mesh head's expression prior (cgha/trainer/expression_prior.py): it teaches each expression coefficient the
face model's motion of the subject's face, touches nothing but the expression MLP, and refuses subjects of another
expression basis."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cgha.config import TrainConfig, load_config
from cgha.dataset import MeshDataset
from cgha.errors import ConfigError, DataError
from cgha.module.mesh_head import MeshHeadModule, blend_weights, pretrain_sphere
from cgha.synthetic.expression import EXPRESSION_NAMES
from cgha.trainer.expression_prior import PriorTargets, SubjectExpressionPrior, fit_expression_prior

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "train_meshhead_synthetic_demo.yaml"
CPU = torch.device("cpu")
SMALL_FACE_MODEL = (6, 5)


pytestmark = pytest.mark.usefixtures("small_face_model_cache")


def dataset_of(subject: Path) -> MeshDataset:
    cfg = load_config(TrainConfig, CONFIG, [f"dataset.dataroot={subject}", "dataset.original_resolution=64",
                                            "dataset.resolution=32", "dataset.num_workers=0",
                                            "dataset.num_sample_view=2"], stage="meshhead")
    return MeshDataset(cfg.dataset)


def motion_error(module: MeshHeadModule, prior: SubjectExpressionPrior, code: torch.Tensor) -> float:
    """Mean distance between the mesh head's and the face model's motion of the reached vertices for one code."""
    cfg = module.cfg
    with torch.no_grad():
        weights = blend_weights(prior.neutral, module.landmarks_3d_neutral, cfg.dist_threshold_near,
                                cfg.dist_threshold_far)
        reached = torch.nonzero(weights[:, 0] > 0).flatten()
        points = prior.neutral[reached][None]
        exp_input = torch.cat([module.pos_embedding(points), code[None, None].expand(1, points.shape[1], -1)], -1)
        predicted = module.exp_deform_mlp(exp_input) * weights[reached][None] * cfg.deform_scale
        truth = prior.displaced(code[None], reached[None]) - points
    return float((predicted - truth).norm(dim=-1).mean())


def single(name: str) -> torch.Tensor:
    code = torch.zeros(len(EXPRESSION_NAMES))
    code[EXPRESSION_NAMES.index(name)] = 1.0
    return code


def test_prior_teaches_each_coefficient_alone_and_touches_only_the_expression_mlp(tiny_subject):
    dataset = dataset_of(tiny_subject)
    cfg = load_config(TrainConfig, CONFIG, ["meshheadmodule.tet_resolution=16"], stage="meshhead")
    torch.manual_seed(0)
    module = MeshHeadModule(cfg.meshheadmodule, dataset.init_landmarks_3d_neutral)
    pretrain_sphere(module, 20, CPU, batch=512)
    prior = SubjectExpressionPrior.build(dataset.subject, dataset.frames, SMALL_FACE_MODEL, CPU)
    # Codes of one coefficient at full strength: none of the tiny subject's 4 frames shows them alone.
    codes = {name: single(name) for name in ("jaw_open", "smile_left", "brow_up_left")}
    before = {name: motion_error(module, prior, code) for name, code in codes.items()}
    others = {name: value.clone() for name, value in module.state_dict().items() if not name.startswith("exp_deform")}
    generator = torch.Generator().manual_seed(0)
    targets = PriorTargets.of(prior, module.landmarks_3d_neutral, cfg.meshheadmodule.dist_threshold_near,
                              cfg.meshheadmodule.dist_threshold_far, generator)
    fit_expression_prior(module, targets, steps=300, lr=3e-3, generator=generator)
    after = {name: motion_error(module, prior, code) for name, code in codes.items()}
    for name in codes:
        assert after[name] < 0.5 * before[name], (name, before[name], after[name])
    for name, value in module.state_dict().items():
        if not name.startswith("exp_deform"):
            torch.testing.assert_close(value, others[name])


def test_prior_refuses_a_subject_of_another_expression_basis(broken):
    meta_path = broken / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["expression_basis"] = {"model": "flame-2020", "names": [f"e{i}" for i in range(len(EXPRESSION_NAMES))]}
    meta_path.write_text(json.dumps(meta))
    dataset = dataset_of(broken)
    with pytest.raises(DataError, match="flame-2020.*deform_prior_iters=0"):
        SubjectExpressionPrior.build(dataset.subject, dataset.frames, SMALL_FACE_MODEL, CPU)


def test_prior_face_model_build_is_checked():
    with pytest.raises(ConfigError, match="deform_prior_face_model"):
        load_config(TrainConfig, CONFIG, ["train.deform_prior_face_model=[6,6]"], stage="meshhead")


def mesh_config(subject: Path, out: Path, *extra: str) -> TrainConfig:
    overrides = [f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=32",
                 "dataset.num_sample_view=2", "dataset.num_workers=0", "dataset.split_from_meta=false",
                 "dataset.eval_camera_ids=[cam03]", "meshheadmodule.tet_resolution=16",
                 "train.pretrain_sphere_iters=20", "train.deform_prior_iters=50",
                 "train.deform_prior_face_model=[6,5]", "train.loss_weights.expression_prior=100", "device=cpu",
                 f"recorder.checkpoint_path={out}/ck", f"recorder.logdir={out}/log", f"recorder.result_path={out}/res",
                 "recorder.log_freq=1", "recorder.show_freq=100", "recorder.save_freq=2", *extra]
    return load_config(TrainConfig, CONFIG, overrides, stage="meshhead")


def test_mesh_head_with_the_prior_logs_its_loss_and_resumes_exactly(tiny_subject, tmp_path):
    from cgha.recorder.metrics_log import read_metrics
    from cgha.trainer.mesh_head_trainer import MeshHeadTrainer

    def train(out: Path, iterations: int) -> MeshHeadTrainer:
        cfg = mesh_config(tiny_subject, out, f"train.max_iters={iterations}")
        trainer = MeshHeadTrainer(cfg, CPU, MeshDataset(cfg.dataset))
        trainer.fit()
        return trainer

    straight = train(tmp_path / "straight", 4)
    records = read_metrics(tmp_path / "straight" / "log" / "metrics.jsonl")
    losses = [record["loss_expression_prior"] for record in records if "loss_expression_prior" in record]
    assert len(losses) == 4 and all(0.0 < value < 1e-2 for value in losses), losses
    train(tmp_path / "split", 2)
    resumed = train(tmp_path / "split", 4)
    assert resumed.iteration == 4
    for name, value in straight.module.state_dict().items():
        torch.testing.assert_close(resumed.module.state_dict()[name], value, msg=name)
