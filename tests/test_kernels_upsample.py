"""cgha/kernels/upsample.py: the Triton bilinear x2 (align_corners=True) kernels against their F.interpolate twin.

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the CPU tests
keep tensors tiny; the `cuda` tests check realistic sizes on a GPU.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from cgha.kernels import interpreting  # noqa: E402
from cgha.kernels import upsample as up  # noqa: E402
from cgha.kernels.upsample import upsample_bilinear2x  # noqa: E402

# One rounding of an exact result to bf16 (8 significant bits) is off by at most half an ulp, 2^-8 relative; two
# independently rounded results differ by at most one ulp. Triton's interpreter (not the GPU) truncates fp32 -> bf16,
# which is off by up to a whole ulp.
HALF_ULP = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
BF16_ROUNDING = 2.0 ** -7 if interpreting() else 2.0 ** -8
# The small tests run the real kernels on a GPU, the interpreter elsewhere.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def reference(x: torch.Tensor) -> torch.Tensor:
    """The twin in float32 (the exact result up to fp32 rounding)."""
    return F.interpolate(x.float(), scale_factor=2, mode="bilinear", align_corners=True)


def make_input(shape, dtype, channels_last: bool, device=DEVICE, seed=0) -> torch.Tensor:
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    return x.to(memory_format=torch.channels_last) if channels_last else x.contiguous()


def assert_matches(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, scale: float) -> None:
    """``out`` (in ``dtype``) is ``ref`` (fp32) up to fp32 accumulation error or one rounding to ``dtype``."""
    assert out.dtype == dtype and out.shape == ref.shape
    err = (out.float() - ref).abs()
    # fp32 slack: a few ulps of the largest value, for FMA contraction and summation order on GPUs.
    slack = 2e-6 * scale
    if dtype == torch.float32:
        bound = torch.full_like(ref, slack)
    else:
        rounding = BF16_ROUNDING if dtype == torch.bfloat16 else HALF_ULP[dtype]
        bound = ref.abs() * rounding + slack
    worst = (err - bound).max().item()
    assert worst <= 0, f"max error {err.max().item():.3g} exceeds the bound by {worst:.3g}"


def assert_same_format(out: torch.Tensor, twin: torch.Tensor) -> None:
    for fmt in (torch.contiguous_format, torch.channels_last):
        assert out.is_contiguous(memory_format=fmt) == twin.is_contiguous(memory_format=fmt), fmt


def check_gradient(x: torch.Tensor, backend: str = "triton", grad_channels_last: bool | None = None,
                   seed: int = 1) -> None:
    """Backward of ``upsample_bilinear2x`` vs the fp32 twin's, for one random upstream gradient."""
    x = x.detach().requires_grad_(True)
    y = upsample_bilinear2x(x, backend)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    grad = torch.randn(y.shape, generator=gen).to(device=x.device, dtype=x.dtype)
    if grad_channels_last is not None:
        grad = grad.contiguous(memory_format=torch.channels_last if grad_channels_last else torch.contiguous_format)
    y.backward(grad)
    x_ref = x.detach().float().requires_grad_(True)
    reference(x_ref).backward(grad.float())
    assert x.grad.is_contiguous(memory_format=torch.channels_last) == x.is_contiguous(
        memory_format=torch.channels_last)
    # Each input gathers 2 x 2 output gradients' worth of weight: its gradient is up to ~4x an output gradient.
    assert_matches(x.grad, x_ref.grad, x.dtype, scale=4.0 * grad.float().abs().max().item())


