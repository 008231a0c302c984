"""How long a Gaussian-head training run will take, from a short timed probe on this machine (`demo.py --video`).

The per-iteration cost is measured, not assumed: a throw-away trainer of the same config (same data, networks and
resolution; no compaction, no point edits, outputs in a temporary folder) times a few training steps at the
schedule's first and largest point counts. The run's cost is then the sum over its iterations of the cost at that
iteration's scheduled point count (interpolated linearly between the two probes), plus a no-grad render per frame
for evaluation and reenactment. The scheduled counts assume no point is pruned, so the estimate errs long.
Compaction's k-means and its quantised steps are not probed (measured on the CPU demo: a few percent of training).
"""
from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch

from cgha.avatar.model import model_config
from cgha.config import TrainConfig, config_from_dict, config_to_dict
from cgha.dataset import GaussianDataset
from cgha.points.config import PointsSection
from cgha.trainer.gaussian_head_trainer import GaussianHeadTrainer
from cgha.utils.device import synchronize

log = logging.getLogger(__name__)

WARMUP_STEPS = 1  # the first step pays for allocation and kernel selection
TIMED_STEPS = 3


@dataclass
class TrainingEstimate:
    """Measured step costs and what they add up to for one run.

    Attributes:
        iterations: the run's training iterations.
        step_seconds: {point count: seconds per training step} measured by the probe.
        render_seconds: seconds per no-grad frame (generate + render + post-render) at the largest count.
        training_seconds: estimated training time; render_frames, render_total_seconds: frames evaluation and
            reenactment render and their estimated time; probe_seconds: what the probe itself took.
    """
    iterations: int
    step_seconds: Dict[int, float]
    render_seconds: float
    training_seconds: float
    render_frames: int
    render_total_seconds: float
    probe_seconds: float

    @property
    def total_seconds(self) -> float:
        return self.training_seconds + self.render_total_seconds

    def to_dict(self) -> Dict[str, object]:
        return {"iterations": self.iterations, "step_seconds": {str(k): v for k, v in self.step_seconds.items()},
                "render_seconds": self.render_seconds, "training_seconds": self.training_seconds,
                "render_frames": self.render_frames, "render_total_seconds": self.render_total_seconds,
                "probe_seconds": self.probe_seconds}


def scheduled_point_counts(points: PointsSection, start: int, iterations: int) -> np.ndarray:
    """Gaussians during each of `iterations` steps [iterations] when nothing is pruned: `start`, multiplied by
    `points.growth` (ceil, capped at `points.max_points`) after every edit the schedule runs (cgha.points)."""
    counts = np.full(iterations, start, dtype=np.int64)
    if not points.editing:
        return counts
    count = start
    last = iterations if points.stop_iter == 0 else min(points.stop_iter, iterations)
    for edit in range(points.every, last + 1, points.every):  # an edit after step `edit` changes steps edit+1...
        count = min(points.max_points, int(np.ceil(count * points.growth)))
        counts[edit:] = count
    return counts


def _probe_config(cfg: TrainConfig, count: int, folder: str) -> TrainConfig:
    """`cfg` with `count` sphere points (a step's cost depends on the count, not on where the points start), no
    edits, no compaction, no resume, outputs under `folder`."""
    probe = config_from_dict(TrainConfig, config_to_dict(cfg), source="training-time probe")
    probe.points.init, probe.points.sphere_count, probe.points.every = "sphere", count, 0
    probe.compact.enable, probe.train.resume, probe.train.eval_every = False, False, 0
    probe.dataset.num_workers = 0
    probe.recorder.name, probe.recorder.checkpoint_path = "probe", folder
    probe.recorder.logdir, probe.recorder.result_path = f"{folder}/log", folder
    return probe


def _time_steps(cfg: TrainConfig, device: torch.device, dataset: GaussianDataset) -> tuple[float, float]:
    """(seconds per training step, seconds per no-grad frame) of a fresh trainer of `cfg`."""
    trainer = GaussianHeadTrainer(cfg, device, dataset)
    trainer.set_train_mode(True)
    batches = iter(trainer.loader)
    step_times: List[float] = []
    for step in range(WARMUP_STEPS + TIMED_STEPS):
        batch = trainer.to_device(next(batches))
        synchronize(device)
        start = time.perf_counter()
        trainer.checked_training_step(batch)
        synchronize(device)
        if step >= WARMUP_STEPS:
            step_times.append(time.perf_counter() - start)
    trainer.set_train_mode(False)
    with torch.no_grad():
        synchronize(device)
        start = time.perf_counter()
        _, render = trainer.forward(batch, pose_offsets=False)
        trainer.post_render(render)
        synchronize(device)
        render_time = time.perf_counter() - start
    trainer.recorder.close()
    return float(np.median(step_times)), render_time


def start_point_count(cfg: TrainConfig, device: torch.device) -> int:
    """The Gaussians a run of `cfg` starts from: the sphere's count, or the model's own start (e.g. a trained mesh
    head's points, which needs building the model on `device`)."""
    if cfg.points.init == "sphere":
        return cfg.points.sphere_count
    return model_config(cfg)[0].initialise(cfg, device).num_gaussians


def estimate_training(cfg: TrainConfig, device: torch.device, render_frames: int,
                      start_points: Optional[int] = None) -> TrainingEstimate:
    """Probe `cfg` (`train.max_iters` set; a sphere start, or a model's own start such as a trained mesh head's
    points) on `device`; `render_frames`: frames that evaluation and reenactment will render after training;
    `start_points`: the run's start count when the caller has it (`start_point_count`), else computed here."""
    begin = time.perf_counter()
    iterations = cfg.train.max_iters
    cls, model_cfg = model_config(cfg)
    start = start_points if start_points is not None else start_point_count(cfg, device)
    counts = scheduled_point_counts(cfg.points, start, iterations)
    probes = sorted({int(counts[0]), int(counts.max())})
    exp_dim, exp_dim_key = cls.config_expression_dim(model_cfg)
    dataset = GaussianDataset(cfg.dataset, split="train", expected_exp_dim=exp_dim, exp_dim_key=exp_dim_key)
    step_seconds: Dict[int, float] = {}
    render_seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="cgha_probe_") as folder:
        for count in probes:
            log.info("timing %d training steps at %d Gaussians (for the estimate)", TIMED_STEPS, count)
            step_seconds[count], render_seconds = _time_steps(_probe_config(cfg, count, folder), device, dataset)
    xs = np.array(probes, dtype=np.float64)
    ys = np.array([step_seconds[c] for c in probes])
    training = float(np.interp(counts.astype(np.float64), xs, ys).sum())
    return TrainingEstimate(iterations, step_seconds, render_seconds, training, render_frames,
                            render_frames * render_seconds, time.perf_counter() - begin)
