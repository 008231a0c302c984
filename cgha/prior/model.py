"""The Gaussian prior over identities (HeadGAP / OSGAP's idea on GaussianAvatars' binding): N Gaussians bound to
triangles of the face model's mesh, the same triangles and per-Gaussian embeddings for every identity, a latent per
identity (a learned code per training identity, the auto-decoder, or an image encoder's output: `identity_source`)
and two shared decoders:

- identity decoder: (embedding_i, latent) -> Gaussian i's local offset, rotation, log-scale, opacity and colour;
- expression decoder: (embedding_i, latent, expression, head rotation) -> colour and offset changes (mouth interior,
  shading under the world-fixed light).

Each identity's mesh is the face model's, with the identity code fitted to its landmarks (cgha.prior.geometry), so
the Gaussians follow the expression and pose through their triangles (cgha.rigged.binding).

    prior = GaussianPrior.create(model_cfg, geometry, shape_codes, identities, face_model_meta)
    latent = prior.training_latent(position, images)       # the code, or the encoder's latent of images [1, 3, R, R]
    gaussians = prior.identity_gaussians(latent, shape_code, exp, pose, scale)     # [V, N] for V views
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import nn

from cgha.avatar.gaussians import Gaussians
from cgha.errors import CheckpointError, ConfigError
from cgha.prior.config import PriorModelConfig
from cgha.prior.decoder import ConditionedMLP
from cgha.prior.encoder import ImageEncoder
from cgha.prior.geometry import GEOMETRY_BUFFERS, expressed_vertices, expression_basis
from cgha.prior.posing import (DYNAMIC_OUTPUTS, OPACITY_BIAS, STATIC_OUTPUTS, bound_frames, local_rotation, posed_gaussians,
                               split_outputs)
from cgha.rigged.binding import triangle_frames

ROTATION_DIM = 3  # the expression decoder reads the head's axis-angle rotation (shading under a world-fixed light)
_EMBEDDING_INIT_STD = 0.1
_LATENT_INIT_STD = 0.01  # DeepSDF's initialisation of auto-decoder codes
# A Gaussian covers 1/N of the head's area; its initial standard deviation is this fraction of the spacing.
_SCALE_OF_SPACING = 0.5


def choose_triangles(vertices: torch.Tensor, faces: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """`count` distinct triangle indices [count] drawn with probability proportional to their area on vertices
    [V, 3] (faces [F, 3]), seeded; sorted."""
    if count > faces.shape[0]:
        raise ConfigError(f"'model.options.num_gaussians' is {count} but the face model has {faces.shape[0]} "
                          f"triangles (one Gaussian per triangle at most)")
    corners = vertices[faces]
    areas = 0.5 * torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]).norm(dim=-1)
    generator = torch.Generator().manual_seed(seed)
    return torch.multinomial(areas.double(), count, replacement=False, generator=generator).sort().values


def make_dynamic_decoder(cfg: PriorModelConfig) -> ConditionedMLP:
    """The expression decoder: (embedding, [latent, expression, head rotation]) -> DYNAMIC_OUTPUTS."""
    return ConditionedMLP(cfg.embedding_dim, cfg.latent_dim + cfg.exp_coeffs_dim + ROTATION_DIM, cfg.hidden_dim,
                          cfg.dynamic_layers, sum(width for _, width in DYNAMIC_OUTPUTS))


def dynamic_condition(latent: torch.Tensor, exp: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """The expression decoder's per-sample input [B, Z + D + 3] of a latent [Z], exp [B, D], rotations [B, 3]."""
    return torch.cat([latent[None].expand(exp.shape[0], -1), exp, rotation], dim=-1)


