"""The loop both training stages share: epochs/iteration limits, logging, images, checkpoints, resume, evaluation.

A stage subclasses `Trainer` and provides `compute_losses(batch) -> (losses by weight name, visuals)`,
`save_grid(batch, visuals, name)`, `checkpoint_states() -> {kind: state}`, `load_own_checkpoints()` and
`evaluate() -> metrics`.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, Tuple

import torch
from tqdm import tqdm

from cgha.config import TrainConfig
from cgha.errors import CheckpointError
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
        except (KeyError, ValueError, TypeError) as error:
            # E.g. a state written by another version whose optimizer grouped the parameters differently.
            raise CheckpointError(f"{state_path}: cannot resume from this {self.stage} training state ({error}); "
                                  f"set train.resume=false to start a new run instead") from None
        log.info("resuming %s at iteration %d (epoch %d)", own.parent, self.iteration, self.epoch)
        return True

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

    def before_step(self) -> None:
        """Called before each training step's forward pass (e.g. to start compaction)."""

    def after_step(self) -> None:
        """Called after each optimizer step (e.g. to refresh codebooks)."""

    def training_step(self, batch: Dict[str, torch.Tensor]):
        self.before_step()
        losses, visuals = self.compute_losses(batch)
        total = sum(self.weights[name] * value for name, value in losses.items() if self.weights[name] > 0)
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite {self.stage} loss at iteration {self.iteration}: "
                                     + ", ".join(f"{k}={float(v.detach()):.3g}" for k, v in losses.items()))
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.after_step()
        return losses, total, visuals

    def fit(self) -> Dict[str, float]:
        """Train until `train.epochs` / `train.max_iters`; returns the last held-out metrics (empty without a split)."""
        self.set_train_mode(True)
        per_epoch = len(self.loader)
        progress = tqdm(total=self.total_iterations(), initial=self.iteration, desc=self.stage, dynamic_ncols=True)
        while not self.done():
            self.loader.sampler.set_position(self.epoch, self.iteration - self.epoch * per_epoch)
            for batch in self.loader:
                losses, total, visuals = self.training_step(self.to_device(batch))
                self.iteration += 1
                progress.update(1)
                if self.iteration % self.cfg.recorder.log_freq == 0 or self.iteration == 1:
                    values = {f"loss_{name}": float(value.detach()) for name, value in losses.items()}
                    values["loss"] = float(total.detach())
                    self.recorder.log(self.iteration, self.epoch, values)
                    progress.set_postfix(loss=f"{values['loss']:.4f}")
                if self.iteration % self.cfg.recorder.show_freq == 0:
                    self.save_grid(batch, visuals, f"{self.iteration:06d}.jpg")
                if self.cfg.train.eval_every and self.iteration % self.cfg.train.eval_every == 0:
                    self.log_evaluation()
                if self.iteration % self.cfg.recorder.save_freq == 0:
                    self.save()
                if self.done():
                    break
            else:
                self.epoch += 1
        progress.close()
        self.save()
        self.finish()
        evaluated_last = self.cfg.train.eval_every and self.iteration % self.cfg.train.eval_every == 0
        metrics = self.last_metrics if evaluated_last and self.last_metrics else self.log_evaluation()
        self.recorder.close()
        return metrics

    def finish(self) -> None:
        """Stage-specific outputs written once after the last iteration."""

    def save(self) -> None:
        self.recorder.save_checkpoints(self.checkpoint_states(), epoch=self.epoch)
        self.recorder.save_checkpoints({self.state_kind: training_state(self.optimizer, self.iteration, self.epoch)})

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
