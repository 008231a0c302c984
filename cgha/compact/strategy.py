"""Compaction as a strategy object (as gsplat's `Strategy` owns densification state): the trainer calls a few
hooks and the strategy owns everything else — when quantisation starts, the initial k-means, the per-step codebook
refresh, index re-assignment, its resume state and the final compressed write.

    strategy = CompactionStrategy(cfg.compact, GroupSpec.of(model), start_iter, seed, device)
    ...each step:  strategy.before_step(model, it); attrs = strategy.attributes(model, it)  # None = continuous
                   with strategy.network_weights(model, post_render, it):  # quantised with compact.qat
                       (forward with generate(attributes=attrs), backward)
                   optimiser step
                   strategy.after_step(model, it)
    ...at the end: strategy.write(RunFiles(...), model, post_render, raw_files)
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any, ContextManager, Dict, Mapping, Optional

import torch
from torch import nn

from cgha.compact.avatar_file import save_compact_avatar, write_report
from cgha.compact.config import CompactSection
from cgha.compact.network_qat import NetworkQAT
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec
from cgha.recorder.run_files import RunFiles

log = logging.getLogger(__name__)

class CompactionStrategy:
    """K-means codebook quantisation of an avatar model's attribute groups from iteration `start_iter` on.

    Iterations are the trainer's 0-based step counter: the step with `iteration == start_iter` is the first to run on
    quantised attributes. Codebook rows follow their members after every step; indices are re-assigned every
    `compact.assign_every` steps, counted from the start.
    """

    def __init__(self, compact: CompactSection, spec: GroupSpec, start_iter: int, seed: int, device: torch.device):
        self.cfg = compact
        self.start_iter = start_iter
        self.quantizer = GroupedQuantizer.from_config(compact, spec, seed=seed).to(device)

    def active(self, iteration: int) -> bool:
        return iteration >= self.start_iter

    @property
    def initialised(self) -> bool:
        return self.quantizer.initialised

    @staticmethod
    def _detached(model) -> Dict[str, torch.Tensor]:
        return {key: value.detach() for key, value in model.canonical_attributes().items()}

    def before_step(self, model, iteration: int) -> None:
        """Initial k-means on the first quantised step."""
        if self.active(iteration) and not self.initialised:
            configured = self.quantizer.codebook_sizes()
            self.quantizer.initialise(self._detached(model))
            self._warn_about_clamped_codebooks(configured, model.num_gaussians)
            log.info("compaction starts at iteration %d: codebooks %s", iteration, self.quantizer.codebook_sizes())

    def _warn_about_clamped_codebooks(self, configured: Dict[str, int], num_gaussians: int) -> None:
        """k-means keeps at most one code per Gaussian; a larger configured size was a mistake worth telling,
        since the file then comes out far bigger than that size suggests."""
        for group, rows in self.quantizer.codebook_sizes().items():
            if rows < configured[group]:
                key = (f"compact.codebook_sizes.{group}" if group in self.cfg.codebook_sizes
                       else "compact.codebook_size")
                log.warning("%s=%d is larger than the model's %d Gaussians: group '%s' gets %d codebook rows (one "
                            "per Gaussian, so no compression of that group); choose a size well below %d",
                            key, configured[group], num_gaussians, group, rows, num_gaussians)

    def network_weights(self, model, post_render: nn.Module, iteration: int) -> ContextManager:
        """Around a step's forward and backward passes: with compact.qat, from the start of quantisation, the networks
        at the file's integer precision (cgha.compact.network_qat); otherwise nothing changes."""
        if self.cfg.qat and self.active(iteration):
            return NetworkQAT(model, post_render, self.cfg.store).quantised()
        return nullcontext()

    def attributes(self, model) -> Optional[Dict[str, torch.Tensor]]:
        """Straight-through quantised attributes for generate(attributes=...) once started, else None."""
        if not self.initialised:
            return None
        return self.quantizer.quantized_attributes(model.canonical_attributes())

    @torch.no_grad()
    def after_step(self, model, iteration: int) -> None:
        """Codebook rows follow their members every step; indices are re-assigned every compact.assign_every."""
        if not (self.active(iteration) and self.initialised):
            return
        attributes = self._detached(model)
        if (iteration + 1 - self.start_iter) % self.cfg.assign_every == 0:
            self.quantizer.reassign(attributes)
        self.quantizer.refresh(attributes)

    def select_rows(self, rows: torch.Tensor) -> None:
        """The Gaussians were edited (cgha/points): Gaussian i is now the former rows[i]; indices follow."""
        self.quantizer.select_rows(rows)

    # -------------------------------------------------------------------------------------------- resume
    def state_dict(self) -> Optional[Dict[str, Any]]:
        """Codebooks and indices once k-means has run (None before: a resumed run starts them again)."""
        return self.quantizer.state_dict() if self.initialised else None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; the codebook buffers take the stored shapes. ValueError when they do not fit."""
        try:
            self.quantizer.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as error:
            raise ValueError(f"not a quantizer for compact.groups {self.cfg.groups} "
                             f"({str(error).splitlines()[0]})") from None

    # --------------------------------------------------------------------------------------------- output
    def write(self, files: RunFiles, model, post_render: nn.Module, raw_files: Mapping[str, Path],
              extra: Optional[Dict[str, Any]] = None,
              subject: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
        """Write the run's compressed avatar (with `subject`, the avatar's record of its training subject) and its
        report once compaction has run; returns the report."""
        if not self.initialised:
            return None
        path = files.compact
        save_compact_avatar(path, model, post_render, self.quantizer, self.cfg.store, subject)
        report = write_report(files.compact_report, path, dict(raw_files),
                              {"num_gaussians": model.num_gaussians,
                               "codebook_sizes": self.quantizer.codebook_sizes(), **(extra or {})})
        log.info("compressed avatar %s: %.2f MB vs %.2f MB raw (%.1fx)", path, report["compact_bytes"] / 1e6,
                 report["raw_bytes"] / 1e6, report["ratio"])
        return report
