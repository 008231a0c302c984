"""`RiggedAvatar`, the avatar model `rigged` (GaussianAvatars, Qian et al., CVPR 2024): 3D Gaussians bound to the
triangles of the subject's face-model mesh.

Per Gaussian: `binding` (its triangle), local position `xyz` [N, 3] and log-`scales` [N, 3] in units of the
triangle's size, local `rotation` [N, 4] (wxyz, unnormalised), `opacity` [N, 1] (logit) and `color` [N, C]
(logit; RGB first, C = 3 without a post-render network, supresmodule.input_dim with super-resolution).
`generate()` drives the face model with the expression codes and the subject's fitted shape (cgha/rigged/mesh.py),
poses the mesh with the head pose, and poses every Gaussian with its triangle's frame (cgha/rigged/binding.py).

Colours are one value per Gaussian (spherical-harmonics degree 0): the avatar interface renders features without a
view direction. `binding` is stored as two exact fp16 integers per Gaussian (triangle // 1024, triangle % 1024)
among the per-Gaussian attributes, so that the compressed file keeps it in the same (Morton) order as the others.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cgha.avatar.gaussians import Gaussians
from cgha.avatar.model import AvatarModel, register_model
from cgha.errors import CheckpointError, ConfigError
from cgha.options import option
from cgha.rigged.binding import pose_gaussians, triangle_frames
from cgha.rigged.mesh import fit_subject_shape, posed_mesh, read_subject_faces, shared_face_model
from cgha.tracking.face_model import DEFAULT_NUM_COMPONENTS, DEFAULT_NUM_SAMPLES

log = logging.getLogger(__name__)

BINDING_RADIX = 1024  # binding codes (hi, lo) are integers below 2048: exact in fp16


def encode_binding(binding: torch.Tensor) -> torch.Tensor:
    """Triangle indices [N] int64 -> codes [N, 2] float32 (index // 1024, index % 1024)."""
    return torch.stack([binding // BINDING_RADIX, binding % BINDING_RADIX], -1).float()


def decode_binding(codes: torch.Tensor) -> torch.Tensor:
    """Codes [N, 2] -> triangle indices [N] int64 (rounded: codes read back from fp16 are exact integers)."""
    codes = codes.detach().round().long()
    return codes[:, 0] * BINDING_RADIX + codes[:, 1]


@dataclass
class RiggedConfig:
    """Mesh-rigged Gaussians (model.kind: rigged), options under model.options."""
    exp_coeffs_dim: int = option(16, "expression coefficients (the face model's 16)", min=1)
    color_channels: int = option(3, "colour channels per Gaussian: 3 (RGB) without a post-render network, the "
                                 "super-resolution net's supresmodule.input_dim with one", min=3)
    initial_faces: int = option(0, "triangles that get a Gaussian at initialisation, evenly spread over the mesh; "
                                "0 = every triangle (GaussianAvatars)", min=0)
    initial_scale: float = option(0.5, "initial Gaussian size in units of its triangle's size", min=0.0,
                                  min_exclusive=True)
    initial_opacity: float = option(0.1, "initial opacity (GaussianAvatars: 0.1)", min=0.0, max=0.999,
                                    min_exclusive=True)
    lr_xyz: float = option(0.005, "learning rate of local positions (GaussianAvatars: 5e-3)", min=0.0)
    lr_scales: float = option(0.017, "learning rate of local log-scales (GaussianAvatars: 0.017)", min=0.0)
    lr_rotation: float = option(0.001, "learning rate of local rotations (GaussianAvatars: 1e-3)", min=0.0)
    lr_opacity: float = option(0.05, "learning rate of opacity logits (GaussianAvatars: 0.05)", min=0.0)
    lr_color: float = option(0.01, "learning rate of colour logits", min=0.0)
    position_threshold: float = option(1.0, "position regulariser: local distances beyond this (triangle sizes) are "
                                       "penalised (GaussianAvatars: 1); weight train.loss_weights.position", min=0.0)
    scale_threshold: float = option(0.6, "scale regulariser: local scales beyond this (triangle sizes) are "
                                    "penalised (GaussianAvatars: 0.6); weight train.loss_weights.scale", min=0.0)
    densify_every: int = option(100, "iterations between densification steps (clone, split, prune); 0 = never",
                                min=0)
    densify_from: int = option(500, "first iteration of densification", min=0)
    densify_until: int = option(15000, "no densification after this iteration", min=0)
    grad_threshold: float = option(5e-4, "clone/split Gaussians whose mean positional gradient (world units, over "
                                   "the steps they were seen) is at least this; addons.smart_densification "
                                   "replaces it with percentiles", min=0.0)
    split_scale: float = option(1.0, "a dense Gaussian larger than this (largest local scale, triangle sizes) is "
                                "split in two, a smaller one cloned", min=0.0, min_exclusive=True)
    prune_opacity: float = option(0.005, "densification deletes Gaussians less opaque than this (every triangle "
                                  "keeps at least one)", min=0.0, max=1.0)
    opacity_reset_every: int = option(0, "iterations between opacity resets to 0.01 during densification "
                                      "(GaussianAvatars: 3000); 0 = never", min=0)
    max_gaussians: int = option(300000, "densification stops adding Gaussians at this count", min=1)
    face_model_samples: int = option(DEFAULT_NUM_SAMPLES, "face model build: identities sampled", min=2)
    face_model_components: int = option(DEFAULT_NUM_COMPONENTS, "face model build: identity components", min=1)
    face_model_key: str = option("", "the face model build the avatar was made with (recorded at initialisation; "
                                 "a different build is refused when loading)")

    def check(self) -> None:
        if self.face_model_components >= self.face_model_samples:
            raise ConfigError(f"'model.options.face_model_components' ({self.face_model_components}) must be below "
                              f"'model.options.face_model_samples' ({self.face_model_samples})")
        if self.densify_every and self.densify_until < self.densify_from:
            raise ConfigError(f"'model.options.densify_until' ({self.densify_until}) is before "
                              f"'model.options.densify_from' ({self.densify_from})")


@register_model
class RiggedAvatar(AvatarModel):
    """Gaussians bound to mesh triangles. Shapes: B frames, N Gaussians, V mesh vertices, F triangles, K identity
    components, D = 16 expression coefficients, C colour channels."""

    kind = "rigged"
    Config = RiggedConfig
    compact_groups = {"scale_rot": ("scales", "rotation"), "scale": ("scales",), "rotation": ("rotation",),
                      "color": ("color",)}
    default_compact_groups = ("scale_rot", "color")
    unit_norm_attributes = ("rotation",)
    exact_buffers = ("identity", "vertex_offset")

    def __init__(self, cfg: RiggedConfig, binding: torch.Tensor, identity: torch.Tensor, vertex_offset: torch.Tensor,
                 xyz: Optional[torch.Tensor] = None):
        super().__init__()
        count = binding.shape[0]
        self.cfg = cfg
        self.register_buffer("binding", encode_binding(binding.long()) if binding.ndim == 1 else binding.float())
        self.register_buffer("identity", identity.detach().clone().float())
        self.register_buffer("vertex_offset", vertex_offset.detach().clone().float())
        device = binding.device
        self.xyz = nn.Parameter(torch.zeros(count, 3, device=device) if xyz is None else xyz.detach().clone().float())
        self.scales = nn.Parameter(torch.full((count, 3), float(torch.tensor(cfg.initial_scale).log()), device=device))
        rotation = torch.zeros(count, 4, device=device)
        rotation[:, 0] = 1.0
        self.rotation = nn.Parameter(rotation)
        self.opacity = nn.Parameter(torch.full((count, 1), float(torch.logit(torch.tensor(cfg.initial_opacity))),
                                               device=device))
        self.color = nn.Parameter(torch.zeros(count, cfg.color_channels, device=device))
        self._checked_face_model = False

    # ------------------------------------------------------------------------------------------- config
    @classmethod
    def check_config(cls, model_cfg: RiggedConfig, cfg, stage: Optional[str]) -> None:
        model_cfg.check()
        if model_cfg.exp_coeffs_dim != 16:
            raise ConfigError(f"'model.options.exp_coeffs_dim' is {model_cfg.exp_coeffs_dim}; the rigged avatar is "
                              f"driven through the face model, which takes 16 expression coefficients")
        if cfg.model.post_render == "super_resolution" and model_cfg.color_channels != cfg.supresmodule.input_dim:
            raise ConfigError(f"'model.options.color_channels' is {model_cfg.color_channels} but the super-resolution "
                              f"net takes supresmodule.input_dim={cfg.supresmodule.input_dim} channels")
        points = getattr(cfg, "points", None)
        if points is not None and (points.editing or points.init != "model"):
            raise ConfigError("'points' edits canonical positions, but the rigged avatar's positions are "
                              "triangle-local and it densifies itself (model.options.densify_*): leave points.every=0 "
                              "and points.init=model")

    # ---------------------------------------------------------------------------------------- creation
    @classmethod
    def initialise(cls, cfg, device: torch.device) -> "RiggedAvatar":
        """Fit the subject's shape to its tracked meshes, then one Gaussian at the centre of each (chosen)
        triangle."""
        from cgha.dataset.subject import Subject  # the dataset package imports the config: import it late

        model_cfg = cls.config_from(cfg)
        subject = Subject(cfg.dataset, check_images=False)
        face_model = shared_face_model(model_cfg.face_model_samples, model_cfg.face_model_components, device)
        faces = read_subject_faces(subject.layout.root, face_model.num_vertices)
        if faces.shape != face_model.faces.shape or not torch.equal(faces.to(face_model.faces), face_model.faces):
            raise ConfigError(f"{subject.layout.root / 'faces.npy'}: {faces.shape[0]} triangles that are not the face "
                              f"model's ({face_model.faces.shape[0]}); the rigged avatar drives the face model's "
                              f"mesh, so the subject must be tracked with it")
        shape = fit_subject_shape(face_model, subject, subject.split("train").frames)
        log.info("rigged: subject shape fitted to its tracked meshes (identity %d components + static offset): "
                 "mean distance %.2g, max %.2g (canonical units)", shape.identity.numel(), shape.mean_error,
                 shape.max_error)
        num_faces = faces.shape[0]
        count = model_cfg.initial_faces or num_faces
        binding = torch.linspace(0, num_faces - 1, steps=min(count, num_faces)).round().long()
        model_cfg.face_model_key = face_model.key
        return cls(model_cfg, binding.to(device), shape.identity.to(device), shape.offset.to(device))

    @classmethod
    def from_state_dict(cls, model_cfg: RiggedConfig, state: Mapping[str, torch.Tensor]) -> "RiggedAvatar":
        for key in ("binding", "identity", "vertex_offset", "xyz"):
            if key not in state or not isinstance(state[key], torch.Tensor):
                raise KeyError(key)
        binding = state["binding"]
        if binding.ndim != 2 or binding.shape[1] != 2 or binding.shape[0] != state["xyz"].shape[0]:
            raise ValueError(f"binding must be [N, 2] codes for the {state['xyz'].shape[0]} Gaussians, got "
                             f"{list(binding.shape)}")
        return cls(model_cfg, binding, state["identity"], state["vertex_offset"], state["xyz"])

    def parameter_groups(self, lr: float) -> List[Tuple[List[nn.Parameter], float]]:
        """GaussianAvatars' per-attribute learning rates (model.options.lr_*); the model has no networks."""
        cfg = self.cfg
        return [([self.xyz], cfg.lr_xyz), ([self.scales], cfg.lr_scales), ([self.rotation], cfg.lr_rotation),
                ([self.opacity], cfg.lr_opacity), ([self.color], cfg.lr_color)]

    def replace_gaussian_parameters(self, values: Mapping[str, torch.Tensor]
                                    ) -> Dict[str, Tuple[nn.Parameter, nn.Parameter]]:
        """As the base class, with `binding` (a buffer: triangles are not optimised) replaced beside them."""
        values = dict(values)
        binding = values.pop("binding", None)
        if binding is not None:
            self.binding = binding.detach().clone()
        return super().replace_gaussian_parameters(values)

    def training_strategy(self, cfg):
        """Binding-aware densification (cgha/rigged/densify.py), or None when model.options.densify_every is 0."""
        from cgha.rigged.densify import BindingDensifier

        return BindingDensifier.from_config(self.cfg, cfg) if self.cfg.densify_every else None

    # ------------------------------------------------------------------------------------------- shape
    @property
    def color_dim(self) -> int:
        return self.cfg.color_channels

    @property
    def expression_dim(self) -> int:
        return self.cfg.exp_coeffs_dim

    def triangles(self) -> torch.Tensor:
        """Each Gaussian's triangle index [N] int64."""
        return decode_binding(self.binding)

    def canonical_attributes(self) -> Dict[str, torch.Tensor]:
        return {"xyz": self.xyz, "color": self.color, "scales": self.scales, "rotation": self.rotation,
                "opacity": self.opacity, "binding": self.binding}

    def face_model(self, device: torch.device):
        """The face model this avatar was made with, on `device`; CheckpointError when this installation builds
        another one."""
        model = shared_face_model(self.cfg.face_model_samples, self.cfg.face_model_components, device)
        if not self._checked_face_model:
            if self.cfg.face_model_key and self.cfg.face_model_key != model.key:
                raise CheckpointError(f"this rigged avatar was made with face model {self.cfg.face_model_key}, but "
                                      f"this installation builds {model.key}; retrain it")
            if model.num_vertices != self.vertex_offset.shape[0]:
                raise CheckpointError(f"the avatar's vertex offsets are for {self.vertex_offset.shape[0]} vertices, "
                                      f"the face model has {model.num_vertices}")
            self._checked_face_model = True
        return model

    # ---------------------------------------------------------------------------------------- generation
    def mesh(self, expression: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """The subject's posed mesh: expression [B, 16], pose [B, 6], scale [B, 1] -> vertices [B, V, 3] world."""
        face_model = self.face_model(expression.device)
        return posed_mesh(face_model, self.identity, self.vertex_offset, expression, pose, scale)

    def generate(self, expression: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor,
                 pose_code: Optional[torch.Tensor] = None,
                 attributes: Optional[Dict[str, torch.Tensor]] = None) -> Gaussians:
        """Posed Gaussians: expression [B, 16], pose [B, 6], scale [B, 1]; pose_code is not used (nothing here is
        pose-conditioned). extras["local_xyz"] [N, 3] and extras["local_scales"] [N, 3] feed the regularisers."""
        if expression.ndim != 2 or expression.shape[1] != self.expression_dim:
            raise ValueError(f"expression must be [B, {self.expression_dim}], got {list(expression.shape)}")
        params = {**self.canonical_attributes(), **(attributes or {})}
        batch = expression.shape[0]
        face_model = self.face_model(expression.device)
        verts = posed_mesh(face_model, self.identity, self.vertex_offset, expression, pose, scale)
        frames = triangle_frames(verts, face_model.faces)
        local_scales = params["scales"].exp()
        means, quats, scales = pose_gaussians(frames, decode_binding(params["binding"]), params["xyz"],
                                              F.normalize(params["rotation"], dim=-1), local_scales)
        return Gaussians(means=means, quats=quats, scales=scales,
                         opacities=torch.sigmoid(params["opacity"][:, 0]).expand(batch, -1),
                         features=torch.sigmoid(params["color"]).expand(batch, -1, -1))

    def regularisers(self, attributes: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """GaussianAvatars' regularisers by loss-weight name: `position`, the mean excess of local distances over
        position_threshold, and `scale`, the mean norm of the local scales' excess over scale_threshold (both in
        triangle sizes; over every Gaussian, where GaussianAvatars takes the ones visible in the step)."""
        params = {**self.canonical_attributes(), **(attributes or {})}
        position = F.relu(params["xyz"].norm(dim=-1) - self.cfg.position_threshold).mean()
        scale = F.relu(params["scales"].exp() - self.cfg.scale_threshold).norm(dim=-1).mean()
        return {"position": position, "scale": scale}
