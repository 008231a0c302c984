"""Quantisation-aware training of the networks (issue 20): from compaction's start, each training step's forward
and backward passes see every network weight at the integer precision the compressed file will store it in
(`compact.store.network` / `post_render` = intN, per output channel), and the optimiser updates the float weights
with those gradients: the straight-through estimator, kept as BinaryConnect keeps it, with float master weights.

    qat = NetworkQAT(model, post_render, cfg.compact.store)
    with qat.quantised():        # forward + backward on quantised weights
        ...
    optimizer.step()             # on the restored float weights

Swapping the values in place (the same storage) leaves module structure, state-dict keys and CUDA-graph addresses
unchanged, so checkpoints, resuming and the file writer need nothing new: what is saved between steps is the float
weights, and the writer quantises them exactly as the forward pass did.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Tuple

import torch
from torch import nn

from cgha.compact.avatar_file import network_tensors
from cgha.compact.channel_quant import fake_quantise, is_channel_quantised
from cgha.compact.config import CompactStoreConfig


class NetworkQAT:
    """The network tensors `store` writes as per-channel integers; `quantised()` puts them at that precision for a
    step. The list is taken afresh each step (from the state dicts), so modules rebuilt or reloaded are followed."""

    def __init__(self, model: nn.Module, post_render: nn.Module, store: CompactStoreConfig):
        self.model, self.post_render, self.store = model, post_render, store

    def tensors(self) -> List[Tuple[str, torch.Tensor, int]]:
        """(name in the file, tensor sharing the module's storage, bits) of every tensor stored as intN."""
        return [(name, value, int(precision[3:]))
                for name, value, precision in network_tensors(self.model, self.post_render, self.store)
                if precision.startswith("int") and value.is_floating_point() and is_channel_quantised(value.shape)]

    @contextmanager
    def quantised(self) -> Iterator[None]:
        """Inside: every listed tensor holds its quantised value; on leaving (also by an exception) the float values
        come back, so the gradients computed inside update the float weights."""
        tensors = self.tensors()
        floats = [value.detach().clone() for _, value, _ in tensors]
        try:
            with torch.no_grad():
                for _, value, bits in tensors:
                    value.copy_(fake_quantise(value, bits, axis=0))
            yield
        finally:
            with torch.no_grad():
                for (_, value, _), original in zip(tensors, floats):
                    value.copy_(original)
