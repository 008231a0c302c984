"""MeshHeadModule: GHA's stage-1 geometry guidance — a DMTet mesh head with expression/pose deformation and colour.

A geometry MLP maps each tet-grid vertex (positionally embedded, canonical space) to an SDF value, a small vertex
offset and a feature; marching tetrahedra extracts the neutral mesh. Expression and pose MLPs then deform and colour
the mesh, blended by each vertex's distance to the (learnable) neutral landmarks: expression MLPs act near the
face landmarks, pose MLPs far from them. Finally the head pose maps canonical to world space.

Differences from GHA's code, on purpose (docs/meshhead.md lists them):
- the geometry is evaluated once per step, not once per batch element (it does not depend on the frame);
- the SDF follows the standard sign convention (negative inside) so faces point outward;
- tanh is applied once to the vertex offsets (GHA applied it twice);
- the tet-grid buffers are not stored in checkpoints (they are regenerated from the config and cached).
GHA's blend thresholds are compared with *squared* landmark distances, as GHA does (pytorch3d's knn returns squared
distances), so GHA's `dist_threshold_near/far` values keep their meaning.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import nn

from cgha.errors import ConfigError
from cgha.network.embedding import PositionalEmbedding
from cgha.network.mlp import MLP
from cgha.options import POSE_DIM, check_bbox, check_mlp, check_thresholds, embedding_dim, option
from cgha.utils.dmtet import cached_tet_grid, grid_cell_size, marching_tetrahedra, subdivide_tets
from cgha.utils.knn import knn
from cgha.utils.rotations import axis_angle_to_matrix

# Vertex offsets stay below a quarter of a grid cube: large enough to refine the surface, small enough that no
# tetrahedron can invert (the safe bound is ~0.35 of the edge on a Kuhn grid).
DEFORM_BOUND_CELLS = 0.25
GHA_BUFFER_KEYS = ("tet_verts", "tets")


@dataclass
class MeshHeadModuleConfig:
    """Stage-1 mesh head (GHA keys)."""
    geo_mlp: List[int] = option([27, 256, 256, 256, 256, 256, 132], "geometry MLP dims: pos-emb -> sdf+deform+feature")
    exp_color_mlp: List[int] = option([192, 256, 256, 32], "expression color MLP dims: feature+exp -> color")
    pose_color_mlp: List[int] = option([182, 128, 32], "pose color MLP dims: feature+pose-emb -> color")
    exp_deform_mlp: List[int] = option([91, 256, 256, 256, 256, 256, 3], "expression deform MLP: pos-emb+exp -> xyz")
    pose_deform_mlp: List[int] = option([81, 256, 256, 3], "pose deform MLP dims: pos-emb+pose-emb -> xyz")
    pos_freq: int = option(4, "positional-encoding frequencies", min=0)
    model_bbox: List[List[float]] = option([[-1.6, 1.6], [-1.7, 1.8], [-2.5, 1.0]], "canonical bbox [[x0,x1],[y0,y1],[z0,z1]]")
    dist_threshold_near: float = option(0.1, "landmark distance below which expression MLPs act fully", min=0.0)
    dist_threshold_far: float = option(0.25, "landmark distance beyond which pose MLPs act fully", min=0.0)
    deform_scale: float = option(0.3, "scale of the deformation MLP outputs", min=0.0)
    subdivide: bool = option(False, "subdivide the tet grid once (GHA: 128 -> 256)")
    tet_resolution: int = option(128, "tet grid resolution (DMTet naming: the longest bbox side gets resolution/2 cubes, 6 tets each)", min=4)

    def check(self, prefix: str = "meshheadmodule") -> None:
        """Check that the mesh head's MLP widths agree with each other and with pos_freq."""
        pos = embedding_dim(3, self.pos_freq)
        pose = embedding_dim(POSE_DIM, self.pos_freq)
        check_mlp(f"{prefix}.geo_mlp", self.geo_mlp, pos, explain=f"xyz embedded with pos_freq={self.pos_freq}")
        feature = meshhead_feature_dim(self)
        if feature < 1:
            raise ConfigError(f"'{prefix}.geo_mlp' must end with > 4 (sdf + xyz deformation + feature), got {self.geo_mlp[-1]}")
        exp = meshhead_exp_dim(self)
        if exp < 1:
            raise ConfigError(f"'{prefix}.exp_deform_mlp' starts with {self.exp_deform_mlp[0]}, which leaves no room for "
                              f"expression coefficients after the {pos}-wide position embedding")
        check_mlp(f"{prefix}.exp_deform_mlp", self.exp_deform_mlp, out_dim=3)
        check_mlp(f"{prefix}.pose_deform_mlp", self.pose_deform_mlp, pos + pose, 3,
                  f"embedded xyz {pos} + embedded pose {pose}")
        check_mlp(f"{prefix}.exp_color_mlp", self.exp_color_mlp, feature + exp, explain=f"feature {feature} + expression {exp}")
        check_mlp(f"{prefix}.pose_color_mlp", self.pose_color_mlp, feature + pose, self.exp_color_mlp[-1],
                  f"feature {feature} + embedded pose {pose}")
        check_bbox(f"{prefix}.model_bbox", self.model_bbox)
        check_thresholds(prefix, self.dist_threshold_near, self.dist_threshold_far)


