"""The avatar-model interface: a second, toy model (static coloured Gaussians on a sphere, no post-render network)
defined here, outside the library, goes through training with compaction, evaluation and reenactment without any
change to the trainer, evaluation or reenactment code; and the package's layering rules hold."""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgha.apps.evaluation import evaluate_avatar
from cgha.apps.reenactment import Reenactment
from cgha.avatar import AvatarModel, Gaussians, model_class, register_model
from cgha.compact.avatar_file import load_compact_avatar
from cgha.config import ReenactConfig, TrainConfig, load_config
from cgha.errors import ConfigError
from cgha.options import option
from cgha.recorder.run_files import RunFiles
from cgha.trainer.stages import train_gaussian_head
from cgha.utils.rotations import axis_angle_to_quaternion, quaternion_product_matrix, unit_quaternion_to_matrix

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@dataclass
class StaticGaussiansConfig:
    num_gaussians: int = option(400, "Gaussians on the initial sphere", min=4)
    radius: float = option(1.0, "sphere radius in canonical head space", min=0.0, min_exclusive=True)
    exp_coeffs_dim: int = option(16, "expression coefficients accepted (and ignored: the toy is static)", min=1)


@register_model
class StaticGaussians(AvatarModel):
    """Rigid coloured Gaussians that follow the head pose and ignore the expression."""

    kind = "test_static"
    Config = StaticGaussiansConfig
    checkpoint_kind = "static"
    compact_groups = {"color": ("color",), "shape": ("scales", "rotation"), "scales": ("scales",)}
    default_compact_groups = ("color", "shape")
    unit_norm_attributes = ("rotation",)

    def __init__(self, cfg: StaticGaussiansConfig, xyz: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        count = xyz.shape[0]
        self.xyz = nn.Parameter(xyz.clone())
        self.color = nn.Parameter(torch.zeros(count, 3))
        self.scales = nn.Parameter(torch.full((count, 3), -2.5))
        self.rotation = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(count, 1))
        self.opacity = nn.Parameter(torch.zeros(count, 1))

    @classmethod
    def initialise(cls, cfg: TrainConfig, device: torch.device) -> "StaticGaussians":
        model_cfg = cls.config_from(cfg)
        index = torch.arange(model_cfg.num_gaussians, dtype=torch.float32) + 0.5
        height = 1.0 - 2.0 * index / model_cfg.num_gaussians
        angle = index * torch.pi * (3.0 - 5.0 ** 0.5)
        ring = (1.0 - height ** 2).sqrt()
        sphere = torch.stack([ring * torch.cos(angle), height, ring * torch.sin(angle)], -1) * model_cfg.radius
        return cls(model_cfg, sphere).to(device)

    @classmethod
    def from_state_dict(cls, model_cfg, state) -> "StaticGaussians":
        return cls(model_cfg, state["xyz"])

    @property
    def color_dim(self) -> int:
        return 3

    @property
    def expression_dim(self) -> int:
        return self.cfg.exp_coeffs_dim

    def canonical_attributes(self) -> Dict[str, torch.Tensor]:
        return {"xyz": self.xyz, "color": self.color, "scales": self.scales, "rotation": self.rotation,
                "opacity": self.opacity}

    def generate(self, expression, pose, scale, pose_code=None,
                 attributes: Optional[Dict[str, torch.Tensor]] = None) -> Gaussians:
        if expression.shape[-1] != self.expression_dim:
            raise ValueError(f"expected {self.expression_dim} expression coefficients, got {expression.shape[-1]}")
        params = {**self.canonical_attributes(), **(attributes or {})}
        batch = pose.shape[0]
        head = axis_angle_to_quaternion(pose[:, :3])
        means = (params["xyz"] * scale[:, None, :]) @ unit_quaternion_to_matrix(head).transpose(1, 2) + pose[:, None, 3:]
        quats = F.normalize(params["rotation"], dim=-1) @ quaternion_product_matrix(head).transpose(1, 2)
        return Gaussians(means=means, quats=quats, scales=params["scales"].exp() * scale[:, None, :],
                         opacities=torch.sigmoid(params["opacity"][:, 0]).expand(batch, -1),
                         features=torch.sigmoid(params["color"]).expand(batch, -1, -1))


def toy_train_config(subject: Path, out: Path, *extra: str) -> TrainConfig:
    overrides = ["model.kind=test_static", "model.post_render=none", "model.options.num_gaussians=300",
                 f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=64",
                 "dataset.num_workers=0", "dataset.split_from_meta=true", "device=cpu", "render.backend=torch",
                 "train.max_iters=30", "train.epochs=0", "train.cuda_graphs=false", "lr_net=0.01",
                 "compact.enable=true", "compact.start_iter=15", "compact.groups=[color,shape]",
                 "compact.codebook_size=16", "compact.assign_every=5", f"recorder.checkpoint_path={out}/ck",
                 "recorder.name=toy", f"recorder.logdir={out}/log", f"recorder.result_path={out}/res",
                 "recorder.log_freq=1", "recorder.show_freq=1000", "train.loss_weights.expression_prior=0", *extra]
    return load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml", overrides,
                       stage="gaussianhead")


