"""GaussianHeadModule: GHA's stage-2 dynamic Gaussian head.

Per Gaussian: canonical position `xyz`, a 128-d `feature`, log-`scales`, `rotation` (wxyz, unnormalised) and
`opacity` (logit). `generate()` maps a batch of (expression, head pose) codes to posed Gaussians: colour (32
channels), attribute offsets and position offsets come from expression MLPs near the face landmarks and from
pose MLPs far from them (the same distance blend as the mesh head), then the head pose maps them to the world.

Differences from GHA's code, on purpose (docs/gaussianhead.md):
- no per-sample Python loop: every MLP runs once over the batch, on the Gaussians its blend weight reaches;
- quaternions are normalised over their 4 components (GHA's `F.normalize(rotation)` normalised over the
  Gaussians, dim 1 of [B, N, 4]);
- the head rotation is composed with each Gaussian's rotation by a quaternion product (no matrix round trip);
- generate() is split in two: `reach()` picks the Gaussians each branch runs on (GHA's masks, with a host
  synchronisation for their counts) and `forward()` does the rest at fixed shapes, which training replays from
  CUDA graphs (`use_cuda_graphs`): at GHA scale it is a few hundred small kernels, launch-bound on the host.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, NamedTuple, Optional, Tuple

import torch
from torch import nn

from cgha.avatar.gaussians import Gaussians
from cgha.avatar.model import AvatarModel, register_model
from cgha.errors import CheckpointError, ConfigError
from cgha.module.mesh_head import MeshHeadModule, meshhead_exp_dim
from cgha.network.embedding import PositionalEmbedding
from cgha.network.mlp import MLP
from cgha.options import (GAUSSIAN_ATTRIBUTE_DIM, GAUSSIAN_FEATURE_DIM, POSE_DIM, check_mlp, check_thresholds,
                          embedding_dim, option)
from cgha.recorder.checkpoint import load_file, load_state_dict_into
from cgha.utils.cuda_graphs import GraphedForward, replays
from cgha.utils.knn import mean_sq_distance_to_3nn, nearest_sq_distance
from cgha.utils.rotations import axis_angle_to_quaternion, quaternion_product_matrix, unit_quaternion_to_matrix

INITIAL_OPACITY = 0.3
MOUTH_LANDMARKS = slice(48, 66)  # iBUG-68 outer + inner lips (GHA uses 48..65)
MOUTH_SPREAD = 1.6
ATTRIBUTE_ORDER = ("xyz", "feature", "scales", "rotation", "opacity")  # forward()'s leading arguments
ATTRIBUTE_SLICES = {"scales": slice(0, 3), "rotation": slice(3, 7), "opacity": slice(7, 8)}
# MLPs whose weights the Gaussian head inherits from a trained mesh head (same input/output widths).
INHERITED_MLPS = ("exp_color_mlp", "pose_color_mlp", "exp_deform_mlp", "pose_deform_mlp")
NETWORKS = ("exp_color_mlp", "pose_color_mlp", "exp_attributes_mlp", "pose_attributes_mlp", "exp_deform_mlp",
            "pose_deform_mlp")
# GHA's learning rates of the per-Gaussian parameters relative to lr_net.
RELATIVE_LR = {"xyz": 0.1, "feature": 0.1, "scales": 0.3, "rotation": 0.1, "opacity": 1.0}


@dataclass
class GaussianHeadModuleConfig:
    """Stage-2 Gaussian head (GHA keys)."""
    num_add_mouth_points: int = option(3000, "points added around the mouth landmarks at initialisation", min=0)
    exp_color_mlp: List[int] = option([192, 256, 256, 32], "feature+exp -> color")
    pose_color_mlp: List[int] = option([182, 128, 32], "feature+pose-emb -> color")
    exp_attributes_mlp: List[int] = option([192, 256, 256, 256, 8], "feature+exp -> attribute offsets")
    pose_attributes_mlp: List[int] = option([182, 128, 128, 8], "feature+pose-emb -> attribute offsets")
    exp_deform_mlp: List[int] = option([91, 256, 256, 256, 256, 256, 3], "pos-emb+exp -> xyz offset")
    pose_deform_mlp: List[int] = option([81, 256, 256, 3], "pos-emb+pose-emb -> xyz offset")
    exp_coeffs_dim: int = option(64, "dimension of the expression coefficients", min=1)
    pos_freq: int = option(4, "positional-encoding frequencies", min=0)
    dist_threshold_near: float = option(0.1, "landmark distance below which expression MLPs act fully", min=0.0)
    dist_threshold_far: float = option(0.25, "landmark distance beyond which pose MLPs act fully", min=0.0)
    deform_scale: float = option(0.3, "scale of the position offsets", min=0.0)
    attributes_scale: float = option(0.2, "scale of the attribute offsets", min=0.0)

    def check(self, color_channels: Optional[int], prefix: str = "gaussianheadmodule") -> None:
        """The MLP widths against exp_coeffs_dim, pos_freq and the colour channels the post-render step takes
        (None: any width of at least 3, the RGB channels, the same for both colour MLPs)."""
        channels = self.exp_color_mlp[-1] if color_channels is None else color_channels
        if channels < 3:
            raise ConfigError(f"'{prefix}.exp_color_mlp' outputs {channels} colour channels; at least 3 (RGB) needed")
        pos = embedding_dim(3, self.pos_freq)
        pose = embedding_dim(POSE_DIM, self.pos_freq)
        feature, exp = GAUSSIAN_FEATURE_DIM, self.exp_coeffs_dim
        check_mlp(f"{prefix}.exp_color_mlp", self.exp_color_mlp, feature + exp, channels,
                  f"feature {feature} + exp_coeffs_dim {exp}")
        check_mlp(f"{prefix}.pose_color_mlp", self.pose_color_mlp, feature + pose, channels,
                  f"feature {feature} + embedded pose {pose}")
        check_mlp(f"{prefix}.exp_attributes_mlp", self.exp_attributes_mlp, feature + exp, GAUSSIAN_ATTRIBUTE_DIM,
                  f"feature {feature} + exp_coeffs_dim {exp}")
        check_mlp(f"{prefix}.pose_attributes_mlp", self.pose_attributes_mlp, feature + pose, GAUSSIAN_ATTRIBUTE_DIM,
                  f"feature {feature} + embedded pose {pose}")
        check_mlp(f"{prefix}.exp_deform_mlp", self.exp_deform_mlp, pos + exp, 3,
                  f"embedded xyz {pos} + exp_coeffs_dim {exp}")
        check_mlp(f"{prefix}.pose_deform_mlp", self.pose_deform_mlp, pos + pose, 3,
                  f"embedded xyz {pos} + embedded pose {pose}")
        check_thresholds(prefix, self.dist_threshold_near, self.dist_threshold_far)



def mouth_points(landmarks: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """GHA's extra Gaussians inside the mouth: uniform in a box around the lip landmarks, pushed to their back.

    landmarks [K >= 66, 3] canonical -> [count, 3].
    """
    lips = landmarks[MOUTH_LANDMARKS]
    centre = lips.mean(0, keepdim=True)
    centre[:, 2] = lips[:, 2].min()  # the face looks toward +z: the smallest z is deepest in the mouth
    extent = (lips - centre).abs().amax(0)
    noise = torch.rand(count, 3, generator=generator, device=landmarks.device, dtype=landmarks.dtype)
    return (noise - 0.5) * MOUTH_SPREAD * extent + centre


class Reach(NamedTuple):
    """The Gaussians each branch's MLPs run on (shared by the batch) and their blend weights."""
    exp_index: torch.Tensor  # [Ne] int64: Gaussians closer than dist_threshold_far to a landmark
    exp_weight: torch.Tensor  # [Ne, 1] in [0, 1]: 1 up to dist_threshold_near, 0 at dist_threshold_far
    pose_index: torch.Tensor  # [Np] int64: Gaussians farther than dist_threshold_near
    pose_weight: torch.Tensor  # [Np, 1]: 1 - the expression weight


