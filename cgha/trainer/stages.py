"""Build a stage's datasets and trainer from a config and train it: the body of both training scripts and the demo.

Held-out datasets come from the subject's split (meta.json or `dataset.eval_camera_ids` / `eval_frame_ids`);
without one the trainers skip evaluation and return no metrics.
"""
from __future__ import annotations

from typing import Dict

import torch

from cgha.avatar.model import model_config
from cgha.config import TrainConfig, meshhead_exp_dim
from cgha.dataset import GaussianDataset, MeshDataset
from cgha.trainer.gaussian_head_trainer import GaussianHeadTrainer
from cgha.trainer.mesh_head_trainer import MeshHeadTrainer


def train_mesh_head(cfg: TrainConfig, device: torch.device) -> Dict[str, float]:
    """Stage 1 (resumes a run left unfinished); returns the held-out-camera metrics {mask_iou, psnr} or {}."""
    dataset = MeshDataset(cfg.dataset, split="train", expected_exp_dim=meshhead_exp_dim(cfg.meshheadmodule),
                          exp_dim_key="meshheadmodule.exp_deform_mlp[0]")
    subject = dataset.subject
    held_out = MeshDataset(cfg.dataset, split="test_cameras", subject=subject) if subject.eval_cameras else None
    return MeshHeadTrainer(cfg, device, dataset, held_out).fit()


def train_gaussian_head(cfg: TrainConfig, device: torch.device) -> Dict[str, float]:
    """Stage 2 for the avatar model `cfg.model` selects (resumes a run left unfinished; compacts when `compact.enable`); returns held-out metrics
    {test_cameras_psnr, test_cameras_ssim, test_frames_psnr, test_frames_ssim} for the splits the subject has."""
    cls, model_cfg = model_config(cfg)
    exp_dim, exp_dim_key = cls.config_expression_dim(model_cfg)
    dataset = GaussianDataset(cfg.dataset, split="train", expected_exp_dim=exp_dim, exp_dim_key=exp_dim_key)
    subject = dataset.subject
    held_out = {split: GaussianDataset(cfg.dataset, split=split, views="all", subject=subject)
                for split, present in (("test_cameras", subject.eval_cameras), ("test_frames", subject.eval_frames))
                if present}
    return GaussianHeadTrainer(cfg, device, dataset, held_out).fit()
