"""Typed configuration: dataclass schemas, YAML loading, dotted command-line overrides and validation.

GHA's YAML files load unchanged (same keys, same meaning); new sections (`device`, `train`, `compact`, `render`,
`eval`) have defaults, so old files keep working. Loading is strict: an unknown or misspelled key fails naming the
key and the closest valid one, a value of the wrong type or out of range fails naming the key and the file.

    cfg = load_config(TrainConfig, "config/train_gaussianhead_N031.yaml", ["train.max_iters=200"],
                      stage="gaussianhead")

Why not OmegaConf: a strict loader over plain dataclasses is ~300 lines, gives the error messages users need
(closest valid key, the file it came from), accepts GHA's `lr_net: 1e-3` (a *string* for YAML 1.1) as a float,
and removes a dependency; the schema itself is the same typed, structured config.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Type, TypeVar

import yaml

from cgha.addons.config import AddonsSection
from cgha.avatar.config import ModelSection
from cgha.avatar.model import AvatarModel, model_config
from cgha.compact.config import CompactSection, CompactStoreConfig
from cgha.errors import ConfigError
from cgha.module.gaussian_head import GaussianHeadModuleConfig
from cgha.module.mesh_head import MeshHeadModuleConfig, meshhead_exp_dim, meshhead_feature_dim
from cgha.module.super_resolution import SupResModuleConfig
from cgha.points.config import PointsSection
from cgha.options import (GAUSSIAN_ATTRIBUTE_DIM, GAUSSIAN_FEATURE_DIM, POSE_DIM, embedding_dim, option,
                          section)
from cgha.utils.atomic import write_bytes_atomic

T = TypeVar("T")

# The sections each component owns (declared beside the component, re-exported here for callers).
__all__ = ["CompactSection", "CompactStoreConfig", "DatasetConfig", "EvalSection", "GaussianHeadModuleConfig",
           "MeshHeadModuleConfig", "ModelSection", "ReenactConfig", "RecorderConfig", "RenderSection",
           "SupResModuleConfig", "TrainConfig", "TrainSection", "GAUSSIAN_ATTRIBUTE_DIM", "GAUSSIAN_FEATURE_DIM",
           "POSE_DIM", "embedding_dim", "meshhead_exp_dim", "meshhead_feature_dim", "load_config", "validate",
           "loss_weights", "config_from_dict", "config_to_dict", "save_config", "describe_schema",
           "config_reference_markdown"]

# Loss weights of each stage (GHA's values); `train.loss_weights` overrides any of them by name.
LOSS_WEIGHTS = {
    # expression_prior: ours (cgha/trainer/expression_prior.py), off by default.
    "meshhead": {"rgb": 0.1, "sil": 0.1, "def": 1.0, "offset": 0.01, "lmk": 0.1, "lap": 100.0, "expression_prior": 0.0},
    # position / scale: the rigged model's regularisers (GaussianAvatars' weights); color_calibration / contrastive:
    # add-ons (cgha/addons). Each is computed only by the model or add-on that has it.
    "gaussianhead": {"rgb_lr": 1.0, "rgb_hr": 1.0, "vgg": 0.0, "sr_residual": 0.0, "position": 0.01, "scale": 1.0,
                     "color_calibration": 1e-4, "contrastive": 0.01, "expression_prior": 0.0},
}
STAGES = ("meshhead", "gaussianhead", "reenactment", "evaluate")


# --------------------------------------------------------------------------------------------- schema: sections
@dataclass
class DatasetConfig:
    """Training/evaluation data (GHA keys + splits and loading)."""
    dataroot: str = option("", "root of the subject folder (GHA / NeRSemble-preprocessed layout)")
    camera_ids: List[str] = option([], "cameras to use; empty = every camera of the subject")
    original_resolution: int = option(2048, "resolution the intrinsics are given at", min=1)
    resolution: int = option(512, "working image resolution", min=4)
    num_sample_view: int = option(8, "views per frame in a mesh-head step", min=1)
    eval_camera_ids: List[str] = option([], "held-out cameras: never trained on, used by evaluation")
    eval_frame_ids: List[str] = option([], "held-out frames (folder names under images/)")
    out_of_rig_camera_ids: List[str] = option(
        [], "evaluation-only cameras outside the training rig (split out_of_rig: never trained on); empty = "
            "meta.json's splits.out_of_rig_camera_ids, if any")
    split_from_meta: bool = option(False, "take empty held-out lists from the subject's meta.json splits")
    num_workers: int = option(2, "data-loader worker processes (0 = load in the main process)", min=0)
    # Reenactment (GHA's config_reenactment keys).
    image_files: str = option("", "reenactment: glob of the driver's images, relative to dataroot")
    param_files: str = option("params/*/params.npz", "reenactment: glob of the driver's params, relative to dataroot")
    camera_path: str = option("", "reenactment: a camera .npz to render from; empty = GHA's frontal camera")
    pose_code_path: str = option("", "reenactment: params.npz whose pose is fed to the pose MLPs")
    freeview: bool = option(False, "reenactment: orbit the camera around the head")
    pose_transfer: str = option("relative", "reenactment: relative (the driver's head motion since its first frame, "
                                "applied to the avatar's own neutral pose, at the avatar's own scale) or absolute "
                                "(the driver's pose and scale as they are, as GHA)", choices=("relative", "absolute"))
    allow_basis_mismatch: bool = option(False, "reenactment: drive an avatar with codes whose expression basis "
                                        "(meta.json expression_basis) is not the avatar's, or is unknown")
    smoothing: float = option(0.5, "reenactment: temporal smoothing of exp_coeff (and pose without freeview): "
                               "exponential moving average weight of the previous frame, in [0, 1); "
                               "0 = off, 0.5 = GHA", min=0.0, max=0.999)


@dataclass
class RecorderConfig:
    """Where outputs go (GHA keys); outputs of a run land under `{path}/{name}/`."""
    name: str = option("avatar", "run name")
    logdir: str = option("log", "metrics.jsonl and tensorboard logs")
    checkpoint_path: str = option("checkpoints", "checkpoint root")
    result_path: str = option("results", "image/video root")
    save_freq: int = option(1000, "iterations between checkpoints", min=1)
    show_freq: int = option(100, "iterations between image grids", min=1)
    log_freq: int = option(10, "iterations between metrics.jsonl lines", min=1)


@dataclass
class TrainSection:
    """Training length and reproducibility."""
    epochs: int = option(1000, "passes over the frames (GHA's meaning); 0 = no epoch limit", min=0)
    max_iters: int = option(0, "iteration limit; 0 = none. Whichever of epochs/max_iters comes first stops", min=0)
    seed: int = option(0, "random seed", min=0)
    resume: bool = option(True, "continue from {checkpoint_path}/{name}/*_latest when present")
    amp: bool = option(False, "bf16 autocast on CUDA for the super-resolution network and the Gaussian head's "
                               "MLPs (per-Gaussian attributes, rasterisation, losses and Adam stay fp32)")
    cuda_graphs: bool = option(True, "Gaussian head on CUDA: replay generate()'s networks and the super-resolution "
                                "net from CUDA graphs in training steps (fewer kernel launches; same result)")
    loss_weights: Dict[str, float] = option({}, "overrides of the stage's loss weights by name (see LOSS_WEIGHTS)")
    pretrain_sphere_iters: int = option(300, "mesh head: SDF sphere pre-training steps on a fresh start", min=0)
    deform_warmup_iters: int = option(0, "mesh head: full-batch steps fitting the expression deformation to every "
                                         "training frame's tracked landmarks after the sphere pre-training, on a "
                                         "fresh start (ours; 0 = GHA)", min=0)
    deform_prior_iters: int = option(0, "mesh head: steps fitting the expression deformation to the shipped face "
                                        "model's deformation of the subject's fitted shape at training and random "
                                        "codes, after the sphere pre-training, on a fresh start (ours; 0 = GHA; "
                                        "subjects in the face model's expression basis: synthetic or tracked)", min=0)
    deform_prior_face_model: List[int] = option([128, 24], "mesh head's expression prior: the face model build "
                                                "[identities sampled, identity components] (the rigged avatar's "
                                                "defaults)")
    eval_every: int = option(0, "iterations between held-out evaluations during training; 0 = only at the end", min=0)
    crop_scale_range: List[float] = option([0.8, 1.25], "Gaussian head: [low, high] random zoom of the render crop the "
                                           "super-resolution net trains on (GHA: [0.8, 1.25])")

    def check(self) -> None:
        build = self.deform_prior_face_model
        if len(build) != 2 or not 2 <= build[0] or not 1 <= build[1] < build[0]:
            raise ConfigError(f"'train.deform_prior_face_model' must be [identities sampled >= 2, components >= 1 and "
                              f"below the identities], got {build}")
        low_high = self.crop_scale_range
        if len(low_high) != 2 or not 0.0 < low_high[0] <= low_high[1]:
            raise ConfigError(f"'train.crop_scale_range' must be [low, high] with 0 < low <= high, got {low_high}")


@dataclass
class RenderSection:
    """Gaussian rasterisation."""
    backend: str = option("auto", "auto (gsplat on CUDA, else torch), gsplat or torch", choices=("auto", "gsplat", "torch"))
    mesh_sigma: float = option(1.0, "soft-silhouette falloff of the mesh rasterizer in pixels", min=0.0,
                                min_exclusive=True)
    amp: bool = option(True, "reenactment/evaluation on CUDA: bf16 channels-last super-resolution (1.2x faster)")


@dataclass
class EvalSection:
    """Evaluation (evaluate.py)."""
    splits: List[str] = option(["test_cameras", "test_frames", "out_of_rig"],
                               "which held-out sets to evaluate (out_of_rig is skipped on subjects without out-of-rig "
                               "cameras)")
    max_images: int = option(0, "cap on evaluated images per split; 0 = all", min=0)
    lpips: bool = option(False, "report LPIPS (needs the optional lpips package and its weights)")
    sheet_images: int = option(0, "write {split}_sheet.jpg beside evaluation.json: this many evaluated views, evenly "
                                  "spaced, ground truth over output; 0 = none", min=0)


# ------------------------------------------------------------------------------------------- schema: top level
@dataclass
class TrainConfig:
    """Configuration of train_meshhead.py, train_gaussianhead.py and evaluate.py (GHA's config_train + new)."""
    gpu_id: int = option(0, "CUDA device index (GHA); used when device is auto or cuda", min=0)
    device: str = option("auto", "auto (CUDA if present), cpu, cuda or cuda:N")
    load_meshhead_checkpoint: str = option("", "mesh-head checkpoint to start from")
    load_gaussianhead_checkpoint: str = option("", "Gaussian-head checkpoint (raw or compact) to start from")
    load_supres_checkpoint: str = option("", "super-resolution checkpoint to start from")
    load_delta_poses_checkpoint: str = option("", "per-frame pose offsets to start from")
    lr_net: float = option(1e-3, "learning rate of networks", min=0.0)
    lr_lmk: float = option(1e-4, "learning rate of the neutral landmarks", min=0.0)
    lr_pose: float = option(1e-5, "learning rate of the per-frame pose offsets", min=0.0)
    batch_size: int = option(1, "frames per step", min=1)
    optimize_pose: bool = option(False, "optimise per-frame head-pose offsets")
    dataset: DatasetConfig = section(DatasetConfig)
    meshheadmodule: MeshHeadModuleConfig = section(MeshHeadModuleConfig)
    supresmodule: SupResModuleConfig = section(SupResModuleConfig)
    gaussianheadmodule: GaussianHeadModuleConfig = section(GaussianHeadModuleConfig)
    model: ModelSection = section(ModelSection)
    recorder: RecorderConfig = section(RecorderConfig)
    train: TrainSection = section(TrainSection)
    compact: CompactSection = section(CompactSection)
    points: PointsSection = section(PointsSection)
    render: RenderSection = section(RenderSection)
    eval: EvalSection = section(EvalSection)
    addons: AddonsSection = section(AddonsSection)


@dataclass
class ReenactConfig:
    """Configuration of reenactment.py (GHA's config_reenactment + new)."""
    gpu_id: int = option(0, "CUDA device index (GHA); used when device is auto or cuda", min=0)
    device: str = option("auto", "auto (CUDA if present), cpu, cuda or cuda:N")
    load_gaussianhead_checkpoint: str = option("", "Gaussian-head checkpoint (raw or compact)")
    load_supres_checkpoint: str = option("", "super-resolution checkpoint (unused with a compact file)")
    dataset: DatasetConfig = section(DatasetConfig)
    model: ModelSection = section(ModelSection)
    supresmodule: SupResModuleConfig = section(SupResModuleConfig)
    gaussianheadmodule: GaussianHeadModuleConfig = section(GaussianHeadModuleConfig)
    recorder: RecorderConfig = section(RecorderConfig)
    render: RenderSection = section(RenderSection)
    video_fps: float = option(25.0, "reenactment: frame rate of the written mp4", min=0.0, min_exclusive=True)


# ------------------------------------------------------------------------------------------------- loading
def load_config(schema: Type[T], path: Optional[str | os.PathLike], overrides: Sequence[str] = (),
                stage: Optional[str] = None) -> T:
    """Build a `schema` instance from a YAML file and `key=value` overrides, then validate it.

    `overrides` use dotted keys with YAML values: `train.max_iters=200`, `dataset.camera_ids=[cam00,cam03]`.
    `stage` (one of STAGES) adds the cross-key checks of that stage (MLP dimensions, thresholds, ...).
    Raises ConfigError naming the file/override and key.
    """
    data: Dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        data = _read_yaml(Path(path))
    config = _build(schema, data, prefix="", source=source)
    for item in overrides:
        _apply_override(config, item)
    validate(config, stage)
    return config


class _ConfigLoader(yaml.SafeLoader):
    """YAML 1.1 safe loading, except that a plain scalar becomes an int only when it is written as one would write
    that int (`-?(0|[1-9][0-9]*)`). YAML 1.1 reads `0036` as octal 30, `0038` as a string, `1:30` as 90 and `1_000`
    as 1000; ids (frames, cameras) written like that must stay the text written, and an int key given such a value
    fails naming the key instead of taking a number the user did not write."""


_ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:int"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^-?(?:0|[1-9][0-9]*)$"),
                                    list("-0123456789"))


