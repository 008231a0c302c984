"""The mesh head's expression prior (cgha/trainer/expression_prior.py): it teaches each expression coefficient the
face model's motion of the subject's face, touches nothing but the expression MLP, and refuses subjects of another
expression basis."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from cgha.config import TrainConfig, load_config
from cgha.dataset import MeshDataset
from cgha.errors import ConfigError, DataError
from cgha.module.mesh_head import MeshHeadModule, blend_weights, pretrain_sphere
from cgha.synthetic.expression import EXPRESSION_NAMES
from cgha.trainer.expression_prior import SubjectExpressionPrior, fit_expression_prior

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "train_meshhead_synthetic_demo.yaml"
CPU = torch.device("cpu")
SMALL_FACE_MODEL = (6, 5)


@pytest.fixture(scope="module", autouse=True)
def face_model_cache(tmp_path_factory):
    """A small face model cached in a temporary folder for this module."""
    path = tmp_path_factory.getbasetemp() / "face_model_cache"
    path.mkdir(exist_ok=True)
    previous = os.environ.get("CGHA_CACHE_DIR")
    os.environ["CGHA_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("CGHA_CACHE_DIR")
    else:
        os.environ["CGHA_CACHE_DIR"] = previous


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
    fit_expression_prior(module, prior, steps=150, lr=3e-3, generator=torch.Generator().manual_seed(0))
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