def test_a_toy_model_trains_compacts_evaluates_and_reenacts(tiny_subject, tmp_path):
    cfg = toy_train_config(tiny_subject, tmp_path)
    metrics = train_gaussian_head(cfg, CPU)
    assert metrics["test_cameras_psnr"] > 10
    run = RunFiles.of(cfg)
    assert run.checkpoint("static").is_file() and not run.checkpoint("supres").exists()
    logged = [json.loads(line) for line in (tmp_path / "log" / "metrics.jsonl").read_text().splitlines()]
    losses = [entry["loss"] for entry in logged if "loss" in entry]
    assert len(losses) == 30 and min(losses[-5:]) < 0.8 * losses[0], losses

    # The compressed file names the model kind and rebuilds the toy with quantised attributes.
    report = json.loads(run.compact_report.read_text())
    assert report["codebook_sizes"] == {"color": 16, "shape": 16} and report["ratio"] > 1.5
    model, post_render, metadata = load_compact_avatar(run.compact, CPU)
    assert isinstance(model, StaticGaussians) and metadata["model"] == "test_static"
    assert metadata["post_render"] == "none" and not list(post_render.parameters())
    assert torch.unique(model.color.detach(), dim=0).shape[0] <= 16

    evaluated = evaluate_avatar(cfg, CPU)
    assert evaluated["model"] == "test_static" and evaluated["avatar"]["kind"] == "compact"
    split = evaluated["splits"]["test_cameras"]
    assert split["render_resolution"] == split["output_resolution"] == 64 and split["output"]["psnr"] > 10

    reenact = load_config(ReenactConfig, ROOT / "config" / "reenactment_synthetic_demo.yaml",
                          ["model.kind=test_static", f"load_gaussianhead_checkpoint={run.compact}",
                           f"dataset.dataroot={tiny_subject}", "dataset.image_files=images/*/image_cam01.jpg",
                           "dataset.original_resolution=64", "dataset.resolution=64", "dataset.freeview=false",
                           f"dataset.camera_path={tiny_subject / 'cameras' / '0000' / 'camera_cam01.npz'}",
                           "dataset.pose_code_path=''", "device=cpu", "render.backend=torch",
                           f"recorder.result_path={tmp_path}/reenact", "recorder.name=toy"], stage="reenactment")
    result = Reenactment(reenact, CPU).run(export_ply=0, progress=False)
    assert result["frames"] == 4 and result["video"].is_file() and result["ply"].is_file()


def test_model_selection_errors_name_the_key(tiny_subject, tmp_path):
    with pytest.raises(ConfigError, match=r"'model.kind' is 'nope'.*known: .*gha.*test_static"):
        toy_train_config(tiny_subject, tmp_path, "model.kind=nope")
    with pytest.raises(ConfigError, match=r"model.options.*num_gausians.*did you mean 'num_gaussians'"):
        toy_train_config(tiny_subject, tmp_path, "model.options.num_gausians=3")
    with pytest.raises(ConfigError, match=r"unknown group 'feature'.*valid for this avatar model: color, shape"):
        toy_train_config(tiny_subject, tmp_path, "compact.groups=[feature]")
    with pytest.raises(ConfigError, match=r"'shape' and 'scales' both quantise 'scales'"):
        toy_train_config(tiny_subject, tmp_path, "compact.groups=[shape,scales]")
    with pytest.raises(ConfigError, match=r"gha reads its options from the gaussianheadmodule section"):
        toy_train_config(tiny_subject, tmp_path, "model.kind=gha", "model.options.num_gaussians=3",
                         "model.post_render=super_resolution", "compact.groups=[scale_rot]")
    assert model_class("gha").kind == "gha"


def _imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_layering():
    """Inference apps never import training code; the library never edits sys.path or parses argv outside apps."""
    package = ROOT / "cgha"
    for path in (package / "apps").glob("*.py"):
        assert not [m for m in _imported_modules(path) if m.startswith("cgha.trainer")], path
    for path in package.rglob("*.py"):
        assert "sys.path" not in path.read_text(), path


def test_compressed_files_from_before_the_model_interface_still_load(tmp_path):
    """Files written before the interface have no model kind, config under `gaussianheadmodule` and no attribute
    widths; they load as GHA avatars with the same weights."""
    from cgha.compact.avatar_file import save_compact_avatar
    from cgha.compact.codec import read_compact, write_compact
    from cgha.compact.quantizer import GroupedQuantizer, GroupSpec
    from cgha.module.gaussian_head import GaussianHeadModule
    from cgha.module.super_resolution import SuperResolutionModule

    cfg = load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml",
                      ["compact.codebook_size=32"], stage="gaussianhead")
    generator = torch.Generator().manual_seed(0)
    model = GaussianHeadModule(cfg.gaussianheadmodule, torch.randn(300, 3, generator=generator),
                               0.5 * torch.randn(300, 128, generator=generator), torch.randn(68, 3, generator=generator))
    quantizer = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(model))
    quantizer.initialise({key: value.detach() for key, value in model.canonical_attributes().items()})
    current = tmp_path / "current.cgha"
    save_compact_avatar(current, model, SuperResolutionModule(cfg.supresmodule), quantizer, cfg.compact.store)

    arrays, metadata = read_compact(current)
    legacy_metadata = {key: value for key, value in metadata.items()
                       if key not in ("model", "model_config", "post_render", "attribute_widths")}
    legacy_metadata["gaussianheadmodule"] = metadata["model_config"]
    encoded = {name: (array, "bitpacked", {"num_codes": metadata["codebook_sizes"][name.split(".")[1]]})
               if name.startswith("index.") else (array, "fp32") for name, array in arrays.items()}
    legacy = tmp_path / "legacy.cgha"
    write_compact(legacy, encoded, legacy_metadata)

    new_model, new_post, _ = load_compact_avatar(current, CPU)
    old_model, old_post, old_metadata = load_compact_avatar(legacy, CPU)
    assert "model" not in old_metadata and isinstance(old_model, GaussianHeadModule)
    for mine, theirs in ((new_model, old_model), (new_post, old_post)):
        expected, loaded = mine.state_dict(), theirs.state_dict()
        assert list(expected) == list(loaded)
        for key in expected:
            assert torch.equal(expected[key], loaded[key]), key
