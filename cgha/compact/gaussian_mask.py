"""Learned Gaussian masking (Lee et al., "Compact 3D Gaussian Representation for Static Scenes", CVPR 2024): fewer
Gaussians where they contribute nothing (issue 20 item 2).

Every Gaussian has a mask logit m (initialised to 1, as Lee et al.). Training renders each Gaussian with its
opacity and scales multiplied by the binary mask 1[sigmoid(m) > threshold], whose gradient is taken through
sigmoid(m) (straight-through), and adds the loss mean(sigmoid(m)) with weight `compact.mask.weight`, which pushes
masks down wherever the images do not hold them up. Every `compact.mask.prune_every` steps, and once more before the
compressed file is written, the masked Gaussians are deleted (cgha.points.edit_gaussians: the model's rows, the
optimiser's moments, the codebook indices), so the file holds exactly the Gaussians training rendered. The mask is
applied to the posed Gaussians, after the avatar model's generate step, so it serves every avatar model.

    mask = GaussianMask(cfg.compact.mask, model.num_gaussians, device)
    gaussians = mask.apply(model.generate(...));  loss += weight * mask.loss()
    mask.prune(model, optimizer, compaction)      # -> Gaussians deleted
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Dict, Mapping

import torch
from torch import nn

from cgha.avatar.gaussians import Gaussians
from cgha.compact.config import CompactMaskConfig
from cgha.errors import ConfigError
from cgha.points.edit import edit_gaussians, move_optimizer_rows

log = logging.getLogger(__name__)

INITIAL_LOGIT = 1.0  # Lee et al.: mask parameters start at 1 (sigmoid 0.73)


class GaussianMask:
    """Mask logits [N] of an avatar model's N Gaussians (see the module docstring)."""

    def __init__(self, cfg: CompactMaskConfig, num_gaussians: int, device: torch.device):
        self.cfg = cfg
        self.logits = nn.Parameter(torch.full((num_gaussians,), INITIAL_LOGIT, device=device))

    def soft(self) -> torch.Tensor:
        """sigmoid of the logits [N]."""
        return torch.sigmoid(self.logits)

    def kept(self) -> torch.Tensor:
        """Bool [N]: the Gaussians the binary mask keeps."""
        return self.soft().detach() > self.cfg.threshold

    def apply(self, gaussians: Gaussians) -> Gaussians:
        """Posed Gaussians [B, N, ...] with opacities and scales multiplied by the binary mask; gradients reach the
        logits through sigmoid (straight-through)."""
        if gaussians.num_gaussians != self.logits.shape[0]:
            raise ValueError(f"the mask has {self.logits.shape[0]} rows for {gaussians.num_gaussians} Gaussians: a "
                             f"row edit did not go through GaussianMask.prune")
        soft = self.soft()
        # The hard mask plus a zero that carries sigmoid's gradient: exactly 0 or 1 in value.
        mask = self.kept().to(soft) + (soft - soft.detach())  # [N]
        return replace(gaussians, opacities=gaussians.opacities * mask, scales=gaussians.scales * mask[:, None])

    def loss(self) -> torch.Tensor:
        """mean(sigmoid(m)): Lee et al.'s masking loss."""
        return self.soft().mean()

    def prune(self, model, optimizer: torch.optim.Optimizer, compaction=None) -> int:
        """Delete the masked Gaussians from the model (optimiser moments and codebook indices follow) and their
        rows here; returns how many were deleted. ConfigError when every Gaussian is masked."""
        kept = self.kept()
        if not kept.any():
            raise ConfigError(f"compact.mask masked all {kept.numel()} Gaussians: its weight "
                              f"{self.cfg.weight:g} (or lr {self.cfg.lr:g}) is far too strong for this avatar; "
                              f"lower compact.mask.weight (Lee et al.: 0.0005)")
        deleted = int((~kept).sum())
        if deleted == 0:
            return 0
        rows = torch.nonzero(kept)[:, 0]
        edit_gaussians(model, rows, rows.numel(), rows.new_zeros(0, 3).float(), optimizer, compaction)
        old = self.logits
        self.logits = nn.Parameter(old.detach().index_select(0, rows).clone())
        move_optimizer_rows(optimizer, old, self.logits, rows, rows.numel())
        return deleted

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {"logits": self.logits.detach().clone()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore `state_dict()` (same Gaussian count); ValueError otherwise."""
        logits = state.get("logits")
        if not isinstance(logits, torch.Tensor) or logits.shape != self.logits.shape:
            shape = list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"mask logits must be [{self.logits.shape[0]}] (one per Gaussian), got {shape}")
        with torch.no_grad():
            self.logits.copy_(logits)
