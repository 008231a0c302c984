"""The avatar-model interface and its registry.

An avatar model is an `nn.Module` holding per-Gaussian parameters in a canonical space and the networks that pose
them: `generate(expression, pose, scale) -> Gaussians`. Everything after that (rasterisation, the post-render step,
losses, compaction, the compressed file, evaluation, reenactment, export, the viewer) is shared and talks only to
this interface. A model declares:

- `kind`: its registered name (`model.kind` in configs); `Config`: its config dataclass, read from `model.options`
  unless the class overrides `config_from` (GHA reads GHA's `gaussianheadmodule` section);
- `canonical_attributes()`: the per-Gaussian parameters generate() reads, keyed by name; `position_attribute` and
  `opacity_attribute` (a logit [N, 1]) among them are stored specially by the compressed file;
- `compact_groups`: attribute groups that codebook compaction may quantise (group -> attributes concatenated),
  `unit_norm_attributes`: attributes quantised by direction only (rotations), `default_compact_groups`;
- `exact_buffers`: state-dict entries stored at full precision in the compressed file (e.g. landmarks);
- `initialise(cfg, device)`: a fresh model for training; `from_state_dict(cfg, state)`: an empty model shaped like
  a saved one; `parameter_groups(lr)`: optimiser groups;
- optionally `from_point_cloud(cfg, xyz, landmarks)`: a fresh model on given canonical points (`points.init:
  sphere`), and `replace_gaussian_parameters(values)` when its per-Gaussian parameters are not plain attributes
  named as in `canonical_attributes()` (point insertion and deletion, cgha/points).
- optionally `training_strategy(cfg)`: an object that edits the Gaussians after optimiser steps (the rigged
  model's densification), and `regularisers(attributes)`: the model's own loss terms by loss-weight name.

Register with `@register_model` on the class; `model_class(kind)` finds it.
"""
from __future__ import annotations

import importlib
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

import torch
from torch import nn

from cgha.avatar.gaussians import Gaussians
from cgha.errors import ConfigError

# Modules that register the built-in models; imported on first lookup so that importing the registry stays light.
BUILTIN_MODEL_MODULES = ("cgha.module.gaussian_head", "cgha.prior.avatar", "cgha.rigged.model")
_MODELS: Dict[str, Type["AvatarModel"]] = {}


