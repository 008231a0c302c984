"""Fused instance norm + ReLU (cgha/kernels/instance_norm.py): Triton kernels against the PyTorch twin.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the same
comparisons check their logic on every machine that has Triton; the `cuda` tests repeat them at real sizes.
"""
from __future__ import annotations

import pytest
import torch

from cgha.kernels import resolve_backend
from cgha.kernels.instance_norm import instance_norm_relu

triton = pytest.importorskip("triton")


def _compare(x: torch.Tensor, atol: float):
    """Outputs and input gradients of the Triton path and the twin for one random upstream gradient."""
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(x)
    results = []
    for backend in ("triton", "torch"):
        leaf = x.detach().clone().requires_grad_()
        y = instance_norm_relu(leaf, backend=backend)
        (g,) = torch.autograd.grad(y, leaf, grad)
        results.append((y, g))
    (y, g), (y_ref, g_ref) = results
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert y.dtype == x.dtype
    torch.testing.assert_close(y.float(), y_ref.float(), atol=atol, rtol=0)
    # The ReLU's gradient jumps where the normalised input crosses 0: entries within rounding of 0 may fall on
    # either side in the two implementations, so they are left out of the gradient comparison.
    x64 = x.double()
    x_hat = (x64 - x64.mean((2, 3), keepdim=True)) / (x64.var((2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt()
    clear = x_hat.abs() > 1e-3
    assert clear.float().mean() > 0.99
    torch.testing.assert_close(g.float()[clear], g_ref.float()[clear], atol=atol, rtol=0)
    return y, g


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 32, 9, 8), (2, 20, 4, 33), (1, 1, 1, 5)])
def test_matches_twin_under_interpreter(shape):
    # An offset mean (4 standard deviations) checks that the statistics do not cancel.
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 0.5 + 2.0)
    y, g = _compare(x.contiguous(memory_format=torch.channels_last), atol=2e-5)
    if shape[2] * shape[3] > 1:
        # Normalised then clamped: about half the entries are zero, and their gradient is zero.
        zero = (y == 0).float().mean().item()
        assert 0.2 < zero < 0.8


def test_nchw_input_uses_twin_and_auto_on_cpu():
    x = torch.randn(1, 4, 6, 6)
    assert resolve_backend("auto", x) == "torch"
    torch.testing.assert_close(instance_norm_relu(x, backend="triton"),
                               torch.relu(torch.nn.functional.instance_norm(x)))
    with pytest.raises(ValueError, match="backend"):
        instance_norm_relu(x, backend="cuda")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        instance_norm_relu(x[0])


@pytest.mark.cuda
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-4), (torch.bfloat16, 0.07)])
@pytest.mark.parametrize("shape", [(1, 128, 128, 128), (2, 32, 256, 200), (1, 64, 512, 512)])
def test_matches_twin_on_cuda(shape, dtype, atol):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 3.0 + 1.0
    x = x.to("cuda", dtype).contiguous(memory_format=torch.channels_last)
    assert resolve_backend("auto", x) == "triton"
    _compare(x, atol=atol)