def _load_yaml_text(text: str) -> Any:
    """Parse config YAML (a file or an override's value) with `_ConfigLoader`."""
    return yaml.load(text, Loader=_ConfigLoader)


def _read_yaml(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _load_yaml_text(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(error, 'problem', error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _build(schema: Type[T], data: Dict[str, Any], prefix: str, source: str) -> T:
    """Instantiate dataclass `schema` from a mapping, converting and checking each value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in data:
        if key not in fields:
            raise ConfigError(f"{source}: {_unknown_key_message(prefix, str(key), list(fields))}")
    config = schema()
    for name, raw in data.items():
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            value = _build(kind, raw if raw is not None else {}, prefix + name + ".", source)
        else:
            value = _convert(raw, kind, prefix + name, source)
            _check_range(value, fields[name], prefix + name, source)
        setattr(config, name, value)
    return config


def _unknown_key_message(prefix: str, key: str, valid: List[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return f"unknown key '{prefix}{key}'{hint}"


def _convert(value: Any, kind: Any, key: str, source: str) -> Any:
    """Convert a YAML value to the annotated type `kind`, or raise ConfigError naming `key`."""
    if kind is Any:  # free-form options (model.options), checked by the section that owns them
        return value
    origin = typing.get_origin(kind)
    wrong = ConfigError(f"{source}: '{key}' must be {_type_name(kind)}, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise wrong
        (item_kind,) = typing.get_args(kind)
        return [_convert(item, item_kind, f"{key}[{i}]", source) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise wrong
        key_kind, item_kind = typing.get_args(kind)
        return {_convert(k, key_kind, key, source): _convert(v, item_kind, f"{key}.{k}", source)
                for k, v in value.items()}
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise wrong
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise wrong
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            # YAML 1.1 reads GHA's `lr_net: 1e-3` as a string; accept any float literal.
            try:
                result = float(value)
            except ValueError:
                raise wrong from None
        else:
            raise wrong
        if not math.isfinite(result):
            raise ConfigError(f"{source}: '{key}' must be finite, got {value!r}")
        return result
    if kind is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)  # unquoted camera serials such as 220700191
        if value is None:
            return ""
        # YAML turns unquoted yes/no/on/off into booleans and 1.5 into a number: not the text that was written.
        raise ConfigError(f"{source}: '{key}' must be a string, got {value!r}; quote the value to keep the text "
                          f"as written (e.g. '0036', \"on\")")
    raise TypeError(f"unsupported config type {kind!r} for '{key}'")


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(kind)[0]).removeprefix('a ').removeprefix('an ')}"
    if origin is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(kind, str(kind))


def _check_range(value: Any, spec: dataclasses.Field, key: str, source: str) -> None:
    meta = spec.metadata
    choices = meta.get("choices")
    items = value if isinstance(value, list) else [value]
    for item in items:
        if choices is not None and item not in choices:
            raise ConfigError(f"{source}: '{key}' must be one of {', '.join(map(str, choices))}; got {item!r}")
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        low, high = meta.get("min"), meta.get("max")
        if low is not None and (item < low or (meta.get("min_exclusive") and item == low)):
            bound = f"> {low}" if meta.get("min_exclusive") else f">= {low}"
            raise ConfigError(f"{source}: '{key}' must be {bound}, got {item!r}")
        if high is not None and item > high:
            raise ConfigError(f"{source}: '{key}' must be <= {high}, got {item!r}")


def _apply_override(config: Any, item: str) -> None:
    source = f"override '{item}'"
    if "=" not in item:
        raise ConfigError(f"{source}: expected key=value (e.g. train.max_iters=200)")
    dotted, _, text = item.partition("=")
    parts = dotted.strip().split(".")
    try:
        value = _load_yaml_text(text) if text.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"{source}: cannot parse the value {text!r}") from None
    node, prefix = config, ""
    for depth, name in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(node)}
        if name not in fields:
            # A dict-valued option takes free keys below it: compact.codebook_sizes.feature=4096.
            raise ConfigError(f"{source}: {_unknown_key_message(prefix, name, list(fields))}")
        kind = typing.get_type_hints(type(node))[name]
        last = depth == len(parts) - 1
        if dataclasses.is_dataclass(kind):
            if last:
                setattr(node, name, _build(kind, value, prefix + name + ".", source))
                return
            node, prefix = getattr(node, name), prefix + name + "."
            continue
        if typing.get_origin(kind) is dict and depth == len(parts) - 2:
            mapping = dict(getattr(node, name))
            mapping.update(_convert({parts[-1]: value}, kind, prefix + name, source))
            setattr(node, name, mapping)
            return
        if not last:
            raise ConfigError(f"{source}: '{prefix}{name}' is not a section")
        converted = _convert(value, kind, prefix + name, source)
        _check_range(converted, fields[name], prefix + name, source)
        setattr(node, name, converted)
        return


# ---------------------------------------------------------------------------------------------- validation
def validate(config: Any, stage: Optional[str] = None) -> None:
    """Cross-key checks; `stage` selects which components must be consistent. Each component's section checks
    itself (`check()`); the avatar model checks its own section against the rest. Raises ConfigError."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    _check_device(config.device)
    if isinstance(config, TrainConfig):
        _check_dataset(config.dataset)
        if config.train.epochs == 0 and config.train.max_iters == 0 and stage in ("meshhead", "gaussianhead"):
            raise ConfigError("'train.epochs' and 'train.max_iters' are both 0: training would never stop")
        if stage in ("meshhead", "gaussianhead"):
            _check_loss_weights(config.train.loss_weights, stage)
            config.train.check()
            config.points.check()
            config.addons.check()
        if stage == "meshhead" or (stage == "gaussianhead" and config.model.kind == "gha"
                                   and config.points.init == "model"):
            config.meshheadmodule.check()
    cls, model_cfg = model_config(config)
    if isinstance(config, TrainConfig):
        config.compact.check(cls.compact_groups)
        if config.addons.smart_densification and cls.training_strategy is AvatarModel.training_strategy:
            raise ConfigError(f"'addons.smart_densification' sets the thresholds of densification, which the "
                              f"'{cls.kind}' avatar model does not do (model.kind=rigged does)")
    if stage in ("gaussianhead", "evaluate", "reenactment") or isinstance(config, ReenactConfig):
        if config.model.post_render == "super_resolution":
            config.supresmodule.check()
        cls.check_config(model_cfg, config, stage)


def _check_loss_weights(weights: Dict[str, float], stage: str) -> None:
    known = LOSS_WEIGHTS[stage]
    for name, value in weights.items():
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"'train.loss_weights.{name}' is not a {stage} loss{hint}; known: {', '.join(known)}")
        if value < 0:
            raise ConfigError(f"'train.loss_weights.{name}' must be >= 0, got {value}")


def loss_weights(config: "TrainConfig", stage: str) -> Dict[str, float]:
    """The stage's default loss weights with the config's overrides applied."""
    return {**LOSS_WEIGHTS[stage], **config.train.loss_weights}


def _check_device(device: str) -> None:
    if device in ("auto", "cpu", "cuda"):
        return
    if device.startswith("cuda:") and device[5:].isdigit():
        return
    raise ConfigError(f"'device' must be auto, cpu, cuda or cuda:N, got {device!r}")


def _check_dataset(dataset: DatasetConfig) -> None:
    for key in ("camera_ids", "eval_camera_ids", "eval_frame_ids", "out_of_rig_camera_ids"):
        values = getattr(dataset, key)
        if len(set(values)) != len(values):
            raise ConfigError(f"'dataset.{key}' lists an entry twice: {values}")


# ---------------------------------------------------------------------------------------------- utilities
def config_to_dict(config: Any) -> Dict[str, Any]:
    """Plain nested dict of a config (for YAML/JSON output and for storing inside checkpoints)."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically (temp file + rename)."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=None)
    write_bytes_atomic(path, text.encode())


def config_from_dict(schema: Type[T], data: Dict[str, Any], source: str = "<stored config>") -> T:
    """Inverse of `config_to_dict` with the same strict checks (used for configs stored in checkpoints)."""
    return _build(schema, json.loads(json.dumps(data)), prefix="", source=source)


def describe_schema(schema: Type[Any], prefix: str = "") -> List[str]:
    """One line per option: `key (type, default): help` — the reference that docs/config.md is built from."""
    lines = []
    hints = typing.get_type_hints(schema)
    for spec in dataclasses.fields(schema):
        kind = hints[spec.name]
        if dataclasses.is_dataclass(kind):
            lines += describe_schema(kind, prefix + spec.name + ".")
            continue
        default = spec.default if spec.default is not dataclasses.MISSING else spec.default_factory()
        lines.append(f"{prefix}{spec.name} ({_type_name(kind)}, default {default!r}): {spec.metadata.get('help', '')}")
    return lines


def config_reference_markdown() -> str:
    """docs/config.md: every option of both schemas with type, default and help (kept in sync by a test)."""
    parts = ["# Config reference", "",
             "Generated from the schema in `cgha/config.py` (regenerate with",
             "`python -c \"from cgha.config import config_reference_markdown as m; print(m(), end='')\" > docs/config.md`).",
             "Unknown keys, wrong types and out-of-range values are errors.", ""]
    from cgha.prior.config import PriorConfig, PriorModelConfig  # it builds on this module: import it late

    for title, schema, prefix in (("Training, evaluation (`train_*.py`, `evaluate.py`)", TrainConfig, ""),
                                  ("Reenactment (`reenactment.py`)", ReenactConfig, ""),
                                  ("Prior training, one-shot fitting (`train_prior.py`, `fit_oneshot.py`)",
                                   PriorConfig, ""),
                                  ("`model.options` of the `prior` model (priors and the avatars fitted from them)",
                                   PriorModelConfig, "model.options.")):
        parts += [f"## {title}", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for line in describe_schema(schema, prefix):
            head, meaning = line.split(": ", 1)
            key, rest = head.split(" (", 1)
            kind, default = rest.rstrip(")").split(", default ", 1)
            parts.append(f"| `{key}` | {kind} | `{default}` | {meaning.replace('|', '/')} |")
        parts.append("")
    return "\n".join(parts)