class AvatarModel(nn.Module):
    """Base class of avatar models; see the module docstring. Shapes: B frames, N Gaussians, D expression
    coefficients."""

    kind: ClassVar[str] = ""
    Config: ClassVar[Type[Any]]
    checkpoint_kind: ClassVar[str] = "gaussianhead"  # RunRecorder name of its raw checkpoint (GHA's)
    position_attribute: ClassVar[str] = "xyz"
    opacity_attribute: ClassVar[str] = "opacity"
    compact_groups: ClassVar[Mapping[str, Tuple[str, ...]]] = {}
    default_compact_groups: ClassVar[Tuple[str, ...]] = ()
    unit_norm_attributes: ClassVar[Tuple[str, ...]] = ()
    exact_buffers: ClassVar[Tuple[str, ...]] = ()

    cfg: Any

    # ------------------------------------------------------------------------------------------ config
    @classmethod
    def config_from(cls, cfg: Any) -> Any:
        """This model's config from a run config (TrainConfig or ReenactConfig): `model.options` by default."""
        from cgha.config import config_from_dict  # the loader imports the model registry: import it late

        return config_from_dict(cls.Config, cfg.model.options, "config 'model.options'")

    @classmethod
    def config_expression_dim(cls, model_cfg: Any) -> Tuple[int, str]:
        """(expression coefficients a model of this config takes, the config key that says so), so data can be
        checked before the model exists. Default: the config's `exp_coeffs_dim` under `model.options`."""
        return model_cfg.exp_coeffs_dim, "model.options.exp_coeffs_dim"

    @classmethod
    def check_config(cls, model_cfg: Any, cfg: Any, stage: Optional[str]) -> None:
        """Cross-key checks of this model's config against the run config; raises ConfigError."""
        check = getattr(model_cfg, "check", None)
        if check is not None:
            check()

    # ---------------------------------------------------------------------------------------- creation
    @classmethod
    def initialise(cls, cfg: Any, device: torch.device) -> "AvatarModel":
        """A fresh model to train from the run config `cfg` (a TrainConfig)."""
        raise NotImplementedError

    @classmethod
    def from_point_cloud(cls, cfg: Any, xyz: torch.Tensor, landmarks: torch.Tensor) -> "AvatarModel":
        """A fresh model whose Gaussians start at the canonical points xyz [N, 3], for a subject whose neutral
        landmarks are landmarks [K, 3] (canonical), from the run config `cfg` (`points.init: sphere`)."""
        raise ConfigError(f"'points.init' is sphere, but the avatar model '{cls.kind}' cannot start from a point "
                          f"cloud; use points.init=model")

    @classmethod
    def from_state_dict(cls, model_cfg: Any, state: Mapping[str, torch.Tensor]) -> "AvatarModel":
        """An empty model shaped like the saved `state` (its Gaussian count and buffers), ready for load_state_dict.
        Raises KeyError or ValueError when `state` is not one of this model's."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------- shape
    @property
    def num_gaussians(self) -> int:
        return self.canonical_attributes()[self.position_attribute].shape[0]

    @property
    def color_dim(self) -> int:
        """Channels of `Gaussians.features` (what the post-render step receives)."""
        raise NotImplementedError

    @property
    def expression_dim(self) -> int:
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------- training
    def canonical_attributes(self) -> Dict[str, torch.Tensor]:
        """Per-Gaussian parameters, each [N, ...], by name (compaction substitutes quantised versions)."""
        raise NotImplementedError

    def replace_gaussian_parameters(self, values: Mapping[str, torch.Tensor]
                                    ) -> Dict[str, Tuple[nn.Parameter, nn.Parameter]]:
        """Swap the per-Gaussian parameters named in `values` (each [M, ...]: a new Gaussian count M) for new
        parameters holding those values; returns name -> (old parameter, new parameter) so that an optimiser can
        follow. By default the parameters are this module's attributes of the same names."""
        replaced = {}
        for name, value in values.items():
            old = getattr(self, name)
            if not isinstance(old, nn.Parameter):
                raise TypeError(f"{type(self).__name__}.{name} is not a parameter: override "
                                f"replace_gaussian_parameters")
            new = nn.Parameter(value.detach().clone(), requires_grad=old.requires_grad)
            setattr(self, name, new)
            replaced[name] = (old, new)
        return replaced

    def parameter_groups(self, lr: float) -> List[Tuple[List[nn.Parameter], float]]:
        """(parameters, learning rate) pairs for the optimiser; by default every parameter at `lr`."""
        return [(list(self.parameters()), lr)]

    def configure_training(self, amp: bool, cuda_graphs: bool) -> None:
        """Speed options of training steps (bf16 autocast, CUDA graphs); models without them ignore them."""

    def training_strategy(self, cfg: Any) -> Optional[Any]:
        """A strategy that edits this model's Gaussians during training (`step(model, optimizer, compaction,
        iteration)` after each optimiser step, `state_dict()` / `load_state_dict()`), or None (default)."""
        return None

    def regularisers(self, attributes: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """The model's own loss terms by loss-weight name, from its (possibly quantised) attributes; none by
        default."""
        return {}

    def generate(self, expression: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor,
                 pose_code: Optional[torch.Tensor] = None,
                 attributes: Optional[Dict[str, torch.Tensor]] = None) -> Gaussians:
        """Posed Gaussians of a batch of frames.

        expression [B, D]; pose [B, 6] head transform (axis-angle, translation); scale [B, 1]; pose_code [B, 6]
        (what pose-conditioned networks read; default `pose`); attributes: substitutes for some of
        `canonical_attributes()` (same shapes), e.g. quantised ones.
        """
        raise NotImplementedError


def register_model(cls: Type[AvatarModel]) -> Type[AvatarModel]:
    """Class decorator: make `cls` available as `model.kind: <cls.kind>`."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no `kind`")
    registered = _MODELS.get(cls.kind)
    if registered is not None and registered.__qualname__ != cls.__qualname__:
        raise ValueError(f"avatar model kind {cls.kind!r} is taken by {registered.__name__}")
    _MODELS[cls.kind] = cls
    return cls


def _load_builtins() -> None:
    for module in BUILTIN_MODEL_MODULES:
        importlib.import_module(module)


def model_kinds() -> List[str]:
    _load_builtins()
    return sorted(_MODELS)


def model_class(kind: str) -> Type[AvatarModel]:
    """The registered model class of `kind`; ConfigError naming the known kinds otherwise."""
    _load_builtins()
    if kind not in _MODELS:
        raise ConfigError(f"'model.kind' is {kind!r}: no such avatar model; known: {', '.join(sorted(_MODELS))}")
    return _MODELS[kind]


def model_config(cfg: Any) -> Tuple[Type[AvatarModel], Any]:
    """(model class, its config) selected by a run config's `model` section."""
    cls = model_class(cfg.model.kind)
    return cls, cls.config_from(cfg)
