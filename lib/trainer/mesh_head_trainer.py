"""MeshHeadTrainer: fits the mesh head to multi-view masks, colours and 3D landmarks (GHA's stage 1)."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lib.config import TrainConfig, loss_weights
from lib.dataset import MeshDataset, make_loader
from lib.errors import CheckpointError
from lib.module.mesh_head import MeshHeadModule, pretrain_sphere, world_to_canonical
from lib.recorder.checkpoint import load_file, load_state_dict_into, training_state
from lib.recorder.images import grid, normals_to_image, overlay_mask
from lib.recorder.run_recorder import RunRecorder
from lib.render.multiview import render_mesh_views
from lib.trainer.mesh_losses import laplacian_loss, soft_iou_loss
from lib.utils.mesh_io import write_obj, write_ply
from lib.utils.metrics import mask_iou, psnr

log = logging.getLogger(__name__)
KIND = "meshhead"
STATE_KIND = "meshhead_train_state"


class MeshHeadTrainer:
    """Owns the module, optimiser, data and outputs of one mesh-head run; `fit()` trains, resumable."""

    def __init__(self, cfg: TrainConfig, device: torch.device, dataset: MeshDataset,
                 eval_dataset: Optional[MeshDataset] = None):
        self.cfg, self.device = cfg, device
        self.dataset, self.eval_dataset = dataset, eval_dataset
        self.weights = loss_weights(cfg, "meshhead")
        self.module = MeshHeadModule(cfg.meshheadmodule, dataset.init_landmarks_3d_neutral).to(device)
        networks = [p for name, p in self.module.named_parameters() if name != "landmarks_3d_neutral"]
        self.optimizer = torch.optim.Adam([{"params": [self.module.landmarks_3d_neutral], "lr": cfg.lr_lmk},
                                           {"params": networks, "lr": cfg.lr_net}])
        self.recorder = RunRecorder(cfg.recorder, cfg)
        self.loader = make_loader(dataset, cfg.batch_size, shuffle=True, num_workers=cfg.dataset.num_workers,
                                  seed=cfg.train.seed, device=device)
        self.iteration, self.epoch = 0, 0
        self._restore()

    # ------------------------------------------------------------------------------------------ set-up
    def _restore(self) -> None:
        """Resume this run when its own checkpoints exist; else start from `load_meshhead_checkpoint` or a sphere."""
        own, state = self.recorder.checkpoint(KIND), self.recorder.checkpoint(STATE_KIND)
        if self.cfg.train.resume and own.is_file() and state.is_file():
            load_state_dict_into(self.module, self.module.load_gha_state_dict(load_file(own, "mesh-head checkpoint")), own, "mesh-head checkpoint")
            saved = load_file(state, "training state")
            try:
                self.optimizer.load_state_dict(saved["optimizer"])
                self.iteration, self.epoch = int(saved["iter"]), int(saved["epoch"])
            except (KeyError, ValueError, TypeError) as error:
                raise CheckpointError(f"{state}: not a mesh-head training state ({error})") from None
            log.info("resuming %s at iteration %d (epoch %d)", own.parent, self.iteration, self.epoch)
            return
        source = self.cfg.load_meshhead_checkpoint
        if source and Path(source).is_file():
            load_state_dict_into(self.module, self.module.load_gha_state_dict(load_file(source, "mesh-head checkpoint")), source,
                                 "mesh-head checkpoint")
            log.info("initialised from %s", source)
            return
        if source and Path(source).resolve() != own.resolve():
            raise CheckpointError(f"load_meshhead_checkpoint not found: {source}")
        loss = pretrain_sphere(self.module, self.cfg.train.pretrain_sphere_iters, self.device, seed=self.cfg.train.seed)
        log.info("SDF sphere pre-training: %d steps, final MSE %.2e", self.cfg.train.pretrain_sphere_iters, loss)

    # ------------------------------------------------------------------------------------------- steps
    def _to_device(self, batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

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
        losses["offset"] = (recon["exp_deform"].pow(2).sum(-1).mean() + recon["pose_deform"].pow(2).sum(-1).mean())
        losses["lap"] = laplacian_loss(recon["verts"], recon["faces"])
        return losses, renders, recon

    def _done(self) -> bool:
        train = self.cfg.train
        return ((train.max_iters > 0 and self.iteration >= train.max_iters)
                or (train.epochs > 0 and self.epoch >= train.epochs))

    def _total(self) -> int:
        train, per_epoch = self.cfg.train, len(self.loader)
        limits = [train.max_iters] if train.max_iters > 0 else []
        if train.epochs > 0:
            limits.append(train.epochs * per_epoch)
        return min(limits)

    def fit(self) -> Dict[str, float]:
        """Train until `train.epochs` / `train.max_iters`; returns the held-out metrics (when there is a split)."""
        self.module.train()
        per_epoch = len(self.loader)
        progress = tqdm(total=self._total(), initial=self.iteration, desc="mesh head", dynamic_ncols=True)
        while not self._done():
            self.loader.sampler.set_position(self.epoch, self.iteration - self.epoch * per_epoch)
            for batch in self.loader:
                batch = self._to_device(batch)
                losses, renders, recon = self.compute_losses(batch)
                total = sum(self.weights[name] * value for name, value in losses.items())
                if not torch.isfinite(total):
                    raise FloatingPointError(f"non-finite mesh-head loss at iteration {self.iteration}: "
                                             + ", ".join(f"{k}={float(v):.3g}" for k, v in losses.items()))
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
                self.iteration += 1
                progress.update(1)
                if self.iteration % self.cfg.recorder.log_freq == 0 or self.iteration == 1:
                    values = {f"loss_{name}": float(value.detach()) for name, value in losses.items()}
                    values["loss"] = float(total.detach())
                    self.recorder.log(self.iteration, self.epoch, values)
                    progress.set_postfix(loss=f"{values['loss']:.4f}", sil=f"{values['loss_sil']:.3f}")
                if self.iteration % self.cfg.recorder.show_freq == 0:
                    self._save_grid(batch, renders, f"{self.iteration:06d}.jpg")
                if self.cfg.train.eval_every and self.iteration % self.cfg.train.eval_every == 0:
                    self._log_eval()
                if self.iteration % self.cfg.recorder.save_freq == 0:
                    self.save()
                if self._done():
                    break
            else:
                self.epoch += 1
        progress.close()
        self.save()
        self.export_neutral_mesh()
        metrics = self._log_eval()
        self.recorder.close()
        return metrics

    # ------------------------------------------------------------------------------------------ outputs
    def save(self) -> None:
        state = training_state(self.optimizer, self.iteration, self.epoch)
        self.recorder.save_checkpoints({KIND: self.module.state_dict()}, epoch=self.epoch)
        self.recorder.save_checkpoints({STATE_KIND: state})

    def _save_grid(self, batch, renders, name: str) -> None:
        """Ground truth, render, normals and silhouette overlay for up to four views of the first frame."""
        views = min(4, batch["images"].shape[1])
        columns = []
        for view in range(views):
            gt, mask = batch["images"][0, view], batch["masks"][0, view]
            render, hard = renders["images"][0, view, :3], renders["masks"][0, view]
            columns.append([gt, render, normals_to_image(renders["normals"][0, view], hard),
                            overlay_mask(gt, hard, (mask > 0.5).float())])
        rows = [list(row) for row in zip(*columns)]
        self.recorder.save_image(name, grid(rows, labels=[f"view {v}" for v in range(views)]))

    @torch.no_grad()
    def export_neutral_mesh(self) -> None:
        neutral = self.module.reconstruct_neutral()
        verts, faces = neutral["verts"].cpu().numpy(), neutral["faces"].cpu().numpy()
        write_obj(self.recorder.result_dir / "meshhead_neutral.obj", verts, faces)
        write_ply(self.recorder.result_dir / "meshhead_neutral.ply", verts, faces)

    @torch.no_grad()
    def evaluate(self, dataset: MeshDataset) -> Dict[str, float]:
        """Mean hard-mask IoU and masked RGB PSNR over every (frame, camera) of `dataset`'s split."""
        ious, psnrs = [], []
        for index in range(len(dataset)):
            item = dataset.all_views(index)
            batch = self._to_device({key: value[None] for key, value in item.items()})
            recon = self.module.reconstruct(batch["exp_coeff"], batch["pose"], batch["scale"])
            renders = render_mesh_views(recon["verts"], recon["faces"], recon["colors"], batch["viewmats"],
                                        batch["intrinsics"], self.cfg.dataset.resolution, soft=False)
            ious.append(mask_iou(renders["masks"][0, :, 0], batch["masks"][0, :, 0]))
            psnrs.append(psnr(renders["images"][0, :, :3], batch["images"][0]))
        return {"mask_iou": float(torch.cat(ious).mean()), "psnr": float(torch.cat(psnrs).mean()),
                "views": int(sum(len(x) for x in ious))}

    def _log_eval(self) -> Dict[str, float]:
        if self.eval_dataset is None or len(self.eval_dataset) == 0:
            return {}
        self.module.eval()
        metrics = self.evaluate(self.eval_dataset)
        self.module.train()
        self.recorder.log(self.iteration, self.epoch, {f"eval_{k}": v for k, v in metrics.items()})
        path = self.recorder.result_dir / "meshhead_eval.json"
        path.write_text(json.dumps({"iter": self.iteration, "epoch": self.epoch, **metrics}, indent=2))
        log.info("held-out cameras: mask IoU %.4f, PSNR %.2f dB over %d views", metrics["mask_iou"],
                 metrics["psnr"], metrics["views"])
        return metrics