class GaussianPrior(nn.Module):
    """Shared decoders, per-Gaussian embeddings and the identities' latents: K learned codes (`latents` [K, Z],
    identity_source 'codes') or an image encoder (`encoder`, identity_source 'encoder'); see the module docstring.

    Buffers: the face model's geometry (GEOMETRY_BUFFERS), shape_codes [K, C] (each identity's face-model code),
    bound_faces [N, 3] (Gaussian i's triangle), base_log_scale [N] (log of its initial size in triangle units).
    Metadata (`meta`): identity names, the face model's key and expression basis.
    """

    def __init__(self, cfg: PriorModelConfig, geometry: Mapping[str, torch.Tensor], shape_codes: torch.Tensor,
                 bound_faces: torch.Tensor, base_log_scale: torch.Tensor, meta: Dict[str, Any]):
        super().__init__()
        self.cfg, self.meta = cfg, dict(meta)
        for name in GEOMETRY_BUFFERS:
            self.register_buffer(name, geometry[name].clone())
        self.register_buffer("shape_codes", shape_codes.float().clone())
        self.register_buffer("bound_faces", bound_faces.long().clone())
        self.register_buffer("base_log_scale", base_log_scale.float().clone())
        count, identities = bound_faces.shape[0], shape_codes.shape[0]
        generator = torch.Generator().manual_seed(cfg.seed)
        self.embedding = nn.Parameter(_EMBEDDING_INIT_STD * torch.randn(count, cfg.embedding_dim, generator=generator))
        codes = _LATENT_INIT_STD * torch.randn(identities, cfg.latent_dim, generator=generator)
        # Only the parameters that the loss reaches exist (DDP refuses parameters without a gradient): the codes
        # or the encoder, never both.
        if not self.uses_encoder:
            self.latents = nn.Parameter(codes)
        # Layer initialisation draws from torch's global generator: seed a private copy of it, so that every
        # process (and a 1-process run) starts from the same weights without touching the caller's sequence.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.static = ConditionedMLP(cfg.embedding_dim, cfg.latent_dim, cfg.hidden_dim, cfg.static_layers,
                                         sum(width for _, width in STATIC_OUTPUTS))
            self.dynamic = make_dynamic_decoder(cfg)
            if self.uses_encoder:
                self.encoder = ImageEncoder(cfg.latent_dim, cfg.encoder_width, cfg.encoder_resolution)

    # ------------------------------------------------------------------------------------------ creation
    @classmethod
    def create(cls, cfg: PriorModelConfig, geometry: Mapping[str, torch.Tensor], shape_codes: torch.Tensor,
               meta: Dict[str, Any]) -> "GaussianPrior":
        """A fresh prior over len(shape_codes) identities: triangles chosen on the face model's mean mesh."""
        mean, faces = geometry["mean"], geometry["faces"]
        chosen = choose_triangles(mean, faces, cfg.num_gaussians, cfg.seed)
        bound_faces = faces[chosen]
        corners = mean[faces]
        total_area = 0.5 * torch.linalg.cross(corners[:, 1] - corners[:, 0],
                                              corners[:, 2] - corners[:, 0]).norm(dim=-1).sum()
        sigma = _SCALE_OF_SPACING * math.sqrt(float(total_area) / cfg.num_gaussians)
        triangle_scale = triangle_frames(mean[None], bound_faces).scale[0]
        return cls(cfg, geometry, shape_codes, bound_faces, torch.log(sigma / triangle_scale), meta)

    @classmethod
    def from_checkpoint(cls, saved: Mapping[str, Any], source: str) -> "GaussianPrior":
        """The prior in a checkpoint written by `checkpoint()`; CheckpointError naming `source` otherwise."""
        from cgha.config import config_from_dict

        try:
            cfg = config_from_dict(PriorModelConfig, saved["model_config"], f"{source} model_config")
            state = saved["state"]
            geometry = {name: state[name] for name in GEOMETRY_BUFFERS}
            prior = cls(cfg, geometry, state["shape_codes"], state["bound_faces"], state["base_log_scale"],
                        saved["meta"])
            prior.load_state_dict(state)
        except (KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(f"{source}: not a prior checkpoint ({type(error).__name__}: "
                                  f"{str(error).splitlines()[0]})") from None
        return prior

    def checkpoint(self) -> Dict[str, Any]:
        """Everything needed to rebuild this prior, pickle-free: state dict, model options and metadata."""
        import dataclasses

        return {"state": self.state_dict(), "model_config": dataclasses.asdict(self.cfg), "meta": dict(self.meta)}

    # ------------------------------------------------------------------------------------------- shape
    @property
    def num_identities(self) -> int:
        return self.shape_codes.shape[0]

    @property
    def uses_encoder(self) -> bool:
        return self.cfg.identity_source == "encoder"

    # ------------------------------------------------------------------------------------------ latents
    def training_latent(self, position: int, images: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Latent [Z] of training identity `position`: its learned code, or the encoder's latent of images
        [B, 3, R, R] of it (averaged over B)."""
        if not self.uses_encoder:
            return self.latents[position]
        if images is None:
            raise ValueError("an encoder prior needs an image of the identity to give its latent")
        return self.encoder(images).mean(dim=0)

    def starting_latent(self, images: torch.Tensor) -> torch.Tensor:
        """Where a new person's latent [Z] starts, and what inversion pulls it toward, given their images
        [B, 3, R, R]: the training codes' mean (auto-decoder) or the encoder's latent of the images (averaged)."""
        if self.uses_encoder:
            return self.encoder(images).mean(dim=0)
        return self.latents.mean(dim=0)

    @property
    def num_gaussians(self) -> int:
        return self.bound_faces.shape[0]

    def rest_vertices(self, shape_code: torch.Tensor) -> torch.Tensor:
        """Neutral canonical vertices [V, 3] of a face-model identity code [C]."""
        return self.mean + torch.einsum("c,cvk->vk", shape_code, self.components)

    # ------------------------------------------------------------------------------------------ decoding
    def decode_static(self, latent: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Identity decoder outputs for a latent [Z] -> {name: [1, N, width]} (STATIC_OUTPUTS)."""
        return split_outputs(self.static(self.embedding, latent[None]), STATIC_OUTPUTS)

    def decode_dynamic(self, latent: torch.Tensor, exp: torch.Tensor, rotation: torch.Tensor
                       ) -> Dict[str, torch.Tensor]:
        """Expression decoder outputs for a latent [Z], expressions exp [B, D] and head rotations [B, 3] ->
        {name: [B, N, width]} (DYNAMIC_OUTPUTS)."""
        return split_outputs(self.dynamic(self.embedding, dynamic_condition(latent, exp, rotation)), DYNAMIC_OUTPUTS)

    def local_attributes(self, latent: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(local offsets, unit local rotations, local scales), each [1, N, ...], of an identity latent [Z]."""
        static = self.decode_static(latent)
        scales = torch.exp(self.base_log_scale[None, :, None] + static["log_scale"])
        return static["offset"], local_rotation(static["rotation"]), scales

    def identity_gaussians(self, latent: torch.Tensor, shape_code: torch.Tensor, exp: torch.Tensor,
                           pose: torch.Tensor, scale: torch.Tensor) -> Gaussians:
        """World Gaussians [B, N] of one identity (latent [Z], face-model code [C]) in B frames: exp [B, D],
        pose [B, 6], scale [B, 1]. extras["offset_sigma"] [1, N, 3]: the identity offsets in units of each
        Gaussian's base size (what the offset regulariser penalises)."""
        static = self.decode_static(latent)
        dynamic = self.decode_dynamic(latent, exp, pose[:, :ROTATION_DIM])
        vertices = expressed_vertices(self.rest_vertices(shape_code), expression_basis(self), exp, pose, scale)
        frames = bound_frames(vertices, self.bound_faces)
        scales = torch.exp(self.base_log_scale[None, :, None] + static["log_scale"])
        offset_sigma = static["offset"] / torch.exp(self.base_log_scale)[None, :, None]
        return posed_gaussians(frames, static["offset"] + dynamic["offset"], local_rotation(static["rotation"]),
                               scales, torch.sigmoid(static["opacity"][..., 0] + OPACITY_BIAS),
                               torch.sigmoid(static["color"] + dynamic["color"]), {"offset_sigma": offset_sigma})

    def identity_names(self) -> List[str]:
        return list(self.meta.get("identities", []))

