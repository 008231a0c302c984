"""Quantisation-aware training of the networks (compact.qat, cgha/compact/network_qat.py): the PyTorch fake
quantiser is what the file reads back; steps from compaction's start see every integer-stored network tensor at its
file precision and the optimiser updates the float weights (straight-through); a quantised net trained so fits
better than one quantised after training; a run with it resumes bit for bit; the config refuses it with float
networks."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cgha.compact.channel_quant import dequantise, fake_quantise, quantise
from cgha.compact.config import CompactStoreConfig
from cgha.compact.network_qat import NetworkQAT
from cgha.errors import ConfigError
from cgha.trainer.gaussian_head_trainer import GaussianHeadTrainer
from cgha.dataset import GaussianDataset
from test_determinism import (COMPACTION_START, CPU, TOTAL_ITERS, assert_identical, gaussian_config, logged_losses,
                              mesh_head_checkpoint, train_gaussian_head)  # noqa: F401 (a fixture)

QAT = ("compact.qat=true", "compact.store.network=int4", "compact.store.post_render=int6")


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quantise_is_what_the_file_reads_back(bits):
    weight = torch.randn(7, 5, 3, generator=torch.Generator().manual_seed(bits)) * torch.rand(7, 1, 1)
    weight[3] = 0.0  # an all-zero channel stays zero
    levels, scales = quantise(weight.numpy(), bits, axis=0)
    expected = dequantise(levels, scales, axis=0)
    np.testing.assert_allclose(fake_quantise(weight, bits).numpy(), expected, rtol=1e-6, atol=1e-7)
    assert len(np.unique(fake_quantise(weight, bits)[0].numpy())) <= 2 ** bits - 1


class TwoNets(nn.Module):
    """Stands in for an avatar model: one network, one per-Gaussian attribute (stored apart) and no buffers."""
    checkpoint_kind = "gaussianhead"
    exact_buffers = ()

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 3))
        self.xyz = nn.Parameter(torch.randn(100, 3))

    def canonical_attributes(self):
        return {"xyz": self.xyz}


def test_quantised_steps_see_file_precision_and_update_the_float_weights():
    torch.manual_seed(0)
    model, post_render = TwoNets(), nn.Conv2d(3, 8, 3)
    qat = NetworkQAT(model, post_render, CompactStoreConfig(network="int4", post_render="int6"))
    # Biases and tensors under 64 values stay floats; the per-Gaussian attribute is the codebooks' business.
    assert [name for name, _, _ in qat.tensors()] == ["gaussianhead.mlp.0.weight", "gaussianhead.mlp.2.weight",
                                                      "supres.weight"]
    floats = {name: value.clone() for name, value in [("mlp", model.mlp[0].weight), ("conv", post_render.weight)]}
    with qat.quantised():
        assert torch.equal(model.mlp[0].weight, fake_quantise(floats["mlp"], 4))
        assert torch.equal(post_render.weight, fake_quantise(floats["conv"], 6))
        assert torch.equal(model.mlp[0].bias, model.mlp[0].bias.detach().clone())
        model.mlp(torch.randn(10, 4)).square().sum().backward()
    assert torch.equal(model.mlp[0].weight, floats["mlp"]) and torch.equal(post_render.weight, floats["conv"])
    assert model.mlp[0].weight.grad is not None and model.mlp[0].weight.grad.abs().sum() > 0
    with pytest.raises(RuntimeError), qat.quantised():
        raise RuntimeError("a failed step")
    assert torch.equal(model.mlp[0].weight, floats["mlp"])  # restored on the way out of a failure too


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_net_trained_quantised_fits_better_than_one_quantised_after_training(seed):
    """Fit a random smooth function with a 3-bit net: Adam on floats then quantising (post-training) vs the same
    steps taken through NetworkQAT. The quantised net's error must be lower with QAT."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.rand(512, 4, generator=generator) * 2 - 1
    targets = torch.sin(inputs @ torch.randn(4, 3, generator=generator) * 2)
    store = CompactStoreConfig(network="int3")

    def train(aware: bool) -> float:
        torch.manual_seed(seed)
        model = TwoNets()
        qat = NetworkQAT(model, nn.Identity(), store)
        optimizer = torch.optim.Adam(model.mlp.parameters(), lr=1e-2)
        for _ in range(600):
            with qat.quantised() if aware else torch.enable_grad():
                loss = (model.mlp(inputs) - targets).square().mean()
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
        with torch.no_grad(), qat.quantised():
            return float((model.mlp(inputs) - targets).square().mean())

    assert train(aware=True) < 0.8 * train(aware=False)


def test_qat_needs_an_integer_network_precision(tiny_subject, mesh_head_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match=r"'compact.qat'.*store.network=fp16"):
        gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=2", "compact.qat=true")


def test_training_steps_run_on_quantised_networks_from_compactions_start(tiny_subject, mesh_head_checkpoint,
                                                                        tmp_path):
    cfg = gaussian_config(tiny_subject, tmp_path, mesh_head_checkpoint, "train.max_iters=6", *QAT)
    trainer = GaussianHeadTrainer(cfg, CPU, GaussianDataset(cfg.dataset))
    watched = next(value for name, value, bits in NetworkQAT(trainer.model, trainer.post_render,
                                                             cfg.compact.store).tensors() if bits == 4)
    seen = []
    compute_losses = trainer.compute_losses

    def spy(batch):
        seen.append(bool(torch.equal(watched, fake_quantise(watched, 4))))
        return compute_losses(batch)

    trainer.compute_losses = spy
    trainer.fit()
    assert seen == [False] * COMPACTION_START + [True] * (6 - COMPACTION_START)
    assert not torch.equal(watched, fake_quantise(watched, 4))  # the float weights are what is kept


def test_a_qat_run_resumes_bit_for_bit(tiny_subject, mesh_head_checkpoint, tmp_path):
    straight = tmp_path / "straight"
    weights = train_gaussian_head(gaussian_config(tiny_subject, straight, mesh_head_checkpoint,
                                                  f"train.max_iters={TOTAL_ITERS}", *QAT))
    expected = (logged_losses(straight), weights)
    resumed = tmp_path / "resumed"
    train_gaussian_head(gaussian_config(tiny_subject, resumed, mesh_head_checkpoint,
                                        f"train.max_iters={COMPACTION_START + 2}", *QAT))
    weights = train_gaussian_head(gaussian_config(tiny_subject, resumed, mesh_head_checkpoint,
                                                  f"train.max_iters={TOTAL_ITERS}", *QAT))
    assert_identical(expected, (logged_losses(resumed), weights))
