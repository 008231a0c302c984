"""Prior training over K identities on one or many processes (torchrun: DDP, gradients all-reduced).

Each process owns a shard of the identities (every world-th one) and loads only their images. Step t of process r
renders identities_per_step / world identities of its shard, views_per_identity random views each; the loss is the
mean over its images, and DDP averages the gradients over the processes, so every step follows the gradient of the
mean over identities_per_step x views_per_identity images whatever the number of processes. Which identities and
views step t draws is a function of (train.seed, t, rank, identity) alone, not of a running generator: resuming
at step t continues exactly, and with identities_per_step = K a run on N processes draws the same images as on one.
Only rank 0 writes (RunRecorder: `prior_latest`, `prior_train_state_latest`, config.yaml, metrics.jsonl,
`prior_train_summary.json`).
"""
from __future__ import annotations

import inspect
import json
import logging
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from cgha.avatar.gaussians import Gaussians
from cgha.avatar.inference import render_gaussians
from cgha.config import config_from_dict
from cgha.errors import CheckpointError, ConfigError
from cgha.prior.config import PriorConfig, PriorModelConfig
from cgha.prior.data import Views, ensure_identities, load_views, prior_identities, shard_identities
from cgha.prior.distributed import Process, barrier, mean_over_processes, sum_over_processes
from cgha.prior.geometry import fit_identity_code, load_face_model
from cgha.prior.model import GaussianPrior
from cgha.recorder.checkpoint import load_file, training_state
from cgha.recorder.run_files import RunFiles
from cgha.recorder.run_recorder import RunRecorder
from cgha.synthetic.landmarks import NUM_LANDMARKS
from cgha.utils.device import synchronize

log = logging.getLogger(__name__)

