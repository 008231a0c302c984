"""GaussianHeadTrainer: fits any avatar model (cgha.avatar.model) and its post-render step to a subject — GHA's
stage 2 for the `gha` model — with codebook compaction as a strategy (cgha.compact.strategy)."""
from __future__ import annotations

import logging
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from cgha.addons.hooks import TrainingAddons
from cgha.avatar.gaussians import Gaussians
from cgha.avatar.inference import (batch_render_inputs, load_delta_poses, load_model, render_batch,
                                   render_gaussians)
from cgha.avatar.model import AvatarModel, model_config
from cgha.avatar.post_render import build_post_render, has_weights
from cgha.avatar.subject import AvatarSubject
from cgha.compact.gaussian_mask import GaussianMask
from cgha.compact.quantizer import GroupSpec
from cgha.compact.strategy import CompactionStrategy
from cgha.config import TrainConfig, loss_weights
from cgha.dataset import GaussianDataset, make_loader
from cgha.dataset.loader import evenly_spaced_indices
from cgha.errors import CheckpointError, ConfigError
from cgha.module.super_resolution import load_super_resolution
from cgha.points import PointStrategy, sphere_points
from cgha.recorder.checkpoint import load_file
from cgha.recorder.images import grid
from cgha.trainer.augment import SCALE_RANGE, random_scale_crop
from cgha.trainer.base import Trainer
from cgha.trainer.expression_prior import PriorTargets, subject_prior_targets
from cgha.trainer.progress import check_gaussian_coverage
from cgha.utils.device import use_fast_training_kernels
from cgha.utils.lpips import load_lpips_loss
from cgha.utils.metrics import psnr, ssim

log = logging.getLogger(__name__)


def stage2_losses(model: AvatarModel, post_render: nn.Module, batch: Dict[str, torch.Tensor],
                  delta_poses: Optional[torch.Tensor], rng: random.Random, backend: str, lpips_loss=None,
                  attributes: Optional[Dict[str, torch.Tensor]] = None,
                  crop_scale_range: Tuple[float, float] = SCALE_RANGE, sr_residual: bool = False,
                  calibrate: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                  transform: Optional[Callable[[Gaussians], Gaussians]] = None):
    """GHA's stage-2 losses by weight name: L1 of the render's RGB channels at its own resolution, L1 of the
    post-rendered augmented crop (zoomed by a factor in `crop_scale_range`), LPIPS on it when `lpips_loss` is given,
    and, when `sr_residual`, the mean absolute difference between the post-rendered crop and the bilinearly
    upsampled render (`sr_residual_loss`). `calibrate` (addons.color_calibration) maps the render before every loss;
    `transform` (compact.mask) the posed Gaussians before rendering. Returns (losses, visuals)."""
    _, render = render_batch(model, post_render, batch, delta_poses, backend, attributes, transform)
    if calibrate is not None:
        render = calibrate(render)
    _, _, image, visible = batch_render_inputs(batch, post_render)
    losses = {"rgb_lr": F.l1_loss(render[:, :3] * visible, image * visible)}
    cropped_render, cropped_image, cropped_visible = random_scale_crop(render, batch["images"], batch["visibles"], rng,
                                                                       crop_scale_range)
    output = post_render(cropped_render)
    losses["rgb_hr"] = F.l1_loss(output * cropped_visible, cropped_image * cropped_visible)
    if lpips_loss is not None:
        losses["vgg"] = lpips_loss(output * cropped_visible, cropped_image * cropped_visible, normalize=True).mean()
    if sr_residual:
        losses["sr_residual"] = sr_residual_loss(output, cropped_render)
    return losses, {"render": render, "output": output, "target": cropped_image}


