"""`PointStrategy`: MonoGaussianAvatar's insertion and deletion of points on a schedule, as a strategy object (the
way gsplat's `Strategy` owns densification): the trainer calls one hook after every optimiser step and the strategy
owns the rest — the statistics it gathers between edits, when an edit runs, which points go and which come, and its
resume state.

    strategy = PointStrategy(cfg.points, seed)
    ...after each optimiser step (gradients still present):
        strategy.step(model, optimizer, compaction, iteration)   # iteration: steps completed so far

An edit first deletes points whose opacity fell below `prune_opacity` or that left the head's region
(`region_radius`), then grows the count by `growth` (up to `max_points`) with new points near parents drawn by their
mean positional gradient since the last edit (or uniformly). A new point copies its parent's attributes and lies
uniformly in a cube of `jitter` times the parent's spacing around it. MonoGaussianAvatar grows stage by stage from
400 points with a fixed, shrinking noise radius and re-creates its optimiser; here the radius follows the points'
own spacing and the optimiser keeps its state (edit.py).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Dict, Mapping, Optional

import torch

from cgha.points.config import PointsSection
from cgha.points.edit import edit_gaussians
from cgha.utils.knn import mean_sq_distance_to_3nn

log = logging.getLogger(__name__)

# Edit k of a run draws from a generator seeded with seed * _SEED_STRIDE + iteration, so a resumed run draws the
# same numbers as an uninterrupted one without storing generator state.
_SEED_STRIDE = 1_000_003
MIN_POINTS = 4  # a point's spacing is its mean distance to 3 others


class PointStrategy:
    """Scheduled deletion and insertion of an avatar model's Gaussians (see the module docstring)."""

    def __init__(self, cfg: PointsSection, seed: int):
        self.cfg, self.seed = cfg, seed
        self.gradient_sum: Optional[torch.Tensor] = None  # [N]: sum over steps of |d loss / d position|
        self.gradient_steps = 0

    def due(self, iteration: int) -> bool:
        """Whether an edit runs after the step that completed `iteration` steps."""
        cfg = self.cfg
        return (cfg.editing and iteration > 0 and iteration % cfg.every == 0
                and (cfg.stop_iter == 0 or iteration <= cfg.stop_iter))

    def start_warning(self, num_gaussians: int) -> Optional[str]:
        """A warning when a start of `num_gaussians` points leaves the configured edits nothing to insert
        (`PointsSection.only_deletes`), else None."""
        cfg = self.cfg
        if not cfg.only_deletes(num_gaussians):
            return None
        return (f"points: the start has {num_gaussians} Gaussians, not below points.max_points ({cfg.max_points}): "
                f"the edits every {cfg.every} iterations will only delete points (opacity < {cfg.prune_opacity} "
                f"or farther than {cfg.region_radius}) and never insert; raise points.max_points to let them grow, "
                f"or set points.every=0 for a fixed set")

    @torch.no_grad()
    def accumulate(self, model) -> None:
        """Add this step's positional gradient norms (one per Gaussian) to the statistics of the next edit."""
        position = model.canonical_attributes()[model.position_attribute]
        if position.grad is None:
            return
        norms = position.grad.detach().float().norm(dim=-1)  # [N]
        if self.gradient_sum is None or self.gradient_sum.shape != norms.shape:
            self.gradient_sum, self.gradient_steps = torch.zeros_like(norms), 0
        self.gradient_sum += norms
        self.gradient_steps += 1

    @torch.no_grad()
    def step(self, model, optimizer: torch.optim.Optimizer, compaction, iteration: int) -> Optional[Dict[str, int]]:
        """After an optimiser step: gather statistics and, when due, edit. Returns the edit's counts or None."""
        if not self.cfg.editing:
            return None
        self.accumulate(model)
        return self.edit(model, optimizer, compaction, iteration) if self.due(iteration) else None

    @torch.no_grad()
    def edit(self, model, optimizer: Optional[torch.optim.Optimizer], compaction, iteration: int) -> Dict[str, int]:
        """Delete, then insert (see the module docstring). Returns {pruned_opacity, pruned_region, inserted,
        num_gaussians}."""
        cfg = self.cfg
        attributes = model.canonical_attributes()
        xyz = attributes[model.position_attribute].detach()  # [N, 3]
        opacity = torch.sigmoid(attributes[model.opacity_attribute].detach().reshape(-1))  # [N]
        transparent = opacity < cfg.prune_opacity
        outside = xyz.norm(dim=1) > cfg.region_radius
        keep = ~(transparent | outside)
        if int(keep.sum()) < MIN_POINTS:
            log.warning("point edit at iteration %d would leave %d of %d points (opacity < %g or farther than %g): "
                        "none deleted", iteration, int(keep.sum()), xyz.shape[0], cfg.prune_opacity,
                        cfg.region_radius)
            keep = torch.ones_like(keep)
        kept = keep.nonzero()[:, 0]  # [K]
        count_new = max(0, min(cfg.max_points, math.ceil(kept.numel() * cfg.growth)) - kept.numel())
        generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + iteration)
        chosen = self._draw_parents(kept, count_new, generator)  # [count_new] positions in `kept`
        spacing = mean_sq_distance_to_3nn(xyz.index_select(0, kept)).clamp_min(0).sqrt()  # [K]
        offsets = (torch.rand(count_new, 3, generator=generator) - 0.5).to(xyz) * cfg.jitter
        parents = kept.index_select(0, chosen)
        new_positions = xyz.index_select(0, parents) + offsets * spacing.index_select(0, chosen)[:, None]
        rows = torch.cat([kept, parents])
        edit_gaussians(model, rows, kept.numel(), new_positions, optimizer, compaction)
        self.gradient_sum, self.gradient_steps = torch.zeros(rows.numel(), device=xyz.device), 0
        counts = {"pruned_opacity": int(transparent.sum()), "pruned_region": int((outside & ~transparent).sum()),
                  "inserted": count_new, "num_gaussians": rows.numel()}
        log.info("points at iteration %d: deleted %d (opacity < %g) + %d (outside radius %g), inserted %d: %d "
                 "Gaussians", iteration, counts["pruned_opacity"], cfg.prune_opacity, counts["pruned_region"],
                 cfg.region_radius, count_new, counts["num_gaussians"])
        return counts

    def _draw_parents(self, kept: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
        """`count` draws (with replacement) of positions in `kept` [K]: by mean positional gradient, or uniformly
        (also when no gradient was gathered). -> [count] int64 on kept's device."""
        if count == 0:
            return torch.zeros(0, dtype=torch.int64, device=kept.device)
        weights = torch.ones(kept.numel(), dtype=torch.float64)
        if self.cfg.parents == "gradient" and self.gradient_sum is not None and self.gradient_steps > 0:
            gathered = self.gradient_sum.index_select(0, kept).double().cpu()
            if float(gathered.sum()) > 0:
                weights = gathered
        return torch.multinomial(weights, count, replacement=True, generator=generator).to(kept.device)

    # -------------------------------------------------------------------------------------------- resume
    def state_dict(self) -> Dict[str, Any]:
        return {"gradient_sum": self.gradient_sum, "gradient_steps": self.gradient_steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.gradient_sum = state["gradient_sum"]
        self.gradient_steps = int(state["gradient_steps"])
