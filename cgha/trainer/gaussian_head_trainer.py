"""GaussianHeadTrainer: fits the dynamic Gaussian head and the super-resolution network (GHA's stage 2)."""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from cgha.compact.avatar_file import load_compact_avatar, save_compact_avatar, write_report
from cgha.compact.codec import is_compact_file
from cgha.compact.quantizer import GroupedQuantizer
from cgha.config import TrainConfig, loss_weights
from cgha.dataset import GaussianDataset, make_loader
from cgha.dataset.loader import evenly_spaced_indices
from cgha.errors import CheckpointError, ConfigError
from cgha.module.gaussian_head import GaussianHeadModule
from cgha.module.mesh_head import MeshHeadModule
from cgha.module.super_resolution import SuperResolutionModule
from cgha.recorder.checkpoint import load_file, load_state_dict_into
from cgha.recorder.images import grid
from cgha.render.gaussians import rasterize_gaussians
from cgha.trainer.augment import random_scale_crop
from cgha.trainer.base import Trainer
from cgha.trainer.mesh_head_trainer import load_mesh_head
from cgha.utils.device import use_fast_training_kernels
from cgha.utils.metrics import psnr, ssim

log = logging.getLogger(__name__)

COMPACT_FILE = "gaussianhead_compact.cgha"
# GHA's learning rates relative to lr_net.
RELATIVE_LR = {"xyz": 0.1, "feature": 0.1, "scales": 0.3, "rotation": 0.1, "opacity": 1.0}


def load_gaussian_head(cfg: TrainConfig, path: str | Path, device: torch.device) -> GaussianHeadModule:
    """A Gaussian head rebuilt from its checkpoint, raw or compact (the number of Gaussians comes from the file)."""
    if is_compact_file(path):
        module, _, _ = load_compact_avatar(path, device)
        return module
    state = load_file(path, "Gaussian-head checkpoint")
    try:
        module = GaussianHeadModule.from_state_dict(cfg.gaussianheadmodule, state)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: not a Gaussian-head checkpoint ({error})") from None
    load_state_dict_into(module, state, path, "Gaussian-head checkpoint")
    return module.to(device)


def load_super_resolution(supres: SuperResolutionModule, path: str | Path) -> None:
    """Load a super-resolution checkpoint (ours or GHA's `supres_latest`) into `supres`."""
    load_state_dict_into(supres, load_file(path, "super-resolution checkpoint"), path, "super-resolution checkpoint")


def load_avatar_files(cfg, head_path: str | Path, supres_path: Optional[str | Path], device: torch.device
                      ) -> Tuple[GaussianHeadModule, SuperResolutionModule]:
    """The Gaussian head and super-resolution net in eval mode: both from a compact file, else from the raw
    `head_path` and `supres_path` (the caller has checked that they exist). `cfg`: a TrainConfig or ReenactConfig
    (its gaussianheadmodule / supresmodule sections build raw models)."""
    if is_compact_file(head_path):
        module, supres, _ = load_compact_avatar(head_path, device)
        return module.eval(), supres.eval()
    module = load_gaussian_head(cfg, head_path, device)
    supres = SuperResolutionModule(cfg.supresmodule).to(device)
    load_super_resolution(supres, supres_path)
    return module.eval(), supres.eval()


def load_delta_poses(path: str | Path, num_frames: int) -> torch.Tensor:
    """Per-frame pose offsets [num_frames, 6] saved by training (rows indexed by the subject's frame id)."""
    value = load_file(path, "delta-poses checkpoint")
    if not isinstance(value, torch.Tensor) or value.shape != (num_frames, 6):
        shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CheckpointError(f"{path}: delta poses must be a [{num_frames}, 6] tensor (one row per frame of this "
                              f"subject), got {shape}")
    return value.float()


def render_gaussians(generated: Dict[str, torch.Tensor], viewmats: torch.Tensor, Ks: torch.Tensor, size: int,
                     backend: str) -> torch.Tensor:
    """Rasterise generated Gaussians over a white background (GHA): -> [B, C, size, size]."""
    color = generated["color"]
    background = color.new_ones(color.shape[0], color.shape[-1])
    out = rasterize_gaussians(generated["xyz"], generated["rotation"], generated["scales"],
                              generated["opacity"][..., 0], color, viewmats, Ks, size, size,
                              backgrounds=background, backend=backend)
    return out["image"]