def sr_residual_loss(output: torch.Tensor, render: torch.Tensor) -> torch.Tensor:
    """Mean |output - bilinear upsampling of the render's RGB|: output [B, 3, R, R], render [B, C, r, r] (C >= 3).

    Not in GHA. What the super-resolution net adds beyond plain upsampling is unconstrained wherever the training
    views gave it no target (zooms and viewpoints off the rig), where it shows as speckle and halos; this prior pulls
    that addition toward zero everywhere, so only detail the data keep asking for survives (issue 16 item 3).
    """
    base = F.interpolate(render[:, :output.shape[1]].float(), size=output.shape[-2:], mode="bilinear",
                         align_corners=False).clamp(0.0, 1.0)
    return (output.float() - base).abs().mean()


def random_state_as_lists(rng: random.Random) -> Dict[str, Any]:
    """`rng.getstate()` in types `torch.load(weights_only=True)` reads back (ints and lists, no tuples)."""
    version, internal, gauss_next = rng.getstate()
    return {"version": version, "internal": list(internal), "gauss_next": gauss_next}


def random_state_from_lists(state: Dict[str, Any]) -> tuple:
    """The inverse of `random_state_as_lists`, for `rng.setstate`."""
    return int(state["version"]), tuple(int(value) for value in state["internal"]), state["gauss_next"]


def make_optimizer(cfg: TrainConfig, model: AvatarModel, post_render: nn.Module,
                   delta_poses: torch.Tensor) -> torch.optim.Adam:
    """Adam with the model's learning rates (GHA's: networks at lr_net, per-Gaussian tensors at fractions of it), the
    post-render net at lr_net and the pose offsets at lr_pose (when optimize_pose).

    Parameters that share a learning rate share a group, and on CUDA Adam is the fused implementation: the step's
    cost is mostly per group and per launch (GHA's 13 groups with the default multi-tensor Adam took 2 ms of a
    GHA-scale step on an H100)."""
    lr = cfg.lr_net
    by_lr: Dict[float, List[nn.Parameter]] = {}
    by_lr.setdefault(lr, []).extend(post_render.parameters())
    for params, group_lr in model.parameter_groups(lr):
        by_lr.setdefault(group_lr, []).extend(params)
    if cfg.optimize_pose:
        by_lr.setdefault(cfg.lr_pose, []).append(delta_poses)
    groups = [{"params": params, "lr": group_lr} for group_lr, params in by_lr.items() if params]
    on_cuda = all(p.is_cuda for params in by_lr.values() for p in params)
    return torch.optim.Adam(groups, fused=on_cuda or None)


