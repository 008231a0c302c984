"""One-launch finite check (cgha/kernels/finite.py): the Triton kernel (interpreter without a GPU) vs the twin."""
from __future__ import annotations

import pytest
import torch

from cgha.kernels.finite import start_finite_check

pytest.importorskip("triton")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _tensors():
    g = torch.Generator().manual_seed(0)
    # Sizes around the kernel's block (4096) so a bad value can sit in any block of any tensor.
    shapes = [(1, 3000, 3), (1, 3000, 4), (16,), (9,), (1, 5000), (2, 4097, 2)]
    return [torch.randn(s, generator=g).to(DEVICE) for s in shapes]


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_finite_inputs_pass(backend):
    assert start_finite_check(_tensors(), backend=backend).all_finite()
    assert start_finite_check([], backend=backend).all_finite()


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_one_bad_entry_anywhere_is_found(backend, value):
    for which, position in ((0, 0), (1, 11999), (2, 15), (4, 4096), (5, 16387)):
        tensors = _tensors()
        tensors[which].view(-1)[position] = value
        assert not start_finite_check(tensors, backend=backend).all_finite(), (which, position)
        # Each call is answered by its own generation: a clean call after a bad one reads clean.
        assert start_finite_check(_tensors(), backend=backend).all_finite()


def test_non_contiguous_and_too_many():
    x = torch.randn(64, 64, device=DEVICE).t()
    x[3, 5] = float("nan")
    assert not start_finite_check([x], backend="triton").all_finite()
    with pytest.raises(ValueError, match="at most 8"):
        start_finite_check([torch.ones(2, device=DEVICE)] * 9, backend="triton")
