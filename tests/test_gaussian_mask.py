"""Learned Gaussian masking (compact.mask, cgha/compact/gaussian_mask.py; Lee et al. 2024): the binary mask zeroes
masked Gaussians' opacity and scales with gradients through sigmoid; training deletes the masked Gaussians (model
rows, optimiser moments, codebook indices and mask rows together) so the written file holds exactly what training
rendered; a run with it interrupted resumes bit for bit; it refuses to run beside another strategy that edits Gaussians."""
from __future__ import annotations

import signal

import pytest
import torch

from cgha.avatar.gaussians import Gaussians
from cgha.avatar.inference import render_batch
from cgha.compact.avatar_file import load_compact_avatar
from cgha.compact.config import CompactMaskConfig
from cgha.compact.gaussian_mask import GaussianMask
from cgha.dataset import GaussianDataset
from cgha.errors import CheckpointError, ConfigError, TrainingInterrupted
from cgha.recorder.run_files import RunFiles
from cgha.trainer.gaussian_head_trainer import GaussianHeadTrainer
from test_determinism import (CPU, TOTAL_ITERS, assert_identical, gaussian_config, logged_losses,  # noqa: F401
                              mesh_head_checkpoint, train_gaussian_head)

# Strong enough to mask Gaussians within a few tiny steps; a threshold of 0.5 masks every logit below 0.
MASK = ("compact.mask.weight=0.01", "compact.mask.lr=0.5", "compact.mask.threshold=0.5", "compact.mask.prune_every=3")


def _gaussians(count: int) -> Gaussians:
    generator = torch.Generator().manual_seed(0)
    return Gaussians(means=torch.randn(2, count, 3, generator=generator), quats=torch.randn(2, count, 4),
                     scales=torch.rand(2, count, 3, generator=generator) + 0.1,
                     opacities=torch.rand(2, count, generator=generator), features=torch.rand(2, count, 5))


def test_the_binary_mask_zeroes_masked_gaussians_with_gradients_through_sigmoid():
    mask = GaussianMask(CompactMaskConfig(threshold=0.5), 4, CPU)
    with torch.no_grad():
        mask.logits.copy_(torch.tensor([2.0, -3.0, 0.5, -0.1]))
    gaussians = _gaussians(4)
    masked = mask.apply(gaussians)
    kept = torch.tensor([True, False, True, False])
    assert torch.equal(masked.opacities[:, kept], gaussians.opacities[:, kept])  # exactly, not 1 - s + s
    assert torch.equal(masked.scales[:, kept], gaussians.scales[:, kept])
    assert (masked.opacities[:, ~kept] == 0).all() and (masked.scales[:, ~kept] == 0).all()
    (masked.opacities.sum() + masked.scales.sum()).backward()
    soft = torch.sigmoid(mask.logits.detach())
    expected = (gaussians.opacities.sum(0) + gaussians.scales.sum((0, 2))) * soft * (1 - soft)
    torch.testing.assert_close(mask.logits.grad, expected)  # masked Gaussians still get gradients
    with pytest.raises(ValueError, match="the mask has 4 rows for 5 Gaussians"):
        mask.apply(_gaussians(5))


def test_training_deletes_masked_gaussians_and_the_file_holds_what_training_rendered(tiny_subject,
                                                                                   mesh_head_checkpoint, tmp_path):
    cfg = gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=7", *MASK)
    trainer = GaussianHeadTrainer(cfg, CPU, GaussianDataset(cfg.dataset))
    start = trainer.model.num_gaussians
    trainer.fit()
    count = trainer.model.num_gaussians
    assert 0 < count < start
    assert trainer.mask.logits.shape == (count,) and bool(trainer.mask.kept().all())  # pruned after the last step
    for vq in trainer.compaction.quantizer.quantizers.values():
        assert vq.index.shape[0] == count
    for parameter in [*trainer.model.canonical_attributes().values(), trainer.mask.logits]:
        for value in trainer.optimizer.state[parameter].values():
            assert not torch.is_tensor(value) or value.ndim == 0 or value.shape == parameter.shape
    model, post_render, metadata = load_compact_avatar(RunFiles.of(cfg).compact, CPU)
    assert metadata["num_gaussians"] == count == model.num_gaussians
    # The trainer's held-out render (mask applied) equals the render without the mask: nothing masked is left.
    batch = trainer.to_device({key: value[None] for key, value in trainer.dataset[0].items()})
    with torch.no_grad():
        _, masked = trainer.forward(batch)
        _, plain = render_batch(trainer.model, trainer.post_render, batch, trainer.delta_poses, "torch",
                                trainer.quantized_attributes())
    assert torch.equal(masked, plain)


def test_a_masked_run_interrupted_between_prunes_resumes_bit_for_bit(tiny_subject, mesh_head_checkpoint, tmp_path):
    """Ctrl-C during step 5 (after the prune at 3, before the one at 6), then the same command again. (A run
    extended past its end is not a longer run: its end pruned.)"""
    straight = tmp_path / "straight"
    weights = train_gaussian_head(gaussian_config(tiny_subject, straight, mesh_head_checkpoint,
                                                  f"train.max_iters={TOTAL_ITERS}", *MASK))
    expected = (logged_losses(straight), weights)
    resumed = tmp_path / "resumed"
    cfg = gaussian_config(tiny_subject, resumed, mesh_head_checkpoint, f"train.max_iters={TOTAL_ITERS}", *MASK)
    trainer = GaussianHeadTrainer(cfg, CPU, GaussianDataset(cfg.dataset))
    compute_losses = trainer.compute_losses

    def press_ctrl_c_in_step_5(batch):
        if trainer.iteration == 4:
            signal.raise_signal(signal.SIGINT)
        return compute_losses(batch)

    trainer.compute_losses = press_ctrl_c_in_step_5
    with pytest.raises(TrainingInterrupted, match="interrupted at gaussianhead iteration 5"):
        trainer.fit()
    weights = train_gaussian_head(cfg)
    assert_identical(expected, (logged_losses(resumed), weights))


def test_resuming_a_run_without_the_mask_with_it_is_refused(tiny_subject, mesh_head_checkpoint, tmp_path):
    train_gaussian_head(gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=2"))
    cfg = gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=4", *MASK)
    with pytest.raises(CheckpointError, match="cannot resume from this gaussianhead training state"):
        GaussianHeadTrainer(cfg, CPU, GaussianDataset(cfg.dataset))


def test_the_mask_refuses_to_run_beside_point_editing(tiny_subject, mesh_head_checkpoint, tmp_path):
    cfg = gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=2", "points.every=5",
                          *MASK)
    with pytest.raises(ConfigError, match="compact.mask deletes Gaussians itself"):
        GaussianHeadTrainer(cfg, CPU, GaussianDataset(cfg.dataset))


def test_masking_every_gaussian_is_an_error_not_an_empty_avatar():
    mask = GaussianMask(CompactMaskConfig(weight=5.0, threshold=0.5), 3, CPU)
    with torch.no_grad():
        mask.logits.fill_(-1.0)
    with pytest.raises(ConfigError, match="masked all 3 Gaussians.*lower compact.mask.weight"):
        mask.prune(model=None, optimizer=None)