class GaussianHeadTrainer(Trainer):
    """Owns the avatar model, its post-render net, per-frame pose offsets, optimiser, compaction, data and outputs."""

    stage = "gaussianhead"

    def __init__(self, cfg: TrainConfig, device: torch.device, dataset: GaussianDataset,
                 eval_datasets: Optional[Dict[str, GaussianDataset]] = None):
        super().__init__(cfg, device)
        self.dataset, self.eval_datasets = dataset, eval_datasets or {}
        self.weights = loss_weights(cfg, "gaussianhead")
        self.lpips = load_lpips_loss(self.weights["vgg"], device)
        self.rng = random.Random(cfg.train.seed)
        self.started = time.perf_counter()
        use_fast_training_kernels(device)
        self.model_class, _ = model_config(cfg)
        # A super-resolution net is built before the model, as it always was: layer initialisation draws from
        # torch's global generator, so the order keeps seeded runs identical.
        supres_first = cfg.model.post_render == "super_resolution"
        self.post_render = self._build_post_render(None) if supres_first else None
        self.model = self._initial_model()
        if self.post_render is None:
            self.post_render = self._build_post_render(self.model.color_dim)
        self.model.configure_training(cfg.train.amp, cfg.train.cuda_graphs and device.type == "cuda")
        if cfg.train.cuda_graphs and device.type == "cuda":
            self.post_render.use_cuda_graphs()
        self.delta_poses = torch.nn.Parameter(torch.zeros(dataset.num_frames, 6, device=device),
                                              requires_grad=cfg.optimize_pose)
        self._load_start_checkpoints()
        self.optimizer = make_optimizer(cfg, self.model, self.post_render, self.delta_poses)
        self.addons = TrainingAddons(cfg.addons, len(dataset.cameras), device)
        if self.addons.parameters():
            self.optimizer.add_param_group({"params": self.addons.parameters(), "lr": cfg.addons.calibration_lr})
        self.strategy = self.model.training_strategy(cfg)
        self.mask = self._gaussian_mask()
        self.loader = make_loader(dataset, cfg.batch_size, shuffle=True, num_workers=cfg.dataset.num_workers,
                                  seed=cfg.train.seed, device=device)
        self.compaction = self._initial_compaction()
        self.points = PointStrategy(cfg.points, cfg.train.seed) if cfg.points.editing else None
        start_warning = self.points.start_warning(self.model.num_gaussians) if self.points is not None else None
        if start_warning:
            log.warning(start_warning)
        # What reenactment needs to drive this avatar with anyone's motion (its own neutral pose and scale).
        self.subject_record = AvatarSubject.of(dataset.subject)
        self.subject_record.save(self.recorder.files.subject)
        self.try_resume()
        # After resuming: a damaged checkpoint is reported before any other work or log line.
        self.expression_prior = self._expression_prior_targets()

    # ------------------------------------------------------------------------------------------ set-up
    def _expression_prior_targets(self) -> Optional[PriorTargets]:
        """The face model's expression motion of this subject for the `expression_prior` loss term
        (cgha/trainer/expression_prior.py), or None when its weight is 0."""
        if self.weights["expression_prior"] <= 0:
            return None
        if self.model_class.kind != "gha":
            raise ConfigError(f"train.loss_weights.expression_prior regularises GHA's expression deformation MLP; "
                              f"model.kind '{self.model_class.kind}' has none: set it to 0")
        if self.cfg.train.cuda_graphs and self.device.type == "cuda":
            raise ConfigError("train.loss_weights.expression_prior runs the expression MLP outside the CUDA graphs of "
                              "the training step: set train.cuda_graphs=false with it")
        model = self.model
        return subject_prior_targets(self.dataset, self.cfg.train, model.landmarks_3d_neutral,
                                     model.cfg.dist_threshold_near, model.cfg.dist_threshold_far, self.device)

    def _gaussian_mask(self) -> Optional[GaussianMask]:
        """Learned Gaussian masking (compact.mask, cgha/compact/gaussian_mask.py) with its optimiser group, or None
        when its weight is 0. Its logits are restored with the training state when resuming."""
        mask_cfg = self.cfg.compact.mask
        if mask_cfg.weight <= 0:
            return None
        if self.cfg.points.editing or self.strategy is not None:
            raise ConfigError("compact.mask deletes Gaussians itself; it does not run beside another strategy that "
                              "edits them (points.every > 0, or the rigged model's densification): set "
                              "compact.mask.weight=0 or switch the other off")
        mask = GaussianMask(mask_cfg, self.model.num_gaussians, self.device)
        # eps as Lee et al.'s (3DGS's) Adam: the masking loss's gradient per logit is ~weight / N (1e-9 here), which
        # the default eps of 1e-8 would all but stop.
        self.optimizer.add_param_group({"params": [mask.logits], "lr": mask_cfg.lr, "eps": 1e-15})
        self.weights["gaussian_mask"] = mask_cfg.weight
        return mask

    @property
    def model_kind(self) -> str:
        """RunRecorder name of the model's checkpoint (GHA's `gaussianhead`)."""
        return self.model_class.checkpoint_kind

    def _build_post_render(self, color_dim: Optional[int]) -> nn.Module:
        """`model.post_render`'s module; `color_dim` (the model's channels) matters only to `none`."""
        post_render = build_post_render(self.cfg.model.post_render, self.cfg.supresmodule, color_dim,
                                        amp=self.cfg.train.amp)
        return post_render.to(self.device)

    def _initial_model(self) -> AvatarModel:
        """Own checkpoint (resume) > load_gaussianhead_checkpoint > the model's own initialisation."""
        own = self.recorder.checkpoint(self.model_kind)
        for path in (own if self.cfg.train.resume else None, self.cfg.load_gaussianhead_checkpoint):
            if path and Path(path).is_file():
                log.info("avatar model from %s", path)
                return load_model(self.cfg, path, self.device)
        source = self.cfg.load_gaussianhead_checkpoint
        if source and Path(source).resolve() != own.resolve():
            raise CheckpointError(f"load_gaussianhead_checkpoint not found: {source}")
        if self.cfg.points.init == "sphere":
            model = self._model_on_sphere()
        else:
            model = self.model_class.initialise(self.cfg, self.device)
        log.info("%s avatar model initialised (points.init %s): %d Gaussians", self.model_class.kind,
                 self.cfg.points.init, model.num_gaussians)
        return model

    def _model_on_sphere(self) -> AvatarModel:
        """MonoGaussianAvatar's start: points.sphere_count points on a sphere, the first frame's landmarks as the
        neutral ones (as the mesh head starts), no mesh head."""
        points = self.cfg.points
        generator = torch.Generator().manual_seed(self.cfg.train.seed)
        xyz = sphere_points(points.sphere_count, points.sphere_radius, generator)
        landmarks = torch.from_numpy(self.dataset.subject.neutral_landmarks())
        return self.model_class.from_point_cloud(self.cfg, xyz, landmarks).to(self.device)

    def _load_start_checkpoints(self) -> None:
        """Post-render weights and pose offsets: own checkpoints when resuming, else the configured ones."""
        configured = {"supres": self.cfg.load_supres_checkpoint, "delta_poses": self.cfg.load_delta_poses_checkpoint}
        if not has_weights(self.post_render):
            configured.pop("supres")
        for kind, path_configured in configured.items():
            own = self.recorder.checkpoint(kind)
            path = own if self.cfg.train.resume and own.is_file() else path_configured
            if not path or not Path(path).is_file():
                if path and Path(path).resolve() != own.resolve():
                    raise CheckpointError(f"load_{kind}_checkpoint not found: {path}")
                continue
            if kind == "supres":
                load_super_resolution(self.post_render, path)
            else:
                with torch.no_grad():
                    self.delta_poses.copy_(load_delta_poses(path, self.delta_poses.shape[0]))

    def _initial_compaction(self) -> Optional[CompactionStrategy]:
        """The compaction strategy (when compact.enable), restored from this run's own state when resuming."""
        compact = self.cfg.compact
        if not compact.enable:
            return None
        start = compact.start_iter if compact.start_iter >= 0 else compact.start_epoch * len(self.loader)
        strategy = CompactionStrategy(compact, GroupSpec.of(self.model), start, self.cfg.train.seed, self.device)
        own = self.recorder.checkpoint("quantizer")
        if self.cfg.train.resume and own.is_file():
            try:
                strategy.load_state_dict(load_file(own, "quantizer checkpoint"))
            except ValueError as error:
                raise CheckpointError(f"{own}: {error}") from None
        return strategy

    def load_own_checkpoints(self) -> None:
        """Weights were already read from this run's own files by the constructor."""

    def rng_states(self) -> Dict[str, Any]:
        states: Dict[str, Any] = {"augmentation_rng": random_state_as_lists(self.rng)}
        if self.points is not None:
            states["point_strategy"] = self.points.state_dict()
        if self.strategy is not None:
            states["model_strategy"] = self.strategy.state_dict()
        if self.mask is not None:
            states["gaussian_mask"] = self.mask.state_dict()
        addons = self.addons.state_dict()
        if addons:
            states["addons"] = addons
        return states

    def restore_rng_states(self, saved: Dict[str, Any]) -> None:
        super().restore_rng_states(saved)
        if self.points is not None and "point_strategy" in saved:
            self.points.load_state_dict(saved["point_strategy"])
        if self.strategy is not None and "model_strategy" in saved:
            self.strategy.load_state_dict(saved["model_strategy"])
        self.addons.load_state_dict(saved.get("addons", {}))
        if self.mask is not None:
            self.mask.load_state_dict(saved["gaussian_mask"])
        if "augmentation_rng" in saved:
            self.rng.setstate(random_state_from_lists(saved["augmentation_rng"]))
        else:
            log.warning("this training state predates saved augmentation RNG states: the resumed run's crops "
                        "restart from train.seed and will differ from an uninterrupted run")

    def checkpoint_states(self):
        states = {self.model_kind: self.model.state_dict(), "delta_poses": self.delta_poses.detach().clone()}
        if has_weights(self.post_render):
            states["supres"] = self.post_render.state_dict()
        quantizer = self.compaction.state_dict() if self.compaction is not None else None
        if quantizer is not None:
            states["quantizer"] = quantizer
        return states

    # ------------------------------------------------------------------------------------------ hooks
    def quantized_attributes(self) -> Optional[Dict[str, torch.Tensor]]:
        """Straight-through quantised attributes once compaction has started, else None (the continuous ones)."""
        return self.compaction.attributes(self.model) if self.compaction is not None else None

    def before_step(self) -> None:
        if self.compaction is not None:
            self.compaction.before_step(self.model, self.iteration)

    def step_weights(self) -> ContextManager:
        if self.compaction is None:
            return nullcontext()
        return self.compaction.network_weights(self.model, self.post_render, self.iteration)

    def after_step(self) -> None:
        if self.compaction is not None:
            self.compaction.after_step(self.model, self.iteration)
        if self.mask is not None:
            self.prune_masked()
        if self.points is not None:
            # self.iteration counts the steps before this one. An edit does not depend on the run's length (so an
            # extended run equals a longer one): points.stop_iter ends the edits before the last steps.
            self.points.step(self.model, self.optimizer, self.compaction, self.iteration + 1)
        if self.strategy is not None:
            self.strategy.step(self.model, self.optimizer, self.compaction, self.iteration + 1)

    def prune_masked(self) -> None:
        """Every compact.mask.prune_every steps and after the run's last step (so that the saved avatar holds only
        the Gaussians training rendered), delete the masked Gaussians."""
        done = self.iteration + 1  # self.iteration counts the steps before this one
        if done % self.cfg.compact.mask.prune_every and done != self.total_iterations():
            return
        before = self.model.num_gaussians
        deleted = self.mask.prune(self.model, self.optimizer, self.compaction)
        if deleted:
            log.info("compact.mask at iteration %d: deleted %d of %d Gaussians, %d left", done, deleted, before,
                     self.model.num_gaussians)

    def log_extras(self) -> Dict[str, float]:
        """The Gaussian count (it changes with cgha/points edits), seconds since this process started training and,
        on CUDA, the peak memory so far: what a point-count/quality-over-time plot and a memory table need."""
        extras = {"num_gaussians": float(self.model.num_gaussians),
                  "train_seconds": time.perf_counter() - self.started}
        if self.device.type == "cuda":
            extras["cuda_peak_mib"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return extras

    def finish(self) -> None:
        """Write the compressed avatar and compact_report.json once compaction has run."""
        if self.compaction is None:
            return
        raw = {kind: self.recorder.checkpoint(kind) for kind in (self.model_kind, "supres")}
        self.compaction.write(self.recorder.files, self.model, self.post_render, raw, {"iter": self.iteration},
                              subject=self.subject_record.to_dict())

    def set_train_mode(self, training: bool) -> None:
        self.model.train(training)
        self.post_render.train(training)

    # ------------------------------------------------------------------------------------------- steps
    def fit(self) -> Dict[str, float]:
        self.started = time.perf_counter()
        self.check_coverage()
        return super().fit()

    @torch.no_grad()
    def check_coverage(self) -> None:
        """Before training: the avatar rendered from every camera of the first training frame must overlap some of
        their masks, or the run stops with the likely causes (cameras, resolution, scale, pose convention) instead
        of training on garbage. Reads no random numbers, so seeded and resumed runs are unaffected."""
        views = GaussianDataset(self.cfg.dataset, views="all", subject=self.dataset.subject)
        batch = self.to_device(default_collate([views[index] for index in range(len(views.cameras))]))
        gaussians = self.model.generate(batch["exp_coeff"], batch["pose"], batch["scale"])
        suffix, Ks, image, _ = batch_render_inputs(batch, self.post_render)
        _, alpha = render_gaussians(gaussians, batch["viewmat"], Ks, image.shape[-1], self.cfg.render.backend,
                                    with_alpha=True)
        check_gaussian_coverage(alpha, batch[f"masks{suffix}"], self.iteration)

    def forward(self, batch: Dict[str, torch.Tensor], pose_offsets: bool = True):
        """Generate and render at the post-render step's input size: -> (Gaussians, render [B, C, r, r])."""
        delta = self.delta_poses if pose_offsets else None
        return render_batch(self.model, self.post_render, batch, delta, self.cfg.render.backend,
                            self.quantized_attributes(), self.mask_transform())

    def mask_transform(self) -> Optional[Callable[[Gaussians], Gaussians]]:
        return self.mask.apply if self.mask is not None else None

    def compute_losses(self, batch: Dict[str, torch.Tensor]):
        batch = self.addons.prepare_batch(batch, self.iteration, self.total_iterations())
        attributes = self.quantized_attributes()
        losses, visuals = stage2_losses(self.model, self.post_render, batch, self.delta_poses, self.rng,
                                        self.cfg.render.backend, self.lpips, attributes,
                                        tuple(self.cfg.train.crop_scale_range),
                                        sr_residual=self.weights["sr_residual"] > 0,
                                        calibrate=self.addons.calibration(batch), transform=self.mask_transform())
        losses.update(self.model.regularisers(attributes))
        if self.expression_prior is not None:
            losses["expression_prior"] = self.expression_prior.loss(self.model.pos_embedding, self.model.exp_deform_mlp,
                                                                    self.model.cfg.deform_scale)
        if self.mask is not None:
            losses["gaussian_mask"] = self.mask.loss()
        losses.update(self.addons.losses(visuals, batch))
        return losses, visuals

    def save_grid(self, batch, visuals, name: str) -> None:
        """Target, render (first 3 channels), cropped target, post-rendered output."""
        row = [batch["images"][0].to(self.device), visuals["render"][0, :3], visuals["target"][0], visuals["output"][0]]
        self.recorder.save_image(name, grid([row], labels=["target", "render", "crop", "output"]))

    def evaluate(self) -> Dict[str, float]:
        """PSNR / SSIM at the output resolution on each held-out split (no pose offsets for unseen frames)."""
        metrics: Dict[str, float] = {}
        for split, dataset in self.eval_datasets.items():
            psnrs, ssims = [], []
            for index in evenly_spaced_indices(len(dataset), self.cfg.eval.max_images):
                batch = self.to_device({key: value[None] for key, value in dataset[index].items()})
                _, render = self.forward(batch, pose_offsets=split != "test_frames")
                output = self.post_render(render).clamp(0, 1).float()
                psnrs.append(psnr(output, batch["images"]))
                ssims.append(ssim(output, batch["images"]))
            if psnrs:
                metrics[f"{split}_psnr"] = float(torch.cat(psnrs).mean())
                metrics[f"{split}_ssim"] = float(torch.cat(ssims).mean())
        return metrics
