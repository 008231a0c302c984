"""MeshHeadTrainer: fits the mesh head to multi-view masks, colours and 3D landmarks (GHA's stage 1)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from cgha.config import TrainConfig, loss_weights
from cgha.dataset import MeshDataset, make_loader
from cgha.errors import CheckpointError
from cgha.module.mesh_head import MeshHeadModule, pretrain_sphere, warm_up_expression_deformation, world_to_canonical
from cgha.recorder.checkpoint import load_file, load_state_dict_into
from cgha.recorder.images import grid, normals_to_image, overlay_mask
from cgha.render.multiview import render_mesh_views
from cgha.trainer.base import Trainer
from cgha.trainer.expression_prior import PriorTargets, fit_expression_prior, subject_prior_targets
from cgha.trainer.mesh_losses import laplacian_loss, soft_iou_loss
from cgha.trainer.progress import check_mesh_progress, check_silhouette_overlap
from cgha.utils.mesh_io import write_obj, write_ply
from cgha.utils.metrics import mask_iou, psnr

log = logging.getLogger(__name__)


def load_mesh_head(module: MeshHeadModule, path: str | Path) -> None:
    """Load a mesh-head checkpoint (ours or GHA's, whose stored tet grid is ignored) into `module`."""
    state = load_file(path, "mesh-head checkpoint")
    load_state_dict_into(module, module.without_grid_buffers(state), path, "mesh-head checkpoint")


class MeshHeadTrainer(Trainer):
    """Owns the module, optimiser, data and outputs of one mesh-head run; `fit()` trains, resumable.

    A run that cannot make progress stops with cgha/trainer/progress.py's NoProgressError: before its first step
    when no rendered silhouette meets a mask, and at its first evaluation when the held-out mask IoU is 0.
    """

    stage = "meshhead"

    def __init__(self, cfg: TrainConfig, device: torch.device, dataset: MeshDataset,
                 eval_dataset: Optional[MeshDataset] = None):
        super().__init__(cfg, device)
        self.dataset, self.eval_dataset = dataset, eval_dataset
        self.weights = loss_weights(cfg, "meshhead")
        self.module = MeshHeadModule(cfg.meshheadmodule, dataset.init_landmarks_3d_neutral).to(device)
        networks = [p for name, p in self.module.named_parameters() if name != "landmarks_3d_neutral"]
        self.optimizer = torch.optim.Adam([{"params": [self.module.landmarks_3d_neutral], "lr": cfg.lr_lmk},
                                           {"params": networks, "lr": cfg.lr_net}])
        self.loader = make_loader(dataset, cfg.batch_size, shuffle=True, num_workers=cfg.dataset.num_workers,
                                  seed=cfg.train.seed, device=device)
        self.progress_unchecked = True
        resumed = self.try_resume()
        # After resuming: a damaged checkpoint is reported before any other work or log line.
        self.expression_prior = self._expression_prior_targets()
        if not resumed:
            self._initialise()

    def _initialise(self) -> None:
        """Start from `load_meshhead_checkpoint` when it exists, else from an SDF sphere."""
        source, own = self.cfg.load_meshhead_checkpoint, self.recorder.checkpoint(self.stage)
        if source and Path(source).is_file():
            load_mesh_head(self.module, source)
            log.info("initialised from %s", source)
            return
        if source and Path(source).resolve() != own.resolve():
            raise CheckpointError(f"load_meshhead_checkpoint not found: {source}")
        loss = pretrain_sphere(self.module, self.cfg.train.pretrain_sphere_iters, self.device, seed=self.cfg.train.seed)
        log.info("SDF sphere pre-training: %d steps, final MSE %.2e", self.cfg.train.pretrain_sphere_iters, loss)
        steps = self.cfg.train.deform_warmup_iters
        if steps:
            frames = {key: value.to(self.device) for key, value in self.dataset.landmark_targets().items()}
            target = world_to_canonical(frames["landmarks_3d"], frames["pose"], frames["scale"])
            loss = warm_up_expression_deformation(self.module, frames["exp_coeff"], target, steps, self.cfg.lr_net)
            log.info("expression deformation warm-up on the landmarks of %d frames: %d steps, final MSE %.2e",
                     target.shape[0], steps, loss)
        steps = self.cfg.train.deform_prior_iters
        if steps:
            generator = torch.Generator().manual_seed(self.cfg.train.seed)
            loss = fit_expression_prior(self.module, self.expression_prior, steps, self.cfg.lr_net, generator)
            log.info("expression prior: the expression deformation fitted to the face model's in %d steps, final "
                     "MSE %.2e", steps, loss)

    def _expression_prior_targets(self) -> Optional[PriorTargets]:
        """The face model's expression motion of this subject (cgha/trainer/expression_prior.py) when the warm start
        or the loss term asks for it. Built from the initial neutral landmarks, so a resumed run has the same."""
        if not self.cfg.train.deform_prior_iters and self.weights["expression_prior"] <= 0:
            return None
        module, landmarks = self.cfg.meshheadmodule, self.dataset.init_landmarks_3d_neutral.to(self.device)
        return subject_prior_targets(self.dataset, self.cfg.train, landmarks, module.dist_threshold_near,
                                     module.dist_threshold_far, self.device)

    def load_own_checkpoints(self) -> None:
        load_mesh_head(self.module, self.recorder.checkpoint(self.stage))

    def checkpoint_states(self) -> Dict[str, Dict[str, torch.Tensor]]:
        return {self.stage: self.module.state_dict()}

    def set_train_mode(self, training: bool) -> None:
        self.module.train(training)

    def compute_losses(self, batch: Dict[str, torch.Tensor]):
        """All loss terms by weight name, plus the renders (for images). batch: a collated MeshDataset batch."""
        module = self.module
        neutral = module.landmarks_3d_neutral.expand(batch["exp_coeff"].shape[0], -1, -1)
        target = world_to_canonical(batch["landmarks_3d"], batch["pose"], batch["scale"])
        losses = {"def": F.mse_loss(module.deform(neutral, batch["exp_coeff"]), target),
                  "lmk": module.query_sdf(module.landmarks_3d_neutral).abs().mean()}
        recon = module.reconstruct(batch["exp_coeff"], batch["pose"], batch["scale"])
        renders = render_mesh_views(recon["verts"], recon["faces"], recon["colors"], batch["viewmats"],
                                    batch["intrinsics"], self.cfg.dataset.resolution, self.cfg.render.mesh_sigma)
        visible = batch["visibles"]
        losses["rgb"] = F.l1_loss(renders["images"][:, :, :3] * visible, batch["images"] * visible)
        losses["sil"] = soft_iou_loss(renders["soft_masks"] * visible, batch["masks"] * visible)
        losses["offset"] = recon["exp_deform"].pow(2).sum(-1).mean() + recon["pose_deform"].pow(2).sum(-1).mean()
        losses["lap"] = laplacian_loss(recon["verts"], recon["faces"])
        if self.expression_prior is not None:
            losses["expression_prior"] = self.expression_prior.loss(module.pos_embedding, module.exp_deform_mlp,
                                                                    module.cfg.deform_scale)
        return losses, renders

    def fit(self) -> Dict[str, float]:
        self.check_silhouettes_meet_masks()
        return super().fit()

    @torch.no_grad()
    def check_silhouettes_meet_masks(self) -> None:
        """Before training: render every training view of the first training frame; when no silhouette meets its
        mask, stop. Deterministic (no random views), so resuming a run reproduces the uninterrupted one. A mesh
        without faces (an SDF not yet crossing zero) is no evidence: the landmark loss can still pull a surface out."""
        batch = self.to_device({key: value[None] for key, value in self.dataset.all_views(0).items()})
        recon = self.module.reconstruct(batch["exp_coeff"], batch["pose"], batch["scale"])
        if recon["faces"].shape[0] == 0:
            return
        renders = render_mesh_views(recon["verts"], recon["faces"], recon["colors"], batch["viewmats"],
                                    batch["intrinsics"], self.cfg.dataset.resolution, soft=False)
        check_silhouette_overlap(renders["masks"], batch["masks"], self.iteration)

    def save_grid(self, batch, renders, name: str) -> None:
        """Ground truth, render, normals and silhouette overlay for up to four views of the first frame."""
        views = min(4, batch["images"].shape[1])
        columns = []
        for view in range(views):
            gt, mask = batch["images"][0, view], batch["masks"][0, view].to(self.device)
            render, hard = renders["images"][0, view, :3], renders["masks"][0, view]
            gt = gt.to(self.device)
            columns.append([gt, render, normals_to_image(renders["normals"][0, view], hard),
                            overlay_mask(gt, hard, (mask > 0.5).float())])
        rows = [list(row) for row in zip(*columns)]
        self.recorder.save_image(name, grid(rows, labels=[f"view {v}" for v in range(views)]))

    def finish(self) -> None:
        with torch.no_grad():
            neutral = self.module.reconstruct_neutral()
        verts, faces = neutral["verts"].cpu().numpy(), neutral["faces"].cpu().numpy()
        write_obj(self.recorder.result_dir / "meshhead_neutral.obj", verts, faces)
        write_ply(self.recorder.result_dir / "meshhead_neutral.ply", verts, faces)

    def evaluate(self) -> Dict[str, float]:
        """Mean hard-mask IoU and masked RGB PSNR over every (frame, camera) of the held-out split."""
        dataset = self.eval_dataset
        if dataset is None or len(dataset) == 0:
            return {}
        ious, psnrs = [], []
        for index in range(len(dataset)):
            batch = self.to_device({key: value[None] for key, value in dataset.all_views(index).items()})
            recon = self.module.reconstruct(batch["exp_coeff"], batch["pose"], batch["scale"])
            renders = render_mesh_views(recon["verts"], recon["faces"], recon["colors"], batch["viewmats"],
                                        batch["intrinsics"], self.cfg.dataset.resolution, soft=False)
            ious.append(mask_iou(renders["masks"][0, :, 0], batch["masks"][0, :, 0]))
            psnrs.append(psnr(renders["images"][0, :, :3], batch["images"][0]))
        metrics = {"mask_iou": float(torch.cat(ious).mean()), "psnr": float(torch.cat(psnrs).mean()),
                   "views": int(sum(len(x) for x in ious))}
        if self.progress_unchecked:
            self.progress_unchecked = False
            check_mesh_progress(metrics, self.iteration)
        return metrics