PRIOR_KIND = "prior"  # RunRecorder name of the prior's checkpoint: prior_latest
STATE_KIND = "prior_train_state"
SUMMARY_FILE = "prior_train_summary.json"
_WARMUP_STEPS = 3  # steps left out of the throughput (allocator, autotuning, first-call compilation)


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, step, ...): the generator of one draw of one step."""
    value = 0x9E3779B97F4A7C15
    for part in parts:
        value = (value * 6364136223846793005 + int(part) + 1442695040888963407) % (1 << 63)
    return value


def concat_gaussians(parts: List[Gaussians]) -> Gaussians:
    """Gaussians of several batches with the same N, stacked along the batch ([sum B, N, ...]); extras dropped."""
    return Gaussians(*(torch.cat([getattr(part, name) for part in parts]) for name in
                       ("means", "quats", "scales", "opacities", "features")))


class PriorObjective(nn.Module):
    """The prior's loss on one process's share of a step (the module DDP wraps, so its backward all-reduces)."""

    def __init__(self, prior: GaussianPrior, cfg: PriorConfig):
        super().__init__()
        self.prior, self.cfg = prior, cfg

    def forward(self, items: List[Tuple[int, Dict[str, torch.Tensor]]]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """items: (identity position, views batch: image [V, 3, R, R], Ks, viewmats, pose, scale, exp, and for an
        encoder prior encoder_image [1, 3, R, R]) -> (weighted total, terms by name)."""
        prior, train = self.prior, self.cfg.train
        parts, offsets, latents = [], [], []
        for position, batch in items:
            latent = prior.training_latent(position, batch.get("encoder_image"))
            gaussians = prior.identity_gaussians(latent, prior.shape_codes[position], batch["exp"], batch["pose"],
                                                 batch["scale"])
            parts.append(gaussians)
            offsets.append(gaussians.extras["offset_sigma"].square().mean())
            latents.append(latent.square().sum())
        images = torch.cat([batch["image"] for _, batch in items])
        viewmats = torch.cat([batch["viewmats"] for _, batch in items])
        Ks = torch.cat([batch["Ks"] for _, batch in items])
        render = render_gaussians(concat_gaussians(parts), viewmats, Ks, images.shape[-1], self.cfg.render.backend)
        terms = {"rgb": F.l1_loss(render, images), "latent": torch.stack(latents).mean(),
                 "offset": torch.stack(offsets).mean()}
        total = terms["rgb"] + train.latent_weight * terms["latent"] + train.offset_weight * terms["offset"]
        return total, terms


def wrap_ddp(module: nn.Module, proc: Process) -> DistributedDataParallel:
    """`module` under DDP on this process's device. Its buffers (geometry, shape codes) are equal on every process
    by construction, so they are not broadcast before each step (that would send megabytes of mesh per step)."""
    no_sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
               else "broadcast_buffers")
    device_ids = [proc.device.index] if proc.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, **{no_sync: False})


class PriorTrainer:
    """Builds the prior, its data shard and optimiser for one process, resumes, and runs `fit()`."""

    def __init__(self, cfg: PriorConfig, proc: Process, progress: bool = True):
        self.cfg, self.proc, self.progress = cfg, proc, progress and proc.is_writer
        self.model_cfg = config_from_dict(PriorModelConfig, cfg.model.options, "config 'model.options'")
        self.model_cfg.check()
        self.identities = prior_identities(cfg.data)
        self.positions = self._my_positions()
        paths = ensure_identities(cfg.data, [self.identities[p] for p in self.positions], progress=self.progress)
        # Start-up grows with the shard: a bar and the seconds logged say where a slow start goes.
        started = time.perf_counter()
        self.views: Dict[int, Views] = {
            p: load_views(path, cfg.data.resolution).to(proc.device)
            for p, path in tqdm(list(zip(self.positions, paths)), desc="load identities", disable=not self.progress)}
        log.info("rank %d: %d identities' views loaded in %.1f s", proc.rank, len(paths), time.perf_counter() - started)
        self.face_model, geometry = load_face_model(self.model_cfg.face_model_samples,
                                                    self.model_cfg.face_model_components)
        meta = {"identities": [f"id{i:04d}" for i in self.identities], "generator_identities": self.identities,
                "face_model": self.face_model.meta(), "resolution": cfg.data.resolution}
        started = time.perf_counter()
        self.prior = GaussianPrior.create(self.model_cfg, geometry, self._shape_codes(), meta).to(proc.device)
        log.info("rank %d: face-model codes and the prior built in %.1f s", proc.rank, time.perf_counter() - started)
        self.recorder = RunRecorder(cfg.recorder, cfg) if proc.is_writer else None
        self.files = RunFiles.of(cfg)
        # The codes learn at their own rate (each is updated only when its identity is drawn); an encoder learns
        # with the decoders.
        groups = [{"params": [p for name, p in self.prior.named_parameters() if name != "latents"],
                   "lr": cfg.train.lr}]
        if not self.prior.uses_encoder:
            groups.append({"params": [self.prior.latents], "lr": cfg.train.lr_latent})
        self.optimizer = torch.optim.Adam(groups)
        self.iteration = 0
        self._resume()
        objective = PriorObjective(self.prior, cfg)
        self.objective = wrap_ddp(objective, proc) if proc.distributed else objective

    # ------------------------------------------------------------------------------------------ set-up
    def _my_positions(self) -> List[int]:
        """Positions (into the identity list) of this process's shard; ConfigError when the batch cannot be split."""
        train, world = self.cfg.train, self.proc.world
        if train.identities_per_step % world:
            raise ConfigError(f"'train.identities_per_step' ({train.identities_per_step}) must be a multiple of the "
                              f"number of processes ({world})")
        mine = shard_identities(list(range(len(self.identities))), self.proc.rank, world)
        if len(mine) < train.identities_per_step // world:
            raise ConfigError(f"'train.identities_per_step' is {train.identities_per_step}: each of the {world} "
                              f"processes needs {train.identities_per_step // world} identities per step but holds "
                              f"{len(mine)} of the {len(self.identities)} (data.num_identities)")
        return mine

    def _shape_codes(self) -> torch.Tensor:
        """Face-model identity codes [K, C] of every identity: each process fits its shard's, then they are summed
        over the processes (the other rows are zero), so every process holds all of them."""
        codes = torch.zeros(len(self.identities), self.face_model.num_identity, dtype=torch.float64)
        for position, views in self.views.items():
            codes[position] = fit_identity_code(self.face_model, views.landmarks[:, :NUM_LANDMARKS].cpu(),
                                                views.exp.cpu(), views.pose.cpu(), views.scale.cpu(),
                                                f"identity {self.identities[position]}").double()
        return sum_over_processes(codes.to(self.proc.device), self.proc).float().cpu()

    def _resume(self) -> None:
        """Continue from this run's own prior_latest + prior_train_state_latest when train.resume and they exist."""
        own, state_path = self.files.checkpoint(PRIOR_KIND), self.files.checkpoint(STATE_KIND)
        if not (self.cfg.train.resume and own.is_file() and state_path.is_file()):
            return
        saved = GaussianPrior.from_checkpoint(load_file(own, "prior checkpoint"), str(own))
        state = load_file(state_path, "prior training state")
        try:
            self.prior.load_state_dict(saved.state_dict())
            self.optimizer.load_state_dict(state["optimizer"])
            self.iteration = int(state["iter"])
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"{own}: cannot resume this prior with this config ({str(error).splitlines()[0]}); "
                                  f"set train.resume=false or another recorder.name to start a new run") from None
        saved_world = int(state.get("world_size", self.proc.world))
        if saved_world != self.proc.world:
            log.warning("resuming a %d-process run on %d processes: the identities each step draws differ from "
                        "the uninterrupted run's", saved_world, self.proc.world)
        log.info("resuming the prior at step %d", self.iteration)

    # ------------------------------------------------------------------------------------------- steps
    def step_items(self, step: int) -> List[Tuple[int, Dict[str, torch.Tensor]]]:
        """This process's identities and views of `step` (see the module docstring)."""
        train = self.cfg.train
        count = train.identities_per_step // self.proc.world
        order = torch.randperm(len(self.positions), generator=torch.Generator().manual_seed(
            step_seed(train.seed, step, self.proc.rank)))[:count]
        items = []
        for local in sorted(order.tolist()):
            position = self.positions[local]
            views = self.views[position]
            draw = torch.Generator().manual_seed(step_seed(train.seed, step, 1 << 20, position))
            index = torch.randint(len(views), (train.views_per_identity,), generator=draw)
            batch = views.batch(index, self.proc.device)
            if self.prior.uses_encoder:
                # The encoder reads another random view of the identity (any frame and camera), so that it learns
                # the person, not the view: one-shot photos come from one unknown camera and expression.
                seen = torch.Generator().manual_seed(step_seed(train.seed, step, 2 << 20, position))
                batch["encoder_image"] = views.batch(torch.randint(len(views), (1,), generator=seen),
                                                     self.proc.device)["image"]
            items.append((position, batch))
        return items

    def save(self) -> None:
        if self.recorder is not None:
            self.recorder.save_checkpoints({PRIOR_KIND: self.prior.checkpoint()})
            self.recorder.save_checkpoints({STATE_KIND: training_state(self.optimizer, self.iteration, 0,
                                                                       {"world_size": self.proc.world})})
        barrier(self.proc)

    def fit(self) -> Dict[str, Any]:
        """Train to train.iters; returns the summary (also written as prior_train_summary.json by rank 0)."""
        train, device = self.cfg.train, self.proc.device
        start_iteration = self.iteration
        started = time.perf_counter()
        bar = tqdm(total=train.iters, initial=self.iteration, desc="prior", dynamic_ncols=True,
                   disable=not self.progress)
        timed_from: Optional[float] = None
        timed_steps = 0
        terms: Dict[str, torch.Tensor] = {}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        while self.iteration < train.iters:
            if self.iteration - start_iteration == _WARMUP_STEPS:
                synchronize(device)
                timed_from = time.perf_counter()
            total, terms = self.objective(self.step_items(self.iteration))
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            self.optimizer.step()
            self.iteration += 1
            if timed_from is not None:
                timed_steps += 1
            bar.update(1)
            if self.iteration % self.cfg.recorder.log_freq == 0 or self.iteration == train.iters:
                values = mean_over_processes({f"loss_{k}": float(v.detach()) for k, v in terms.items()}
                                             | {"loss": float(total.detach())}, self.proc)
                # Seconds since this process started training and rank 0's peak memory: a run stopped early
                # (timeout, Ctrl-C) still tells its time and memory.
                values["train_seconds"] = time.perf_counter() - started
                if device.type == "cuda":
                    values["cuda_peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
                if self.recorder is not None:
                    self.recorder.log(self.iteration, 0, values)
                bar.set_postfix(loss=f"{values['loss']:.4f}")
            if self.iteration % self.cfg.recorder.save_freq == 0:
                self.save()
        bar.close()
        synchronize(device)
        # None (JSON null), not NaN, when no step was timed: NaN is not JSON and strict readers reject the summary.
        seconds = time.perf_counter() - timed_from if timed_from is not None else None
        self.save()
        return self._summary(timed_steps, seconds, terms)

    def _summary(self, steps: int, seconds: Optional[float], terms: Dict[str, torch.Tensor]) -> Dict[str, Any]:
        train, device = self.cfg.train, self.proc.device
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        images = train.identities_per_step * train.views_per_identity
        summary = {"processes": self.proc.world, "device": str(device), "identities": len(self.identities),
                   "iters": self.iteration, "timed_steps": steps, "timed_seconds": seconds,
                   "steps_per_s": steps / seconds if steps else None,
                   "identities_per_s": steps * train.identities_per_step / seconds if steps else None,
                   "images_per_s": steps * images / seconds if steps else None,
                   "cuda_peak_mib_rank0": peak,
                   "final_loss": mean_over_processes({k: float(v.detach()) for k, v in terms.items()}, self.proc),
                   "checkpoint": str(self.files.checkpoint(PRIOR_KIND))}
        if self.recorder is not None:
            path = self.recorder.result_dir / SUMMARY_FILE
            path.write_text(json.dumps(summary, indent=2) + "\n")
            self.recorder.close()
        return summary

