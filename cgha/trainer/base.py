"""The loop both training stages share: epochs/iteration limits, logging, images, checkpoints, resume, evaluation.

A stage subclasses `Trainer` and provides `compute_losses(batch) -> (losses by weight name, visuals)`,
`save_grid(batch, visuals, name)`, `checkpoint_states() -> {kind: state}`, `load_own_checkpoints()` and
`evaluate() -> metrics`.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
from contextlib import nullcontext
from typing import Any, ContextManager, Dict, Optional, Tuple

import torch
from tqdm import tqdm

from cgha.config import TrainConfig
from cgha.errors import CheckpointError, TrainingDiverged, TrainingInterrupted
from cgha.recorder.checkpoint import load_file, training_state
from cgha.recorder.run_recorder import RunRecorder

log = logging.getLogger(__name__)


class Trainer:
    """Runs `fit()`; subclasses set `self.optimizer`, `self.loader`, `self.weights`, `self.stage` before `_resume()`."""

    stage = ""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        # Subclasses build their networks next, and layer initialisation draws from torch's global generator:
        # seeding it here makes two runs of one config start from the same weights (`train.seed`).
        torch.manual_seed(cfg.train.seed)
        self.recorder = RunRecorder(cfg.recorder, cfg)
        self.iteration, self.epoch = 0, 0
        self.last_metrics: Dict[str, float] = {}

    # ---------------------------------------------------------------------------------- to implement
    def compute_losses(self, batch: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Any]:
        raise NotImplementedError

    def checkpoint_states(self) -> Dict[str, Any]:
        raise NotImplementedError

    def load_own_checkpoints(self) -> None:
        raise NotImplementedError

    def save_grid(self, batch: Dict[str, torch.Tensor], visuals: Any, name: str) -> None:
        raise NotImplementedError

    def evaluate(self) -> Dict[str, float]:
        return {}

    def set_train_mode(self, training: bool) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ shared
    @property
    def state_kind(self) -> str:
        return f"{self.stage}_train_state"

    def try_resume(self) -> bool:
        """Continue this run from its own `*_latest` checkpoints when `train.resume` is on and they exist."""
        own, state_path = self.recorder.checkpoint(self.stage), self.recorder.checkpoint(self.state_kind)
        if not (self.cfg.train.resume and own.is_file() and state_path.is_file()):
            return False
        self.load_own_checkpoints()
        saved = load_file(state_path, "training state")
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.iteration, self.epoch = int(saved["iter"]), int(saved["epoch"])
            self.restore_rng_states(saved)
        except (KeyError, ValueError, TypeError, RuntimeError) as error:
            # E.g. a state written by another version whose optimizer grouped the parameters differently.
            raise CheckpointError(f"{state_path}: cannot resume from this {self.stage} training state ({error}); "
                                  f"set train.resume=false to start a new run instead") from None
        log.info("resuming %s at iteration %d (epoch %d)", own.parent, self.iteration, self.epoch)
        return True

    def rng_states(self) -> Dict[str, Any]:
        """The stage's own generators (and strategies' statistics) for the training state, beside torch's RNG (which
        `training_state` stores): resuming must continue every sequence the loop draws from for the run to equal the
        uninterrupted one."""
        return {}

    def restore_rng_states(self, saved: Dict[str, Any]) -> None:
        """Continue the generators of a training state (see `rng_states`)."""
        torch.set_rng_state(saved["torch_rng"])

    def to_device(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def done(self) -> bool:
        train = self.cfg.train
        return ((train.max_iters > 0 and self.iteration >= train.max_iters)
                or (train.epochs > 0 and self.epoch >= train.epochs))

    def total_iterations(self) -> int:
        train, per_epoch = self.cfg.train, len(self.loader)
        limits = [train.max_iters] if train.max_iters > 0 else []
        if train.epochs > 0:
            limits.append(train.epochs * per_epoch)
        return min(limits)

    def log_training_limit(self) -> None:
        """Say which of train.epochs / train.max_iters ends the run and when; warn when max_iters is never reached,
        since a user who sets it expects that many iterations."""
        train, per_epoch, end = self.cfg.train, len(self.loader), self.total_iterations()
        epochs_end = f"train.epochs={train.epochs} ({per_epoch} iterations per epoch)"
        if train.max_iters > end:
            log.warning("train.max_iters=%d is never reached: %s ends the run at iteration %d; set train.epochs=0 "
                        "to train for train.max_iters iterations", train.max_iters, epochs_end, end)
        limit = f"train.max_iters={train.max_iters}" if train.max_iters == end else epochs_end
        start = f", starting at iteration {self.iteration}" if self.iteration else ""
        log.info("%s: %s ends the run at iteration %d%s", self.stage, limit, end, start)

    def log_extras(self) -> Dict[str, float]:
        """Values logged beside the losses (e.g. the number of Gaussians)."""
        return {}

    def before_step(self) -> None:
        """Called before each training step's forward pass (e.g. to start compaction)."""

    def after_step(self) -> None:
        """Called after each optimizer step (e.g. to refresh codebooks)."""

    def step_weights(self) -> ContextManager:
        """The weights a step's forward and backward passes see, entered around them (the optimiser step runs after
        leaving): as they are by default; quantised ones for quantisation-aware training."""
        return nullcontext()

    def training_step(self, batch: Dict[str, torch.Tensor]):
        self.before_step()
        with self.step_weights():
            losses, visuals = self.compute_losses(batch)
            total = sum(self.weights[name] * value for name, value in losses.items() if self.weights[name] > 0)
            if not torch.isfinite(total):
                terms = [f"loss_{k}={float(v.detach()):.3g}" for k, v in losses.items() if not torch.isfinite(v).all()]
                raise self.diverged(", ".join(terms) or f"the weighted loss sum is {float(total.detach()):.3g}",
                                    self.iteration + 1)
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
        self.optimizer.step()
        self.after_step()
        return losses, total, visuals

    def checked_training_step(self, batch: Dict[str, torch.Tensor]):
        """`training_step`, with a renderer's refusal of NaN/inf inputs (cgha/render: ValueError '<name> contains
        NaN or inf') reported as the divergence it is rather than as a traceback."""
        try:
            return self.training_step(batch)
        except ValueError as error:
            if "NaN or inf" not in str(error):
                raise
            raise self.diverged(f"the renderer got {error}", self.iteration + 1) from None

    def named_state_tensors(self):
        """(kind/name, tensor) of every floating-point tensor this stage checkpoints."""
        for kind, state in self.checkpoint_states().items():
            if isinstance(state, dict):
                for name, value in state.items():
                    if isinstance(value, torch.Tensor) and value.is_floating_point():
                        yield f"{kind} '{name}'", value.detach()

    def describe_parameters(self) -> str:
        """The first non-finite checkpointed tensor, else the one of largest magnitude (finite weights can still
        overflow the forward pass)."""
        largest, largest_name = 0.0, ""
        for name, value in self.named_state_tensors():
            if not torch.isfinite(value).all():
                return f"{name} is non-finite"
            magnitude = float(value.abs().max()) if value.numel() else 0.0
            if magnitude > largest:
                largest, largest_name = magnitude, name
        return f"parameters are finite, the largest is {largest_name} ({largest:.3g})"

    def diverged(self, what: str, iteration: int) -> TrainingDiverged:
        """The one-line error for NaN/inf at `iteration`: what and which parameter, what was kept, what to change."""
        rates = {key: getattr(self.cfg, key) for key in ("lr_net", "lr_lmk", "lr_pose") if hasattr(self.cfg, key)}
        key = max(rates, key=rates.get)
        kept = self.recorder.checkpoint(self.stage)
        kept = f"the last checkpoint {kept} is kept" if kept.is_file() else "no checkpoint was written"
        return TrainingDiverged(f"{self.stage} training diverged at iteration {iteration}: {what}; "
                                f"{self.describe_parameters()}; {kept}; lower the learning rate ({key}={rates[key]:g})")

    def save_if_finite(self) -> None:
        """`save()`, refused when a parameter went NaN/inf: the diverged state must not replace the last good one
        (and would not load: checkpoints with NaN/inf are refused)."""
        for _, value in self.named_state_tensors():
            if not torch.isfinite(value).all():
                raise self.diverged("the optimizer step made a parameter non-finite", self.iteration)
        self.save()

    def forget_metrics_after_checkpoint(self) -> None:
        """A resumed run repeats the iterations logged after its checkpoint: drop those records first."""
        if self.iteration > 0:
            dropped = self.recorder.truncate_log_after(self.iteration)
            if dropped:
                log.info("metrics.jsonl: dropped %d records past iteration %d (logged after the last checkpoint)",
                         dropped, self.iteration)

    def stop_after_interrupt(self, interrupt: "_StopOnSigint") -> None:
        """Save the state of the last finished step, then end with a TrainingInterrupted naming it."""
        interrupt.saving = True
        self.save_if_finite()
        self.recorder.close()
        raise TrainingInterrupted(
            f"interrupted at {self.stage} iteration {self.iteration}: saved {self.recorder.checkpoint(self.stage)} "
            f"and {self.recorder.checkpoint(self.state_kind).name}; run the same command (with train.resume=true) "
            f"to continue from there")

    def fit(self) -> Dict[str, float]:
        """Train until `train.epochs` / `train.max_iters`; returns the last held-out metrics (empty without a split)."""
        self.set_train_mode(True)
        self.log_training_limit()
        self.forget_metrics_after_checkpoint()
        with _StopOnSigint() as interrupt:
            self.train_until_done_or(interrupt)
            if interrupt.requested:
                self.stop_after_interrupt(interrupt)
        self.save_if_finite()
        self.finish()
        evaluated_last = self.cfg.train.eval_every and self.iteration % self.cfg.train.eval_every == 0
        metrics = self.last_metrics if evaluated_last and self.last_metrics else self.log_evaluation()
        self.recorder.close()
        return metrics

    def train_until_done_or(self, interrupt: "_StopOnSigint") -> None:
        """The training loop; it also stops after the step during which Ctrl-C was pressed."""
        per_epoch = len(self.loader)
        progress = tqdm(total=self.total_iterations(), initial=self.iteration, desc=self.stage, dynamic_ncols=True)
        try:
            self.run_epochs(per_epoch, progress, interrupt)
        except RuntimeError as error:
            # Ctrl-C in a terminal also stops DataLoader workers, and the next fetch fails: the steps before it
            # are complete, so stop as interrupted rather than with the worker error.
            if not (interrupt.requested and "DataLoader worker" in str(error)):
                raise
        finally:
            progress.close()

    def run_epochs(self, per_epoch: int, progress: tqdm, interrupt: "_StopOnSigint") -> None:
        while not (self.done() or interrupt.requested):
            self.loader.sampler.set_position(self.epoch, self.iteration - self.epoch * per_epoch)
            for batch in self.loader:
                losses, total, visuals = self.checked_training_step(self.to_device(batch))
                self.iteration += 1
                progress.update(1)
                if self.iteration % self.cfg.recorder.log_freq == 0 or self.iteration == 1:
                    values = {f"loss_{name}": float(value.detach()) for name, value in losses.items()}
                    values["loss"] = float(total.detach())
                    values.update(self.log_extras())
                    self.recorder.log(self.iteration, self.epoch, values)
                    progress.set_postfix(loss=f"{values['loss']:.4f}")
                if self.iteration % self.cfg.recorder.show_freq == 0:
                    self.save_grid(batch, visuals, f"{self.iteration:06d}.jpg")
                if self.cfg.train.eval_every and self.iteration % self.cfg.train.eval_every == 0:
                    self.log_evaluation()
                if self.iteration % self.cfg.recorder.save_freq == 0:
                    self.save_if_finite()
                if self.done() or interrupt.requested:
                    break
            else:
                self.epoch += 1

    def finish(self) -> None:
        """Stage-specific outputs written once after the last iteration."""

    def save(self) -> None:
        self.recorder.save_checkpoints(self.checkpoint_states(), epoch=self.epoch)
        self.recorder.save_checkpoints({self.state_kind: training_state(self.optimizer, self.iteration, self.epoch,
                                                                        self.rng_states())})

    def log_evaluation(self) -> Dict[str, float]:
        self.set_train_mode(False)
        with torch.no_grad():
            metrics = self.evaluate()
        self.set_train_mode(True)
        if metrics:
            self.recorder.log(self.iteration, self.epoch, {f"eval_{k}": v for k, v in metrics.items()})
            path = self.recorder.result_dir / f"{self.stage}_eval.json"
            path.write_text(json.dumps({"iter": self.iteration, "epoch": self.epoch, **metrics}, indent=2))
            log.info("%s held-out: %s", self.stage, ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        self.last_metrics = metrics
        return metrics


class _StopOnSigint:
    """While training: the first Ctrl-C (SIGINT) asks the loop to stop after its current step, so the saved state
    is a finished step's; a second one stops at once, without saving, except while that save is being written
    (a half-written set of checkpoints would resume from mismatched files). Only the main thread owns signals."""

    def __init__(self):
        self.requested, self.saving = False, False
        self._previous: Optional[Any] = None

    def __enter__(self) -> "_StopOnSigint":
        # A run started with SIGINT ignored (nohup, a background job of a script) keeps ignoring it.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def _on_sigint(self, signum, frame) -> None:
        if self.saving:
            return
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: saving after this step and stopping (press it again to stop without saving)")

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
