"""The `prior` avatar model: one person's avatar taken out of the Gaussian prior (fit_oneshot.py), on the avatar
interface, so that evaluation, compaction, the compressed file, reenactment, export and the viewer take it as they
take any other model.

It keeps the identity decoder's output for its own latent as plain per-Gaussian parameters in canonical space
(`xyz`, `rotation`, `scales` log, `opacity` logit, `color` logit), the per-Gaussian embeddings (`feature`), its
latent code and the expression decoder, and its own face-model mesh (neutral vertices, faces, expression basis).
Each Gaussian is bound to the neutral mesh's triangle whose centroid is its `anchor` (a per-Gaussian attribute, so
the binding survives the compressed file's reordering of Gaussians); generate() moves it from that triangle's
neutral frame to its posed frame (cgha.rigged.binding), after the expression decoder's offset.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import nn

from cgha.avatar.gaussians import Gaussians
from cgha.avatar.model import AvatarModel, register_model
from cgha.errors import ConfigError
from cgha.prior.config import PriorModelConfig
from cgha.prior.geometry import BASIS_BUFFERS, expressed_vertices, expression_basis
from cgha.prior.model import ROTATION_DIM, GaussianPrior, dynamic_condition, make_dynamic_decoder
from cgha.prior.posing import (DYNAMIC_OUTPUTS, OPACITY_BIAS, bound_frames, canonical_from_local, posed_gaussians,
                               split_outputs)
from cgha.rigged.binding import local_means_of
from cgha.utils.knn import knn
from cgha.utils.rotations import matrix_to_quaternion, quaternion_multiply


def anchored_faces(rest_vertices: torch.Tensor, faces: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """Each Gaussian's triangle [N, 3]: the face of rest_vertices [V, 3] (faces [F, 3]) whose centroid is nearest
    its anchor [N, 3]."""
    centroids = rest_vertices[faces].mean(dim=1)
    _, index = knn(anchor.detach().float(), centroids.float(), 1)
    return faces[index[:, 0]]


@register_model
class PriorAvatar(AvatarModel):
    """See the module docstring. N Gaussians, E embedding channels, Z latent channels, V mesh vertices."""

    kind = "prior"
    Config = PriorModelConfig
    checkpoint_kind = "prior_avatar"
    compact_groups = {"scale_rot": ("scales", "rotation"), "color": ("color",), "feature": ("feature",)}
    default_compact_groups = ("scale_rot", "color", "feature")
    unit_norm_attributes = ("rotation",)
    exact_buffers = ("rest_vertices",) + BASIS_BUFFERS

    def __init__(self, cfg: PriorModelConfig, attributes: Mapping[str, torch.Tensor], latent: torch.Tensor,
                 geometry: Mapping[str, torch.Tensor]):
        super().__init__()
        self.cfg = cfg
        for name in ("xyz", "rotation", "scales", "opacity", "color", "feature"):
            setattr(self, name, nn.Parameter(attributes[name].detach().float().clone()))
        self.register_buffer("anchor", attributes["anchor"].detach().float().clone())
        self.latent = nn.Parameter(latent.detach().float().clone())
        self.register_buffer("rest_vertices", geometry["rest_vertices"].float().clone())
        self.register_buffer("faces", geometry["faces"].long().clone())
        for name in BASIS_BUFFERS:
            self.register_buffer(name, geometry[name].float().clone())
        self.register_buffer("bound_faces", anchored_faces(self.rest_vertices, self.faces, self.anchor),
                             persistent=False)
        self.dynamic = make_dynamic_decoder(cfg)
        if self.feature.shape[1] != cfg.embedding_dim or self.latent.shape[0] != cfg.latent_dim:
            raise ValueError(f"embedding {self.feature.shape[1]} / latent {self.latent.shape[0]} channels, but the "
                             f"config says {cfg.embedding_dim} / {cfg.latent_dim}")

    # ---------------------------------------------------------------------------------------- creation
    @classmethod
    def initialise(cls, cfg: Any, device: torch.device) -> "PriorAvatar":
        raise ConfigError("a 'prior' avatar is made by fit_oneshot.py from a trained prior: set "
                          "load_gaussianhead_checkpoint to its prior_avatar_latest (or .cgha) file")

    @classmethod
    def from_state_dict(cls, model_cfg: PriorModelConfig, state: Mapping[str, torch.Tensor]) -> "PriorAvatar":
        attributes = {name: state[name] for name in ("xyz", "rotation", "scales", "opacity", "color", "feature",
                                                    "anchor")}
        geometry = {name: state[name] for name in ("rest_vertices", "faces") + BASIS_BUFFERS}
        return cls(model_cfg, attributes, state["latent"], geometry)

    @classmethod
    @torch.no_grad()
    def from_prior(cls, prior: GaussianPrior, latent: torch.Tensor, shape_code: torch.Tensor) -> "PriorAvatar":
        """The avatar the prior decodes for an identity latent [Z] and face-model code [C]: renders as the prior
        does for that identity (tests/test_prior.py checks it)."""
        rest = prior.rest_vertices(shape_code)
        frames = bound_frames(rest[None], prior.bound_faces)
        xyz, rotation, scales = canonical_from_local(frames, *prior.local_attributes(latent))
        static = prior.decode_static(latent)
        attributes = {"xyz": xyz, "rotation": rotation, "scales": scales.log(),
                      "opacity": static["opacity"][0] + OPACITY_BIAS, "color": static["color"][0],
                      "feature": prior.embedding, "anchor": frames.origin[0]}
        geometry = {"rest_vertices": rest, "faces": prior.faces,
                    **{name: getattr(prior, name) for name in BASIS_BUFFERS}}
        avatar = cls(prior.cfg, attributes, latent, geometry).to(prior.embedding.device)
        avatar.dynamic.load_state_dict(prior.dynamic.state_dict())
        return avatar

    # ------------------------------------------------------------------------------------------- shape
    @property
    def color_dim(self) -> int:
        return 3

    @property
    def expression_dim(self) -> int:
        return self.blend.shape[0]

    def canonical_attributes(self) -> Dict[str, torch.Tensor]:
        return {"xyz": self.xyz, "rotation": self.rotation, "scales": self.scales, "opacity": self.opacity,
                "color": self.color, "feature": self.feature, "anchor": self.anchor}

    # ------------------------------------------------------------------------------------------ posing
    def generate(self, expression: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor,
                 pose_code: Optional[torch.Tensor] = None,
                 attributes: Optional[Dict[str, torch.Tensor]] = None) -> Gaussians:
        if expression.ndim != 2 or expression.shape[1] != self.expression_dim:
            raise ValueError(f"expected expression [B, {self.expression_dim}], got {list(expression.shape)}")
        params = {**self.canonical_attributes(), **(attributes or {})}
        neutral = bound_frames(self.rest_vertices[None], self.bound_faces)
        local_means = local_means_of(neutral, torch.arange(self.num_gaussians, device=self.xyz.device),
                                     params["xyz"][None])
        to_local = matrix_to_quaternion(neutral.rotation.transpose(-1, -2))
        local_quats = quaternion_multiply(to_local, nn.functional.normalize(params["rotation"], dim=-1)[None])
        local_scales = torch.exp(params["scales"])[None] / neutral.scale[..., None]
        rotation = (pose if pose_code is None else pose_code)[:, :ROTATION_DIM]
        dynamic = split_outputs(self.dynamic(params["feature"], dynamic_condition(self.latent, expression, rotation)),
                                DYNAMIC_OUTPUTS)
        vertices = expressed_vertices(self.rest_vertices, expression_basis(self), expression, pose, scale)
        return posed_gaussians(bound_frames(vertices, self.bound_faces), local_means + dynamic["offset"],
                               local_quats, local_scales, torch.sigmoid(params["opacity"][None, :, 0]),
                               torch.sigmoid(params["color"][None] + dynamic["color"]), {})
