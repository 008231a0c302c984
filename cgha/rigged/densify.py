"""Binding-aware adaptive density control of the rigged avatar (GaussianAvatars): clone small Gaussians and split
large ones where the positional gradient is high, prune transparent ones, and keep every triangle's Gaussians
bound to it.

    densifier = BindingDensifier.from_config(model.cfg, run_cfg)
    ...after each optimiser step (gradients still present):
        densifier.step(model, optimizer, compaction, iteration)   # iteration: steps completed so far

Statistic: the norm of the loss gradient with respect to each Gaussian's local position, divided by its triangle's
size in the neutral canonical mesh (the gradient with respect to its canonical position), averaged over the steps
in which it had a gradient (was seen). 3DGS and GaussianAvatars use the screen-space gradient; the avatar interface
does not hand the rasteriser's 2D means to the trainer, and this one needs no camera. Dense Gaussians (statistic >=
threshold) whose largest local scale is at most `split_scale` are cloned in place; larger ones are split into two
children sampled from the parent's Gaussian, each 1/1.6 of its size. Every child and clone inherits its parent's
triangle (`binding`) and attributes. Pruning deletes Gaussians below `prune_opacity` except the last ones of a
triangle (GaussianAvatars keeps every triangle bound). With `addons.smart_densification` the clone and split
thresholds are percentiles of the statistic instead of `grad_threshold` (cgha/addons/smart_densification.py).
Rows are edited with cgha.points.edit_gaussians (optimiser moments and codebook indices follow).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Mapping, Optional

import torch

from cgha.addons.smart_densification import densify_thresholds
from cgha.points.edit import edit_gaussians
from cgha.rigged.binding import triangle_frames
from cgha.utils.rotations import quaternion_to_matrix

log = logging.getLogger(__name__)

SPLIT_SHRINK = 1.6        # 3DGS / GaussianAvatars: split children are 1 / (0.8 * 2) of the parent's size
RESET_OPACITY = 0.01      # 3DGS / GaussianAvatars' opacity reset value
_SEED_STRIDE = 1_000_003  # edit at iteration i draws from seed * stride + i (resume-safe without stored state)


class BindingDensifier:
    """See the module docstring. `smart`: (clone percentile, split percentile) or None for the fixed threshold."""

    def __init__(self, model_cfg, smart: Optional[tuple], seed: int):
        self.cfg, self.smart, self.seed = model_cfg, smart, seed
        self.gradient_sum: Optional[torch.Tensor] = None  # [N]
        self.seen: Optional[torch.Tensor] = None          # [N] steps with a gradient

    @classmethod
    def from_config(cls, model_cfg, run_cfg) -> "BindingDensifier":
        addons = getattr(run_cfg, "addons", None)
        smart = None
        if addons is not None and addons.smart_densification:
            smart = (addons.clone_percentile, addons.split_percentile)
        return cls(model_cfg, smart, run_cfg.train.seed)

    def due(self, iteration: int) -> bool:
        cfg = self.cfg
        return (cfg.densify_every > 0 and cfg.densify_from <= iteration <= cfg.densify_until
                and iteration % cfg.densify_every == 0)

    @torch.no_grad()
    def accumulate(self, model) -> None:
        grad = model.xyz.grad
        if grad is None:
            return
        norms = grad.detach().float().norm(dim=-1)  # [N]
        if self.gradient_sum is None or self.gradient_sum.shape != norms.shape:
            self.gradient_sum, self.seen = torch.zeros_like(norms), torch.zeros_like(norms)
        self.gradient_sum += norms
        self.seen += (norms > 0).float()

    @torch.no_grad()
    def step(self, model, optimizer: torch.optim.Optimizer, compaction, iteration: int) -> Optional[Dict[str, int]]:
        """After an optimiser step: gather the statistic; densify when due; reset opacities when due."""
        self.accumulate(model)
        counts = self.densify(model, optimizer, compaction, iteration) if self.due(iteration) else None
        reset = self.cfg.opacity_reset_every
        if reset and iteration % reset == 0 and iteration <= self.cfg.densify_until:
            reset_opacity(model, optimizer)
        return counts

    def statistic(self, model) -> torch.Tensor:
        """Mean positional gradient per Gaussian in canonical units [N] (0 where never seen)."""
        count = model.num_gaussians
        if self.gradient_sum is None or self.gradient_sum.shape[0] != count:
            return torch.zeros(count, device=model.xyz.device)
        mean = self.gradient_sum / self.seen.clamp_min(1)
        return mean / neutral_triangle_scale(model)

    @torch.no_grad()
    def densify(self, model, optimizer, compaction, iteration: int) -> Dict[str, int]:
        """Clone, split and prune (see the module docstring); returns the counts."""
        cfg = self.cfg
        grads = self.statistic(model)
        seen = self.seen > 0 if self.seen is not None and self.seen.shape == grads.shape else grads > 0
        clone_at, split_at = densify_thresholds(grads, seen, cfg.grad_threshold, self.smart)
        opacity = torch.sigmoid(model.opacity.detach()[:, 0])
        transparent = opacity < cfg.prune_opacity
        large = model.scales.detach().exp().amax(-1) > cfg.split_scale
        clone = (grads >= clone_at) & ~large & ~transparent & seen
        split = (grads >= split_at) & large & ~transparent & seen
        clone, split = _within_budget(grads, clone, split, cfg.max_gaussians - model.num_gaussians)
        triangles = model.triangles()
        keep = ~(transparent | split)
        # A triangle whose every Gaussian would go keeps its transparent ones (split parents leave children).
        survivors = torch.bincount(triangles[keep | split], minlength=int(triangles.max()) + 1)
        keep |= transparent & (survivors[triangles] == 0)
        kept, cloned, parents = keep.nonzero()[:, 0], clone.nonzero()[:, 0], split.nonzero()[:, 0]
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + iteration)
        children = _split_positions(model, parents, generator)
        rows = torch.cat([kept, cloned, parents, parents])
        first_new = kept.numel()
        new_positions = torch.cat([model.xyz.detach().index_select(0, cloned), children])
        edit_gaussians(model, rows, first_new, new_positions, optimizer, compaction)
        if parents.numel():
            model.scales.data[first_new + cloned.numel():] -= math.log(SPLIT_SHRINK)
        self.gradient_sum = self.seen = None
        counts = {"cloned": int(cloned.numel()), "split": int(parents.numel()),
                  "pruned": int((~keep).sum()) - int(parents.numel()), "num_gaussians": int(rows.numel())}
        log.info("rigged densification at iteration %d: cloned %d, split %d, pruned %d: %d Gaussians", iteration,
                 counts["cloned"], counts["split"], counts["pruned"], counts["num_gaussians"])
        return counts

    # -------------------------------------------------------------------------------------------- resume
    def state_dict(self) -> Dict[str, Any]:
        return {"gradient_sum": self.gradient_sum, "seen": self.seen}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.gradient_sum, self.seen = state["gradient_sum"], state["seen"]


def neutral_triangle_scale(model) -> torch.Tensor:
    """Size of each Gaussian's triangle in the subject's neutral canonical mesh: -> [N]."""
    device = model.xyz.device
    face_model = model.face_model(device)
    neutral = torch.zeros(1, model.expression_dim, device=device)
    pose = torch.zeros(1, 6, device=device)
    verts = model.mesh(neutral, pose, torch.ones(1, 1, device=device))
    return triangle_frames(verts, face_model.faces).scale[0].index_select(0, model.triangles())


def _within_budget(grads: torch.Tensor, clone: torch.Tensor, split: torch.Tensor, room: int):
    """At most `room` new Gaussians (a clone adds one, a split one net): the highest statistics win."""
    wanted = clone | split
    if int(wanted.sum()) <= max(room, 0):
        return clone, split
    allowed = torch.zeros_like(wanted)
    if room > 0:
        ranked = torch.where(wanted, grads, torch.full_like(grads, -1.0)).topk(room).indices
        allowed[ranked] = True
    return clone & allowed, split & allowed


def _split_positions(model, parents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Two children per parent [P], sampled from its Gaussian in the triangle's local frame: -> [2P, 3] (all first
    children, then all second ones)."""
    if parents.numel() == 0:
        return model.xyz.new_zeros(0, 3)
    xyz = model.xyz.detach().index_select(0, parents).repeat(2, 1)
    scales = model.scales.detach().index_select(0, parents).exp().repeat(2, 1)
    rotation = quaternion_to_matrix(model.rotation.detach().index_select(0, parents)).repeat(2, 1, 1)
    sample = torch.randn(xyz.shape, generator=generator).to(xyz) * scales
    return xyz + (rotation @ sample[..., None])[..., 0]


def reset_opacity(model, optimizer: torch.optim.Optimizer) -> None:
    """Clamp every opacity to at most RESET_OPACITY and clear the optimiser's moments of it (3DGS' reset)."""
    with torch.no_grad():
        model.opacity.data.clamp_(max=math.log(RESET_OPACITY / (1 - RESET_OPACITY)))
    state = optimizer.state.get(model.opacity)
    if state:
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == model.opacity.shape:
                value.zero_()