def meshhead_exp_dim(module: MeshHeadModuleConfig) -> int:
    """Expression dimension implied by `exp_deform_mlp[0]` (GHA keeps it implicit for the mesh head)."""
    return module.exp_deform_mlp[0] - embedding_dim(3, module.pos_freq)


def meshhead_feature_dim(module: MeshHeadModuleConfig) -> int:
    """Per-point feature width: geo_mlp outputs sdf (1) + deformation (3) + feature."""
    return module.geo_mlp[-1] - 4


def blend_weights(points: torch.Tensor, landmarks: torch.Tensor, near: float, far: float) -> torch.Tensor:
    """Expression weight per point from its squared distance to the nearest landmark (GHA's rule).

    points [..., M, 3], landmarks [K, 3] -> [..., M, 1] in [0, 1]: 1 within `near`, 0 beyond `far`, linear between.
    The pose weight is one minus it.
    """
    flat = points.reshape(-1, 3)
    dist_sq, _ = knn(flat, landmarks, k=1)
    weights = ((far - dist_sq) / (far - near)).clamp(0.0, 1.0)
    return weights.reshape(*points.shape[:-1], 1)


def pose_to_world(points: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Canonical -> world: R(pose[:3]) (S x) + pose[3:]. points [B, M, 3], pose [B, 6], scale [B, 1] -> [B, M, 3]."""
    rotation = axis_angle_to_matrix(pose[:, :3])
    return (points * scale[:, None, :]) @ rotation.transpose(1, 2) + pose[:, None, 3:]


def world_to_canonical(points: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Inverse of `pose_to_world`: S^-1 R^T (x - T). points [B, M, 3] -> [B, M, 3]."""
    rotation = axis_angle_to_matrix(pose[:, :3])
    return ((points - pose[:, None, 3:]) @ rotation) / scale[:, None, :]


class MeshHeadModule(nn.Module):
    """GHA's mesh head. Shapes: B frames, M mesh vertices, K landmarks, D expression coefficients, C colours."""

    def __init__(self, cfg: MeshHeadModuleConfig, init_landmarks_3d_neutral: torch.Tensor,
                 cache_dir: str = "assets/cache"):
        super().__init__()
        self.cfg = cfg
        self.exp_dim = meshhead_exp_dim(cfg)
        self.feature_dim = meshhead_feature_dim(cfg)
        self.geo_mlp = MLP(cfg.geo_mlp, last_op=nn.Tanh())
        self.exp_color_mlp = MLP(cfg.exp_color_mlp, last_op=nn.Sigmoid())
        self.pose_color_mlp = MLP(cfg.pose_color_mlp, last_op=nn.Sigmoid())
        self.exp_deform_mlp = MLP(cfg.exp_deform_mlp, last_op=nn.Tanh())
        self.pose_deform_mlp = MLP(cfg.pose_deform_mlp, last_op=nn.Tanh())
        self.pos_embedding = PositionalEmbedding(3, cfg.pos_freq)
        self.pose_embedding = PositionalEmbedding(POSE_DIM, cfg.pos_freq)
        self.landmarks_3d_neutral = nn.Parameter(init_landmarks_3d_neutral.detach().clone().float())

        tet_verts, tets = cached_tet_grid(cfg.model_bbox, cfg.tet_resolution, cache_dir=cache_dir)
        cell = grid_cell_size(cfg.model_bbox, cfg.tet_resolution)
        if cfg.subdivide:
            tet_verts, tets = subdivide_tets(tet_verts, tets)
            cell = cell / 2
        self.register_buffer("tet_verts", tet_verts, persistent=False)
        self.register_buffer("tets", tets, persistent=False)
        self.deform_bound = DEFORM_BOUND_CELLS * cell

    # ------------------------------------------------------------------------------------------- geometry
    def query_sdf(self, points: torch.Tensor) -> torch.Tensor:
        """SDF (negative inside) at canonical points [..., 3] -> [..., 1]."""
        return self.geo_mlp(self.pos_embedding(points))[..., :1]

    def _geometry(self, points: torch.Tensor):
        prediction = self.geo_mlp(self.pos_embedding(points))
        return prediction[..., :1], prediction[..., 1:4], prediction[..., 4:]

    def reconstruct_neutral(self, subdivide: bool = False) -> Dict[str, torch.Tensor]:
        """The neutral canonical mesh: verts [M, 3], faces [F, 3] (outward), features [M, feature_dim].

        `subdivide` extracts it from the tet grid split once more (8 tets per tet), as GHA does before
        initialising the Gaussian head: about 4x the vertices of the training-time mesh.
        """
        tet_verts, tets, bound = self.tet_verts, self.tets, self.deform_bound
        if subdivide:
            tet_verts, tets = subdivide_tets(tet_verts, tets)
            bound = bound / 2
        sdf, offsets, features = self._geometry(tet_verts)
        grid = tet_verts + offsets * bound
        mesh = marching_tetrahedra(grid[None], tets, sdf[None, :, 0], features[None])[0]
        return {"verts": mesh.verts, "faces": mesh.faces, "features": mesh.features}

    def deform(self, points: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """Expression-deformed canonical points (GHA's landmark path): points [B, K, 3], exp [B, D] -> [B, K, 3]."""
        return self.deform_surface_points(self.surface_points(points), exp_coeff)

    def surface_points(self, points: torch.Tensor) -> torch.Tensor:
        """Points moved by the geometry MLP's vertex offsets, as tet-grid vertices are: [..., 3] -> [..., 3]."""
        _, offsets, _ = self._geometry(points)
        return points + offsets * self.deform_bound

    def deform_surface_points(self, points: torch.Tensor, exp_coeff: torch.Tensor) -> torch.Tensor:
        """The expression deformation alone: points [B, K, 3] (from `surface_points`), exp [B, D] -> [B, K, 3]."""
        exp_input = torch.cat([self.pos_embedding(points), _expand(exp_coeff, points.shape[1])], -1)
        return points + self.exp_deform_mlp(exp_input) * self.cfg.deform_scale

    def reconstruct(self, exp_coeff: torch.Tensor, pose: torch.Tensor, scale: Optional[torch.Tensor] = None,
                    pose_code: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Posed, expressive, coloured meshes of a batch of frames.

        exp_coeff [B, D], pose [B, 6] (head transform), scale [B, 1] (None = canonical output),
        pose_code [B, 6] fed to the pose MLPs (default: pose).
        Returns verts [B, M, 3] (world, or canonical when scale is None), faces [F, 3], colors [B, M, C],
        verts_neutral [M, 3], exp_deform / pose_deform [B, M, 3] (for the offset regulariser).
        """
        if exp_coeff.shape[-1] != self.exp_dim:
            raise ValueError(f"exp_coeff has {exp_coeff.shape[-1]} coefficients, the mesh head takes {self.exp_dim}")
        batch = exp_coeff.shape[0]
        neutral = self.reconstruct_neutral()
        verts, features = neutral["verts"], neutral["features"]
        count = verts.shape[0]
        if count == 0:
            raise FloatingPointError("the mesh head has no surface: its SDF has no zero crossing in the tet grid "
                                     "(training diverged, or the SDF sphere pre-training was skipped)")
        exp_weight = blend_weights(verts, self.landmarks_3d_neutral, self.cfg.dist_threshold_near,
                                   self.cfg.dist_threshold_far)  # [M, 1]
        pose_weight = 1.0 - exp_weight
        pose_code = pose if pose_code is None else pose_code
        pose_feature = _expand(self.pose_embedding(pose_code), count)  # [B, M, P]
        exp_feature = _expand(exp_coeff, count)  # [B, M, D]
        features = features.expand(batch, -1, -1)

        colors = (self.exp_color_mlp(torch.cat([features, exp_feature], -1)) * exp_weight
                  + self.pose_color_mlp(torch.cat([features, pose_feature], -1)) * pose_weight)
        points = verts.expand(batch, -1, -1)
        exp_deform = self.exp_deform_mlp(torch.cat([self.pos_embedding(points), exp_feature], -1))
        points = points + exp_deform * exp_weight * self.cfg.deform_scale
        pose_deform = self.pose_deform_mlp(torch.cat([self.pos_embedding(points), pose_feature], -1))
        points = points + pose_deform * pose_weight * self.cfg.deform_scale
        if scale is not None:
            points = pose_to_world(points, pose, scale)
        return {"verts": points, "faces": neutral["faces"], "colors": colors, "verts_neutral": verts,
                "features_neutral": neutral["features"], "exp_deform": exp_deform, "pose_deform": pose_deform}

    @staticmethod
    def without_grid_buffers(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """A state dict minus GHA's stored tet grid (`tet_verts`, `tets`), which we regenerate from the config."""
        return {key: value for key, value in state.items() if key not in GHA_BUFFER_KEYS}


def _expand(code: torch.Tensor, count: int) -> torch.Tensor:
    """Per-frame code [B, D] -> per-point [B, count, D] (a broadcast view, no copy)."""
    return code[:, None, :].expand(-1, count, -1)


def pretrain_sphere(module: MeshHeadModule, iterations: int, device: torch.device, radius: float = 1.0,
                    batch: int = 8192, seed: int = 0) -> float:
    """Fit the SDF to a sphere (GHA's initialisation): MSE to |x| - radius at points uniform in the model bbox.

    Returns the final loss. Only the geometry MLP is optimised.
    """
    bbox = torch.tensor(module.cfg.model_bbox, device=device, dtype=torch.float32)
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    optimizer = torch.optim.Adam(module.geo_mlp.parameters(), lr=1e-3)
    loss = torch.zeros((), device=device)
    for _ in range(iterations):
        points = torch.rand(batch, 3, device=device, generator=generator) * (bbox[:, 1] - bbox[:, 0]) + bbox[:, 0]
        target = points.norm(dim=-1, keepdim=True) - radius
        loss = torch.nn.functional.mse_loss(module.query_sdf(points), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def warm_up_expression_deformation(module: MeshHeadModule, exp_coeff: torch.Tensor, landmarks: torch.Tensor,
                                   iterations: int, lr: float = 1e-3) -> float:
    """Fit the expression deformation MLP alone to the tracked landmarks of every training frame at once.

    exp_coeff [F, D]; landmarks [F, K, 3] in canonical space (`world_to_canonical` of the tracked ones). The same
    MSE as the mesh head's `def` loss, full batch: a few hundred cheap steps (no rendering) that a short photometric
    schedule cannot afford, so rare, large expressions (a wide-open jaw) are learned before the surface is fitted.
    Returns the final loss.
    """
    with torch.no_grad():
        points = module.surface_points(module.landmarks_3d_neutral)[None].expand(exp_coeff.shape[0], -1, -1)
    optimizer = torch.optim.Adam(module.exp_deform_mlp.parameters(), lr=lr)
    loss = torch.zeros((), device=exp_coeff.device)
    for _ in range(iterations):
        loss = torch.nn.functional.mse_loss(module.deform_surface_points(points, exp_coeff), landmarks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return float(loss.detach())