def generate_and_render(module: GaussianHeadModule, batch: Dict[str, torch.Tensor],
                        delta_poses: Optional[torch.Tensor], backend: str,
                        attributes: Optional[Dict[str, torch.Tensor]] = None):
    """Posed Gaussians of a GaussianDataset batch and their render at the coarse size: -> (generated, [B, C, r, r]).

    `attributes` substitutes per-Gaussian attributes (the quantised ones during compaction)."""
    # index_select, not indexing: its backward is an index_add, where advanced indexing's sorts the indices.
    pose = batch["pose"] if delta_poses is None else batch["pose"] + delta_poses.index_select(0, batch["exp_id"])
    generated = module.generate(batch["exp_coeff"], pose, batch["scale"], attributes=attributes)
    render = render_gaussians(generated, batch["viewmat"], batch["intrinsics_coarse"], batch["images_coarse"].shape[-1],
                              backend)
    return generated, render


def stage2_losses(module: GaussianHeadModule, supres: SuperResolutionModule, batch: Dict[str, torch.Tensor],
                  delta_poses: torch.Tensor, rng: random.Random, backend: str, lpips_loss=None,
                  attributes: Optional[Dict[str, torch.Tensor]] = None):
    """GHA's stage-2 losses by weight name: L1 of the coarse render's RGB channels, L1 of the super-resolved
    augmented crop, and LPIPS on it when `lpips_loss` is given. Returns (losses, visuals for image grids)."""
    _, render = generate_and_render(module, batch, delta_poses, backend, attributes)
    visible_coarse = batch["visibles_coarse"]
    losses = {"rgb_lr": F.l1_loss(render[:, :3] * visible_coarse, batch["images_coarse"] * visible_coarse)}
    cropped_render, cropped_image, cropped_visible = random_scale_crop(render, batch["images"], batch["visibles"], rng)
    output = supres(cropped_render)
    losses["rgb_hr"] = F.l1_loss(output * cropped_visible, cropped_image * cropped_visible)
    if lpips_loss is not None:
        losses["vgg"] = lpips_loss(output * cropped_visible, cropped_image * cropped_visible, normalize=True).mean()
    return losses, {"render": render, "output": output, "target": cropped_image}


def make_optimizer(cfg: TrainConfig, module: GaussianHeadModule, supres: SuperResolutionModule,
                   delta_poses: torch.Tensor) -> torch.optim.Adam:
    """Adam with GHA's learning rates: networks at lr_net, per-Gaussian tensors at GHA's fractions of it, pose
    offsets at lr_pose (when optimize_pose).

    Parameters that share a learning rate share a group, and on CUDA Adam is the fused implementation: the step's
    cost is mostly per group and per launch (GHA's 13 groups with the default multi-tensor Adam took 2 ms of a
    GHA-scale step on an H100)."""
    lr = cfg.lr_net
    by_lr: Dict[float, list] = {}
    by_lr.setdefault(lr, []).extend(supres.parameters())
    for name, scale in RELATIVE_LR.items():
        by_lr.setdefault(lr * scale, []).append(getattr(module, name))
    for name in ("exp_color_mlp", "pose_color_mlp", "exp_attributes_mlp", "pose_attributes_mlp", "exp_deform_mlp",
                 "pose_deform_mlp"):
        by_lr[lr].extend(getattr(module, name).parameters())
    if cfg.optimize_pose:
        by_lr.setdefault(cfg.lr_pose, []).append(delta_poses)
    groups = [{"params": params, "lr": group_lr} for group_lr, params in by_lr.items()]
    on_cuda = all(p.is_cuda for params in by_lr.values() for p in params)
    return torch.optim.Adam(groups, fused=on_cuda or None)