class ReachPadding:
    """Row counts for each branch of a `Reach` that rarely change, so that one graph capture serves many training
    steps.

    A branch's rows are its Gaussian count rounded up to GRANULE, kept while the count stays no more than SLACK
    below them: Gaussians drifting back and forth across a distance threshold do not trigger new captures. Padding
    rows select Gaussian 0 with weight 0, so they add exact zeros to it and contribute zero gradients.
    """

    GRANULE = 1024
    SLACK = 4096

    def __init__(self) -> None:
        self.rows: List[int] = [0, 0]  # expression branch, pose branch

    def _rows(self, branch: int, count: int) -> int:
        rows = self.rows[branch]
        if rows == 0 or count > rows or count + self.SLACK < rows:
            rows = self.rows[branch] = max(1, -(-count // self.GRANULE)) * self.GRANULE
        return rows

    def __call__(self, exp_count: int, pose_count: int) -> Tuple[int, int]:
        """Rows for branches of exp_count and pose_count Gaussians: -> (expression rows, pose rows)."""
        return self._rows(0, exp_count), self._rows(1, pose_count)


@register_model
class GaussianHeadModule(AvatarModel):
    """GHA's dynamic Gaussian head, the avatar model `gha`. Shapes: B frames, N Gaussians, D expression
    coefficients, C colour channels (32 in GHA)."""

    kind = "gha"
    Config = GaussianHeadModuleConfig
    compact_groups = {"scale_rot": ("scales", "rotation"), "scale": ("scales",), "rotation": ("rotation",),
                      "feature": ("feature",)}
    default_compact_groups = ("scale_rot", "feature")
    unit_norm_attributes = ("rotation",)
    exact_buffers = ("landmarks_3d_neutral",)

    def __init__(self, cfg: GaussianHeadModuleConfig, xyz: torch.Tensor, feature: torch.Tensor,
                 landmarks_3d_neutral: torch.Tensor, scales: Optional[torch.Tensor] = None):
        super().__init__()
        if xyz.ndim != 2 or xyz.shape[1] != 3 or feature.shape != (xyz.shape[0], GAUSSIAN_FEATURE_DIM):
            raise ValueError(f"xyz must be [N, 3] and feature [N, {GAUSSIAN_FEATURE_DIM}], "
                             f"got {list(xyz.shape)} and {list(feature.shape)}")
        self.cfg = cfg
        self.xyz = nn.Parameter(xyz.detach().clone().float())
        self.feature = nn.Parameter(feature.detach().clone().float())
        self.register_buffer("landmarks_3d_neutral", landmarks_3d_neutral.detach().clone().float())
        if scales is None:  # a fresh start: isotropic, from the spacing (3DGS); loading passes the saved ones
            spacing = mean_sq_distance_to_3nn(self.xyz.detach()).clamp_min(1e-7).sqrt()
            scales = spacing.log()[:, None].repeat(1, 3)
        self.scales = nn.Parameter(scales.detach().clone().float())
        rotation = torch.zeros(xyz.shape[0], 4)
        rotation[:, 0] = 1.0
        self.rotation = nn.Parameter(rotation.to(xyz.device))
        opacity = torch.full((xyz.shape[0], 1), INITIAL_OPACITY, device=xyz.device)
        self.opacity = nn.Parameter(torch.logit(opacity))

        self.exp_color_mlp = MLP(cfg.exp_color_mlp)
        self.pose_color_mlp = MLP(cfg.pose_color_mlp)
        self.exp_attributes_mlp = MLP(cfg.exp_attributes_mlp)
        self.pose_attributes_mlp = MLP(cfg.pose_attributes_mlp)
        self.exp_deform_mlp = MLP(cfg.exp_deform_mlp, last_op=nn.Tanh())
        self.pose_deform_mlp = MLP(cfg.pose_deform_mlp, last_op=nn.Tanh())
        self.pos_embedding = PositionalEmbedding(3, cfg.pos_freq)
        self.pose_embedding = PositionalEmbedding(POSE_DIM, cfg.pos_freq)
        self._graphed_forward: Optional[GraphedForward] = None
        self._reach_padding: Optional[ReachPadding] = None
        # bf16 autocast for the MLPs on CUDA (the trainer sets it from train.amp); the per-Gaussian attributes,
        # the blend and the pose transform stay float32.
        self.amp = False

    @property
    def num_gaussians(self) -> int:
        return self.xyz.shape[0]

    @property
    def color_dim(self) -> int:
        return self.cfg.exp_color_mlp[-1]

    @property
    def expression_dim(self) -> int:
        return self.cfg.exp_coeffs_dim

    # ------------------------------------------------------------------------------------------- config
    @classmethod
    def config_from(cls, cfg) -> GaussianHeadModuleConfig:
        """GHA's own section, so GHA's configs keep working."""
        return cfg.gaussianheadmodule

    @classmethod
    def config_expression_dim(cls, model_cfg: GaussianHeadModuleConfig) -> Tuple[int, str]:
        return model_cfg.exp_coeffs_dim, "gaussianheadmodule.exp_coeffs_dim"

    @classmethod
    def check_config(cls, model_cfg: GaussianHeadModuleConfig, cfg, stage: Optional[str]) -> None:
        if cfg.model.options:
            raise ConfigError(f"'model.options' is {cfg.model.options}, but model.kind gha reads its options from "
                              f"the gaussianheadmodule section")
        channels = cfg.supresmodule.input_dim if cfg.model.post_render == "super_resolution" else None
        model_cfg.check(channels)
        if stage == "gaussianhead" and cfg.points.init == "model":
            mesh_exp = meshhead_exp_dim(cfg.meshheadmodule)
            if mesh_exp != model_cfg.exp_coeffs_dim:
                raise ConfigError(
                    f"'gaussianheadmodule.exp_coeffs_dim' is {model_cfg.exp_coeffs_dim} but the mesh head's MLPs "
                    f"take {mesh_exp} expression coefficients (meshheadmodule.exp_deform_mlp[0])")

    @classmethod
    def initialise(cls, cfg, device: torch.device) -> "GaussianHeadModule":
        """GHA's start: from the trained mesh head of `load_meshhead_checkpoint`."""
        mesh_path = cfg.load_meshhead_checkpoint
        if not mesh_path or not Path(mesh_path).is_file():
            raise CheckpointError(f"mesh-head checkpoint not found: '{mesh_path}' (load_meshhead_checkpoint); "
                                  "train the mesh head first with train_meshhead.py")
        state = load_file(mesh_path, "mesh-head checkpoint")
        if "landmarks_3d_neutral" not in state:
            raise CheckpointError(f"{mesh_path}: not a mesh-head checkpoint (no landmarks_3d_neutral)")
        mesh_head = MeshHeadModule(cfg.meshheadmodule, state["landmarks_3d_neutral"]).to(device)
        load_state_dict_into(mesh_head, mesh_head.without_grid_buffers(state), mesh_path, "mesh-head checkpoint")
        return cls.from_mesh_head(cls.config_from(cfg), mesh_head, seed=cfg.train.seed).to(device)

    @classmethod
    def from_point_cloud(cls, cfg, xyz: torch.Tensor, landmarks: torch.Tensor) -> "GaussianHeadModule":
        """MonoGaussianAvatar's start on GHA's networks: Gaussians at xyz [N, 3] with zero features (as GHA's mouth
        points), freshly initialised MLPs (no mesh head), and the subject's neutral landmarks [K, 3] for the
        expression/pose blend."""
        features = xyz.new_zeros(xyz.shape[0], GAUSSIAN_FEATURE_DIM)
        return cls(cls.config_from(cfg), xyz, features, landmarks)

    def parameter_groups(self, lr: float) -> List[Tuple[List[nn.Parameter], float]]:
        """GHA's learning rates: networks at lr, per-Gaussian tensors at GHA's fractions of it."""
        groups = [([getattr(self, name)], lr * fraction) for name, fraction in RELATIVE_LR.items()]
        groups.append(([p for name in NETWORKS for p in getattr(self, name).parameters()], lr))
        return groups

    def configure_training(self, amp: bool, cuda_graphs: bool) -> None:
        self.amp = amp
        if cuda_graphs:
            self.use_cuda_graphs()

    # ----------------------------------------------------------------------------------------- creation
    @classmethod
    def from_mesh_head(cls, cfg: GaussianHeadModuleConfig, mesh_head: MeshHeadModule, seed: int = 0
                       ) -> "GaussianHeadModule":
        """GHA's initialisation: the neutral mesh of the (once more subdivided) tet grid, its features, mouth points,
        and the mesh head's colour/deformation MLP weights."""
        with torch.no_grad():
            mesh = mesh_head.reconstruct_neutral(subdivide=True)
            landmarks = mesh_head.landmarks_3d_neutral.detach()
            generator = torch.Generator(device=landmarks.device)
            generator.manual_seed(seed)
            extra = mouth_points(landmarks, cfg.num_add_mouth_points, generator)
            xyz = torch.cat([mesh["verts"], extra])
            # The mesh head's features went through tanh; the Gaussian head applies tanh itself.
            feature = torch.atanh(mesh["features"].clamp(-1 + 1e-6, 1 - 1e-6))
            feature = torch.cat([feature, feature.new_zeros(extra.shape[0], feature.shape[1])])
        module = cls(cfg, xyz, feature, landmarks)
        for name in INHERITED_MLPS:
            getattr(module, name).load_state_dict(getattr(mesh_head, name).state_dict())
        return module

    @classmethod
    def from_state_dict(cls, cfg: GaussianHeadModuleConfig, state: Mapping[str, torch.Tensor]) -> "GaussianHeadModule":
        """An empty module shaped like a saved one (N Gaussians, K landmarks), ready for `load_state_dict`."""
        for key in ("xyz", "feature", "landmarks_3d_neutral"):
            if key not in state or not isinstance(state[key], torch.Tensor):
                raise KeyError(key)
        scales = state.get("scales")
        if not isinstance(scales, torch.Tensor) or scales.shape != (state["xyz"].shape[0], 3):
            raise ValueError(f"scales must be a [{state['xyz'].shape[0]}, 3] tensor")
        # The saved scales, not the 3-NN spacing: that search over every Gaussian dominated loading at GHA scale.
        return cls(cfg, state["xyz"], state["feature"], state["landmarks_3d_neutral"], scales)

    # --------------------------------------------------------------------------------------- generation
    def canonical_attributes(self) -> Dict[str, torch.Tensor]:
        """The per-Gaussian parameters generate() reads; compaction substitutes quantised versions of them."""
        return {"xyz": self.xyz, "feature": self.feature, "scales": self.scales, "rotation": self.rotation,
                "opacity": self.opacity}

    def reach(self, xyz: torch.Tensor, padding: Optional[ReachPadding] = None) -> Reach:
        """Which Gaussians each branch's MLPs run on and their blend weights, from the squared distance of the
        canonical positions xyz [N, 3] to the nearest neutral landmark (GHA's masks; no gradient flows through
        them). With `padding`, each branch has its rows: Gaussian 0 with weight 0 fills the rest.

        Costs one host synchronisation (the two counts decide the shapes).
        """
        with torch.no_grad():
            dist_sq = nearest_sq_distance(xyz, self.landmarks_3d_neutral)  # [N]
            near, far = self.cfg.dist_threshold_near, self.cfg.dist_threshold_far
            exp_mask, pose_mask = dist_sq < far, dist_sq > near
            exp_count, pose_count = torch.stack([exp_mask.sum(), pose_mask.sum()]).tolist()
            exp_rows, pose_rows = (exp_count, pose_count) if padding is None else padding(exp_count, pose_count)
            # nonzero_static: the index list at a size known in advance, without a second synchronisation.
            exp_index = torch.nonzero_static(exp_mask, size=exp_rows, fill_value=0)[:, 0]
            pose_index = torch.nonzero_static(pose_mask, size=pose_rows, fill_value=0)[:, 0]
            exp_weight = ((far - dist_sq) / (far - near)).clamp(0.0, 1.0)  # [N]
            exp_weights = exp_weight.index_select(0, exp_index)[:, None]
            pose_weights = 1.0 - exp_weight.index_select(0, pose_index)[:, None]
            exp_weights[exp_count:] = 0.0
            pose_weights[pose_count:] = 0.0
            return Reach(exp_index, exp_weights, pose_index, pose_weights)

    def use_cuda_graphs(self, enabled: bool = True) -> "GaussianHeadModule":
        """Replay generate()'s networks (the part after `reach`) from CUDA graphs in training steps.

        Applies when the module is in training mode, gradients are enabled and the inputs are on CUDA; evaluation
        and CPU runs stay eager. The branches' Gaussian counts are padded (`ReachPadding`) so that one capture
        serves many steps. Between steps, gradients must be reset with `zero_grad(set_to_none=True)` (see
        cgha/utils/cuda_graphs.py). Returns self.
        """
        if enabled:
            attributes = self.canonical_attributes()  # forward() receives these as arguments
            networks = [name for name, _ in self.named_parameters() if name not in attributes]
            self._graphed_forward = GraphedForward(self, networks)
            self._reach_padding = ReachPadding()
        else:
            self._graphed_forward = self._reach_padding = None
        return self

    def generate(self, exp_coeff: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor,
                 pose_code: Optional[torch.Tensor] = None,
                 attributes: Optional[Dict[str, torch.Tensor]] = None) -> Gaussians:
        """Posed Gaussians of a batch of frames.

        exp_coeff [B, D], pose [B, 6] (head transform), scale [B, 1], pose_code [B, 6] fed to the pose MLPs
        (default: pose), attributes: overrides of `canonical_attributes()` (same shapes).
        Returns Gaussians with features = colour [B, N, C] and extras["exp_deform"] [B, N, 3] (zero where the
        expression weight is 0).
        """
        if exp_coeff.ndim != 2 or exp_coeff.shape[1] != self.cfg.exp_coeffs_dim:
            raise ValueError(f"exp_coeff must be [B, {self.cfg.exp_coeffs_dim}] (gaussianheadmodule.exp_coeffs_dim), "
                             f"got {list(exp_coeff.shape)}")
        params = {**self.canonical_attributes(), **(attributes or {})}
        inputs = (*(params[name] for name in ATTRIBUTE_ORDER), exp_coeff, pose, scale,
                  pose if pose_code is None else pose_code)
        if replays(self._graphed_forward, exp_coeff):
            out = self._graphed_forward(*inputs, self.reach(params["xyz"], self._reach_padding))
        else:
            out = self(*inputs, self.reach(params["xyz"]))
        return Gaussians(means=out["xyz"], quats=out["rotation"], scales=out["scales"], opacities=out["opacity"][..., 0],
                         features=out["color"], extras={"exp_deform": out["exp_deform"]})

    def _network(self, mlp: MLP, x: torch.Tensor) -> torch.Tensor:
        """mlp(x), under bf16 autocast when `amp` is set and x is on CUDA (callers' arithmetic promotes the result
        back to float32)."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp and x.is_cuda, cache_enabled=False):
            return mlp(x)

    def _branch(self, feature: torch.Tensor, xyz: torch.Tensor, index: torch.Tensor, weight: torch.Tensor,
                code: torch.Tensor, mlps) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One side of the blend on the Gaussians `index` [n] with weights [n, 1]: its colour and attribute MLPs read
        [tanh feature, code], its deformation MLP [embedded xyz, code]; code [B, D] is the expression or the
        embedded pose. Returns the weighted colour [B, n, C], attribute offsets [B, n, 8] and deformation [B, n, 3].
        """
        batch = code.shape[0]
        code = code[:, None, :].expand(-1, index.numel(), -1)
        # index_select, not indexing: its backward is an index_add, where advanced indexing's sorts the indices
        # (one of the costliest steps of the backward pass on a GPU).
        appearance = torch.cat([feature.index_select(0, index).expand(batch, -1, -1), code], -1)
        position = torch.cat([self.pos_embedding(xyz.index_select(0, index)).expand(batch, -1, -1), code], -1)
        color_mlp, attributes_mlp, deform_mlp = mlps
        return (self._network(color_mlp, appearance) * weight, self._network(attributes_mlp, appearance) * weight,
                self._network(deform_mlp, position) * weight)

    def forward(self, xyz: torch.Tensor, feature: torch.Tensor, scales: torch.Tensor, rotation: torch.Tensor,
                opacity: torch.Tensor, exp_coeff: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor,
                pose_code: torch.Tensor, reach: Reach) -> Dict[str, torch.Tensor]:
        """generate() after `reach`: fixed shapes and no host synchronisation, so that it can be graph-captured.

        Per-Gaussian xyz [N, 3], feature [N, 128] (before tanh), scales [N, 3] (log), rotation [N, 4], opacity
        [N, 1] (logit); exp_coeff [B, D], pose [B, 6], scale [B, 1], pose_code [B, 6]; reach from `reach()`,
        possibly padded. Returns generate()'s dict.
        """
        batch, count = exp_coeff.shape[0], xyz.shape[0]
        feature = torch.tanh(feature)
        exp_index, exp_weight, pose_index, pose_weight = reach
        exp_color, exp_attributes, exp_deform = self._branch(
            feature, xyz, exp_index, exp_weight, exp_coeff,
            (self.exp_color_mlp, self.exp_attributes_mlp, self.exp_deform_mlp))
        pose_color, pose_attributes, pose_deform = self._branch(
            feature, xyz, pose_index, pose_weight, self.pose_embedding(pose_code),
            (self.pose_color_mlp, self.pose_attributes_mlp, self.pose_deform_mlp))

        def scatter_sum(width: int, *parts) -> torch.Tensor:  # (index [n], value [B, n, width]) pairs -> [B, N, width]
            total = xyz.new_zeros(batch, count, width)
            for index, value in parts:
                total = total.index_add(1, index, value)
            return total

        color = scatter_sum(self.color_dim, (exp_index, exp_color), (pose_index, pose_color))
        attributes_delta = scatter_sum(8, (exp_index, exp_attributes), (pose_index, pose_attributes))
        exp_deform = scatter_sum(3, (exp_index, exp_deform))
        xyz_delta = scatter_sum(3, (pose_index, pose_deform)) + exp_deform

        step = self.cfg.attributes_scale
        scales = torch.exp(scales + attributes_delta[..., ATTRIBUTE_SLICES["scales"]] * step)
        rotation = rotation + attributes_delta[..., ATTRIBUTE_SLICES["rotation"]] * step
        rotation = torch.nn.functional.normalize(rotation, dim=-1)
        opacity = torch.sigmoid(opacity + attributes_delta[..., ATTRIBUTE_SLICES["opacity"]] * step)
        points = xyz + xyz_delta * self.cfg.deform_scale

        head_quaternion = axis_angle_to_quaternion(pose[:, :3])  # [B, 4], unit
        head_rotation = unit_quaternion_to_matrix(head_quaternion)  # [B, 3, 3]
        world = (points * scale[:, None, :]) @ head_rotation.transpose(1, 2) + pose[:, None, 3:]
        # The head rotation composed with every Gaussian's: quaternion_multiply(q_head, rotation) as one bmm.
        head_product = quaternion_product_matrix(head_quaternion)  # [B, 4, 4]
        world_rotation = rotation @ head_product.transpose(1, 2)
        return {"xyz": world, "color": color, "scales": scales * scale[:, None, :], "rotation": world_rotation,
                "opacity": opacity, "exp_deform": exp_deform}