SHAPES = [(1, 3, 5, 7), (1, 1, 1, 3), (1, 32, 2, 3), (2, 3, 3, 1), (1, 5, 1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_forward_matches_twin(shape, dtype, channels_last):
    x = make_input(shape, dtype, channels_last)
    y = upsample_bilinear2x(x, "triton")
    twin = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    assert y.shape == (shape[0], shape[1], 2 * shape[2], 2 * shape[3])
    assert_same_format(y, twin)
    assert_matches(y, reference(x), dtype, scale=x.float().abs().max().item())
    if dtype == torch.bfloat16:
        # Both round the same fp32 value (up to accumulation order) once: equal or one ulp apart.
        diff = (y.float() - twin.float()).abs()
        assert (diff <= twin.float().abs() * 2.0 ** -7 + 1e-6).all()


@pytest.mark.parametrize("shape", [(1, 2, 3, 5), (1, 1, 1, 3), (1, 32, 2, 3), (1, 3, 3, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_gradient_matches_twin(shape, dtype, channels_last):
    check_gradient(make_input(shape, dtype, channels_last))


def test_size_one_copies_the_single_row():
    # align_corners=True with one input row: the scale is 0, both output rows copy it.
    x = make_input((1, 2, 1, 4), torch.float32, False)
    y = upsample_bilinear2x(x, "triton")
    torch.testing.assert_close(y[:, :, 0], y[:, :, 1], rtol=0, atol=0)
    torch.testing.assert_close(y[:, :, 0, 0], x[:, :, 0, 0], rtol=0, atol=0)
    torch.testing.assert_close(y[:, :, 0, -1], x[:, :, 0, -1], rtol=0, atol=0)


@pytest.mark.parametrize("grad_channels_last", [False, True], ids=["grad_nchw", "grad_channels_last"])
def test_gradient_in_other_memory_format(grad_channels_last):
    # The upstream gradient's format need not match the forward's.
    x = make_input((1, 3, 2, 3), torch.float32, channels_last=not grad_channels_last)
    check_gradient(x, grad_channels_last=grad_channels_last)


def test_float16():
    x = make_input((1, 3, 3, 2), torch.float16, channels_last=True)
    assert_matches(upsample_bilinear2x(x, "triton"), reference(x), torch.float16, scale=x.float().abs().max().item())
    check_gradient(x)


def test_strided_views_are_read_in_place():
    base = make_input((1, 6, 3, 8), torch.float32, channels_last=True)
    for view in (base[:, 1:4], base[..., ::2]):
        assert not view.is_contiguous() and not view.is_contiguous(memory_format=torch.channels_last)
        y = upsample_bilinear2x(view, "triton")
        assert_matches(y, reference(view), torch.float32, scale=view.abs().max().item())
        assert_same_format(y, F.interpolate(view, scale_factor=2, mode="bilinear", align_corners=True))


def assert_backward_deterministic(shape, dtype, device):
    """Two backward passes of the same upstream gradient give bit-identical input gradients (no atomics)."""
    x = make_input(shape, dtype, channels_last=True, device=device).requires_grad_(True)
    b, c, h, w = shape
    grad = torch.randn(b, c, 2 * h, 2 * w, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    grads = []
    for _ in range(2):
        x.grad = None
        upsample_bilinear2x(x, "triton").backward(grad)
        grads.append(x.grad.clone())
    assert torch.equal(grads[0], grads[1])


def test_backward_is_deterministic():
    assert_backward_deterministic((1, 3, 2, 4), torch.float32, DEVICE)


def test_auto_on_cpu_uses_the_twin():
    x = make_input((1, 3, 4, 5), torch.float32, channels_last=True, device="cpu").requires_grad_(True)
    y = upsample_bilinear2x(x)
    assert "UpsampleBilinear2D" in type(y.grad_fn).__name__
    twin = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    assert torch.equal(y, twin)
    assert torch.equal(upsample_bilinear2x(x, "torch"), twin)


def test_bad_arguments():
    x = torch.zeros(1, 2, 3, 4, device=DEVICE)
    with pytest.raises(ValueError, match="backend"):
        upsample_bilinear2x(x, "cuda")
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        upsample_bilinear2x(torch.zeros(2, 3, 4, device=DEVICE), "triton")
    with pytest.raises(ValueError, match="dtype"):
        upsample_bilinear2x(x.double(), "triton")
    # 'auto' leaves what the kernels do not take to the twin (on a GPU too).
    assert upsample_bilinear2x(x.double()).dtype == torch.float64


def test_backward_candidate_window():
    # The backward gathers, for input j, the outputs 2j-2 .. 2j+2 only: check every output that reads an input
    # (with the kernels' float32 coordinates) lies in that window, for all sizes up to 3000 and a few large ones.
    for n in [*range(1, 3001), 4096, 65535, 1 << 20]:
        out = torch.arange(2 * n)
        src = torch.tensor(up._align_corners_scale(n, 2 * n), dtype=torch.float32) * out.float()
        i0 = src.long()
        i1 = torch.clamp(i0 + 1, max=n - 1)
        for j in (i0, i1):
            assert ((out >= 2 * j - 2) & (out <= 2 * j + 2)).all(), n


def test_tiles_cover_the_rows():
    # Channel-major tiles for channels-last, row-major tiles for NCHW, never more elements than asked for.
    assert up._tile(True, 128, 1024, 4096) == (32, 128)
    assert up._tile(True, 3, 10, 4096) == (16, 4)
    assert up._tile(False, 128, 1024, 4096) == (1024, 4)
    assert up._tile(False, 2, 6, 2048) == (8, 2)
    for channels_last in (False, True):
        for c, w in ((1, 1), (5, 3), (300, 7), (64, 4096)):
            block_w, block_c = up._tile(channels_last, c, w, 2048)
            assert block_w * block_c <= 2048 and block_w >= 1 and block_c >= 1


# --- GPU: realistic sizes (the Upsampler's maps are [1, 128, 512, 512] and [1, 64, 1024, 1024], bf16, channels-last)

CUDA_CASES = [
    ((1, 128, 64, 64), torch.bfloat16, True),
    ((1, 64, 256, 256), torch.bfloat16, True),
    ((1, 64, 256, 256), torch.float32, True),
    ((1, 32, 64, 64), torch.float32, False),
    ((2, 3, 37, 53), torch.float16, False),
    ((2, 48, 37, 53), torch.bfloat16, True),
    ((1, 96, 1, 17), torch.float32, True),
]


@pytest.mark.cuda
@pytest.mark.parametrize("shape,dtype,channels_last", CUDA_CASES)
def test_cuda_forward_and_gradient(shape, dtype, channels_last):
    x = make_input(shape, dtype, channels_last, device="cuda")
    y = upsample_bilinear2x(x)  # 'auto' picks the kernel for CUDA tensors
    twin = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    assert_same_format(y, twin)
    assert_matches(y, reference(x), dtype, scale=x.float().abs().max().item())
    check_gradient(x, backend="auto")


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(1, 128, 512, 512), (1, 64, 1024, 1024)])
def test_cuda_upsampler_sizes(shape):
    x = make_input(shape, torch.bfloat16, True, device="cuda")
    assert_matches(upsample_bilinear2x(x, "triton"), reference(x), torch.bfloat16, scale=x.float().abs().max().item())
    check_gradient(x)


@pytest.mark.cuda
def test_cuda_autocast_keeps_the_input_dtype():
    # Unlike the twin (which autocast runs in fp32), the kernel returns the input's dtype under autocast.
    x = make_input((1, 32, 16, 16), torch.bfloat16, True, device="cuda").requires_grad_(True)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        y = upsample_bilinear2x(x)
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last)
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16


@pytest.mark.cuda
def test_cuda_backward_is_deterministic():
    assert_backward_deterministic((1, 64, 128, 128), torch.bfloat16, "cuda")