class GaussianHeadTrainer(Trainer):
    """Owns the Gaussian head, super-resolution net, per-frame pose offsets, optimiser, data and outputs."""

    stage = "gaussianhead"

    def __init__(self, cfg: TrainConfig, device: torch.device, dataset: GaussianDataset,
                 eval_datasets: Optional[Dict[str, GaussianDataset]] = None):
        super().__init__(cfg, device)
        self.dataset, self.eval_datasets = dataset, eval_datasets or {}
        self.weights = loss_weights(cfg, "gaussianhead")
        self.lpips = _lpips_or_error(self.weights["vgg"], device)
        self.rng = random.Random(cfg.train.seed)
        use_fast_training_kernels(device)
        self.supres = SuperResolutionModule(cfg.supresmodule, amp=cfg.train.amp).to(device)
        self.module = self._initial_module()
        self.module.amp = cfg.train.amp
        if cfg.train.cuda_graphs and device.type == "cuda":
            self.module.use_cuda_graphs()
            self.supres.use_cuda_graphs()
        self.delta_poses = torch.nn.Parameter(torch.zeros(dataset.num_frames, 6, device=device),
                                              requires_grad=cfg.optimize_pose)
        self._load_start_checkpoints()
        self.optimizer = make_optimizer(cfg, self.module, self.supres, self.delta_poses)
        self.loader = make_loader(dataset, cfg.batch_size, shuffle=True, num_workers=cfg.dataset.num_workers,
                                  seed=cfg.train.seed, device=device)
        self.quantizer = self._initial_quantizer()
        compact = cfg.compact
        self.compact_start = compact.start_iter if compact.start_iter >= 0 else compact.start_epoch * len(self.loader)
        self.try_resume()

    # ------------------------------------------------------------------------------------------ set-up
    def _initial_module(self) -> GaussianHeadModule:
        """Own checkpoint (resume) > load_gaussianhead_checkpoint > initialisation from the mesh head."""
        own = self.recorder.checkpoint(self.stage)
        for path in (own if self.cfg.train.resume else None, self.cfg.load_gaussianhead_checkpoint):
            if path and Path(path).is_file():
                log.info("Gaussian head from %s", path)
                return load_gaussian_head(self.cfg, path, self.device)
        source = self.cfg.load_gaussianhead_checkpoint
        if source and Path(source).resolve() != own.resolve():
            raise CheckpointError(f"load_gaussianhead_checkpoint not found: {source}")
        mesh_path = self.cfg.load_meshhead_checkpoint
        if not mesh_path or not Path(mesh_path).is_file():
            raise CheckpointError(f"mesh-head checkpoint not found: '{mesh_path}' (load_meshhead_checkpoint); "
                                  "train the mesh head first with train_meshhead.py")
        state = load_file(mesh_path, "mesh-head checkpoint")
        if "landmarks_3d_neutral" not in state:
            raise CheckpointError(f"{mesh_path}: not a mesh-head checkpoint (no landmarks_3d_neutral)")
        mesh_head = MeshHeadModule(self.cfg.meshheadmodule, state["landmarks_3d_neutral"]).to(self.device)
        load_mesh_head(mesh_head, mesh_path)
        module = GaussianHeadModule.from_mesh_head(self.cfg.gaussianheadmodule, mesh_head, seed=self.cfg.train.seed)
        log.info("Gaussian head initialised from %s: %d Gaussians", mesh_path, module.num_gaussians)
        return module.to(self.device)

    def _load_start_checkpoints(self) -> None:
        """Super-resolution weights and pose offsets: own checkpoints when resuming, else the configured ones."""
        for kind, configured in (("supres", self.cfg.load_supres_checkpoint),
                                 ("delta_poses", self.cfg.load_delta_poses_checkpoint)):
            own = self.recorder.checkpoint(kind)
            path = own if self.cfg.train.resume and own.is_file() else configured
            if not path or not Path(path).is_file():
                if path and Path(path).resolve() != own.resolve():
                    raise CheckpointError(f"load_{kind}_checkpoint not found: {path}")
                continue
            if kind == "supres":
                load_super_resolution(self.supres, path)
            else:
                self._load_delta_poses(path)

    def _load_delta_poses(self, path) -> None:
        with torch.no_grad():
            self.delta_poses.copy_(load_delta_poses(path, self.delta_poses.shape[0]))

    def _initial_quantizer(self) -> Optional[GroupedQuantizer]:
        """The codebooks (when compact.enable), restored from this run's own `quantizer_latest` when resuming."""
        if not self.cfg.compact.enable:
            return None
        quantizer = GroupedQuantizer.from_config(self.cfg.compact, seed=self.cfg.train.seed).to(self.device)
        own = self.recorder.checkpoint("quantizer")
        if self.cfg.train.resume and own.is_file():
            try:  # the codebook buffers take the stored shapes (they are empty until k-means has run)
                quantizer.load_state_dict(load_file(own, "quantizer checkpoint"))
            except (RuntimeError, KeyError, ValueError) as error:
                raise CheckpointError(f"{own}: not a quantizer for compact.groups {self.cfg.compact.groups} "
                                      f"({str(error).splitlines()[0]})") from None
        return quantizer

    def load_own_checkpoints(self) -> None:
        """Weights were already read from this run's own files by the constructor."""

    def checkpoint_states(self):
        states = {"gaussianhead": self.module.state_dict(), "supres": self.supres.state_dict(),
                  "delta_poses": self.delta_poses.detach().clone()}
        if self.quantizer is not None and self.quantizer.initialised:
            states["quantizer"] = self.quantizer.state_dict()
        return states

    # ------------------------------------------------------------------------------------------ compaction
    @property
    def compacting(self) -> bool:
        return self.quantizer is not None and self.iteration >= self.compact_start

    def _detached_attributes(self) -> Dict[str, torch.Tensor]:
        return {key: value.detach() for key, value in self.module.canonical_attributes().items()}

    def quantized_attributes(self) -> Optional[Dict[str, torch.Tensor]]:
        """Straight-through quantised attributes once compaction has started, else None (the continuous ones)."""
        if not self.compacting or not self.quantizer.initialised:
            return None
        return self.quantizer.quantized_attributes(self.module.canonical_attributes())

    def before_step(self) -> None:
        if self.compacting and not self.quantizer.initialised:
            self.quantizer.initialise(self._detached_attributes())
            log.info("compaction starts at iteration %d: codebooks %s", self.iteration, self.quantizer.codebook_sizes())

    def after_step(self) -> None:
        """Codebook rows follow their members every step; indices are re-assigned every compact.assign_every."""
        if not self.compacting:
            return
        attributes = self._detached_attributes()
        with torch.no_grad():
            if (self.iteration + 1 - self.compact_start) % self.cfg.compact.assign_every == 0:
                self.quantizer.reassign(attributes)
            self.quantizer.refresh(attributes)

    def finish(self) -> None:
        """Write the compressed avatar and compact_report.json once compaction has run."""
        if self.quantizer is None or not self.quantizer.initialised:
            return
        directory = self.recorder.checkpoint_dir
        path = directory / COMPACT_FILE
        save_compact_avatar(path, self.module, self.supres, self.quantizer, self.cfg.compact)
        raw = {kind: self.recorder.checkpoint(kind) for kind in ("gaussianhead", "supres")}
        report = write_report(directory / "compact_report.json", path, raw,
                              {"num_gaussians": self.module.num_gaussians,
                               "codebook_sizes": self.quantizer.codebook_sizes(), "iter": self.iteration})
        log.info("compressed avatar %s: %.2f MB vs %.2f MB raw (%.1fx)", path, report["compact_bytes"] / 1e6,
                 report["raw_bytes"] / 1e6, report["ratio"])

    def set_train_mode(self, training: bool) -> None:
        self.module.train(training)
        self.supres.train(training)

    # ------------------------------------------------------------------------------------------- steps
    def forward(self, batch: Dict[str, torch.Tensor], pose_offsets: bool = True):
        """Generate, render at 1/4 resolution: -> (generated Gaussians, render [B, C, r, r])."""
        delta = self.delta_poses if pose_offsets else None
        return generate_and_render(self.module, batch, delta, self.cfg.render.backend, self.quantized_attributes())

    def compute_losses(self, batch: Dict[str, torch.Tensor]):
        return stage2_losses(self.module, self.supres, batch, self.delta_poses, self.rng, self.cfg.render.backend,
                             self.lpips, self.quantized_attributes())

    def save_grid(self, batch, visuals, name: str) -> None:
        """Target, coarse render (first 3 channels), cropped target, super-resolved output."""
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
                output = self.supres(render).clamp(0, 1).float()
                psnrs.append(psnr(output, batch["images"]))
                ssims.append(ssim(output, batch["images"]))
            if psnrs:
                metrics[f"{split}_psnr"] = float(torch.cat(psnrs).mean())
                metrics[f"{split}_ssim"] = float(torch.cat(ssims).mean())
        return metrics


def _lpips_or_error(weight: float, device: torch.device):
    """The LPIPS (VGG) loss when its weight is > 0; it needs the optional `lpips` package and its weights."""
    if weight <= 0:
        return None
    try:
        import lpips

        return lpips.LPIPS(net="vgg", verbose=False).to(device).eval().requires_grad_(False)
    except Exception as error:  # import error, or the VGG weights cannot be downloaded offline
        raise ConfigError(f"'train.loss_weights.vgg' is {weight} but LPIPS is unavailable ({type(error).__name__}: "
                          f"{error}); install `lpips` with its weights or set train.loss_weights.vgg=0") from None
