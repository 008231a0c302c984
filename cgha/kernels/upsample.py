"""Bilinear x2 upsampling with ``align_corners=True`` (the super-resolution CNN's ``nn.Upsample``) as Triton kernels.

Twin: ``F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)``, which defines the semantics.

Why a kernel: PyTorch's CUDA kernels for this op run ~10x slower than memory bandwidth allows on the channels-last
bf16 maps of the Upsampler, and their backward scatters with bf16 atomics (slow, and each addition rounds to bf16).

Source coordinates are computed exactly as PyTorch does for ``align_corners=True`` (the kernels are compiled with
``enable_fp_fusion=False``: a fused ``scale * dst - i0`` would give lambdas up to half an ulp of ``src`` away from
PyTorch's, 6e-5 at 1024 px, which the CUDA tests caught): ``scale = (in - 1) / (out - 1)``
in float32 (0 when ``out == 1``), ``src = scale * dst``, ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)``,
``lambda = src - i0``; the result is ``(1 - lambda) * x[i0] + lambda * x[i1]`` per axis, accumulated in float32.
With an input size of 1 the scale is 0, so every output copies the single row / column.

Forward: one launch; each program owns one output row of one sample, a block of output columns and a block of
channels; the source row (index, weight) is one scalar per program, the source columns one vector; 4 taps, fp32 lerp.

Backward: one launch, no atomics, as a gather: each program owns one input row, a block of input columns and a block
of channels, and sums the weighted output gradients of the outputs that read it. Per axis, output ``i`` gives input
``j`` the weight ``(1 - lambda_i) [i0_i == j] + lambda_i [i1_i == j]`` with the forward's own ``src_i``, so the
backward is the forward's exact adjoint (the clamped last index included). For a x2 upsample,
``scale = (n - 1) / (2n - 1)`` lies in [0, 1/2), which puts every output that reads input ``j`` within
``[2j - 2, 2j + 2]``: 5 candidates per axis (checked numerically with float32 coordinates for every n < 6000 and
powers of two up to 2^20). Candidate rows with zero weight are skipped with a per-program branch, candidate columns
with zero weight are masked out of the loads, so each program issues the ~4 x 4 useful loads per input pixel.

Why the gather rather than two separable passes: a separable backward reads the 4N-element output gradient, writes
and re-reads a 2N half-reduced gradient and writes the N-element input gradient (9N elements of DRAM traffic); the
gather reads 4N and writes N (5N). Its repeated reads of each output-gradient pixel (~2 per axis) come from L1/L2:
the columns a program reads are contiguous and neighbouring rows run in neighbouring programs.

Memory formats: the kernels take arbitrary strides, so channels-last ([B, H, W, C] in memory, the hot case) and NCHW
inputs are read in place; only the tile shape differs (channel-major tiles for channels-last, so loads and stores
are contiguous along C; column-major tiles for NCHW, so stores are contiguous along W while the 2:1 column taps are
gathered). The output (and the input gradient) has the input's memory format, as PyTorch's channels-last support
does; the output gradient is converted to that format once if it arrives in another.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cgha.kernels import launch_device, resolve_backend, triton_available

__all__ = ["upsample_bilinear2x", "upsample_bilinear2x_torch"]

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# In-sample offsets are 32-bit in the kernels (the batch offset is 64-bit).
_MAX_SAMPLE_NUMEL = 2**31 - 1
# Elements per program tile and warps per program: 16 elements per thread in both kernels, enough independent loads
# in flight to stream at bandwidth without spilling (ptxas for sm_90, bf16 channels-last: ~48 registers each;
# NCHW, whose column taps are scalar gathers: ~100 forward, ~140 backward).
_FWD_TILE, _FWD_WARPS = 4096, 8
_BWD_TILE, _BWD_WARPS = 2048, 4
_MAX_BLOCK_C = 128


def upsample_bilinear2x_torch(x: torch.Tensor) -> torch.Tensor:
    """The twin: ``[B, C, H, W]`` -> ``[B, C, 2H, 2W]`` with PyTorch's bilinear ``align_corners=True``."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def upsample_bilinear2x(x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """Bilinear x2 upsampling, ``align_corners=True``: x ``[B, C, H, W]`` -> ``[B, C, 2H, 2W]``, differentiable.

    Same values as ``F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)`` (up to float rounding:
    fp32 accumulation, one rounding to ``x.dtype``), same memory format as ``x`` (channels-last stays channels-last).
    The Triton backend takes float32, bfloat16 and float16; ``"auto"`` uses the twin for other dtypes.

    Args:
        x: ``[B, C, H, W]`` tensor, any strides.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (see ``cgha.kernels``).
    """
    chosen = resolve_backend(backend, x)
    if x.dim() != 4:
        raise ValueError(f"upsample_bilinear2x expects a [B, C, H, W] tensor, got shape {list(x.shape)}")
    if chosen == "torch":
        return upsample_bilinear2x_torch(x)
    problem = _unsupported(x)
    if problem is None:
        return _Bilinear2x.apply(x)
    if backend == "auto":
        return upsample_bilinear2x_torch(x)
    raise ValueError(f"upsample_bilinear2x backend='triton': {problem}")


def _unsupported(x: torch.Tensor) -> str | None:
    """Why the kernels cannot take ``x`` (None when they can)."""
    if x.dtype not in _DTYPES:
        return f"dtype {x.dtype} is not one of {_DTYPES}"
    if x.numel() == 0:
        return "empty tensor"
    b, c, h, w = x.shape
    if c * 4 * h * w > _MAX_SAMPLE_NUMEL:
        return f"one sample of the output has {c * 4 * h * w} elements, more than 2^31 - 1"
    if sum((size - 1) * stride for size, stride in zip(x.shape[1:], x.stride()[1:])) > _MAX_SAMPLE_NUMEL:
        return "the input's in-sample offsets exceed 2^31 - 1"
    return None


def _channels_last(t: torch.Tensor) -> bool:
    """True when PyTorch would suggest channels-last for ``t`` (its ``suggest_memory_format``), so the kernels tile
    for it and lay the output out that way, as ``F.interpolate`` does.

    The strides, ordered C, W, H, N, must not decrease (each at least the previous stride times its size, for sizes
    above 1); a size-1 channel whose stride equals the batch's is ambiguous and counts as NCHW, as in PyTorch.
    """
    sizes, strides = t.shape, t.stride()
    if strides[1] == 0:
        return False
    least = 0
    for d in (1, 3, 2, 0):
        if sizes[d] == 0 or strides[d] < least:
            return False
        if d == 0 and least == strides[1]:
            return False
        least = strides[d] * sizes[d] if sizes[d] > 1 else strides[d]
    return True


def _align_corners_scale(n_in: int, n_out: int) -> float:
    """PyTorch's ``(in - 1) / (out - 1)`` divided in float32 (0 for a single output), as a Python float."""
    if n_out <= 1:
        return 0.0
    return float(np.float32(n_in - 1) / np.float32(n_out - 1))


def _tile(channels_last: bool, channels: int, width: int, elements: int) -> tuple[int, int]:
    """(BLOCK_W, BLOCK_C) for a tile of ``elements`` over ``width`` pixels of a row and ``channels`` channels.

    Channels-last: as many channels as possible (the contiguous axis), then pixels. NCHW: as many pixels of the row as
    possible (the contiguous axis), then channels (one plane each).
    """
    pow2_w = triton.next_power_of_2(width)
    pow2_c = triton.next_power_of_2(channels)
    if channels_last:
        block_c = min(pow2_c, _MAX_BLOCK_C)
        return max(1, min(pow2_w, elements // block_c)), block_c
    block_w = min(pow2_w, elements)
    return block_w, max(1, min(pow2_c, elements // block_w))


def _forward(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Launch the forward kernel: x ``[B, C, H, W]`` -> ``[B, C, 2H, 2W]`` in ``x``'s memory format."""
    b, c, h, w = x.shape
    oh, ow = 2 * h, 2 * w
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = torch.empty((b, c, oh, ow), dtype=x.dtype, device=x.device, memory_format=fmt)
    block_w, block_c = _tile(channels_last, c, ow, _FWD_TILE)
    grid = (b * oh * triton.cdiv(c, block_c) * triton.cdiv(ow, block_w),)
    with launch_device(x):
        _bilinear2x_fwd_kernel[grid](
            x, y, c, h, w, oh, ow, _align_corners_scale(h, oh), _align_corners_scale(w, ow),
            *x.stride(), *y.stride(),
            BLOCK_W=block_w, BLOCK_C=block_c, num_warps=_FWD_WARPS, enable_fp_fusion=False)
    return y


def _backward(grad_out: torch.Tensor, in_shape: torch.Size, channels_last: bool) -> torch.Tensor:
    """Launch the backward kernel: grad_out ``[B, C, 2H, 2W]`` -> grad_in ``[B, C, H, W]`` (forward's format)."""
    b, c, h, w = in_shape
    oh, ow = 2 * h, 2 * w
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    # A no-op in the usual case (the next layer's backward returns the format the forward produced).
    grad_out = grad_out.contiguous(memory_format=fmt)
    grad_in = torch.empty(in_shape, dtype=grad_out.dtype, device=grad_out.device, memory_format=fmt)
    block_w, block_c = _tile(channels_last, c, w, _BWD_TILE)
    grid = (b * h * triton.cdiv(c, block_c) * triton.cdiv(w, block_w),)
    with launch_device(grad_out):
        _bilinear2x_bwd_kernel[grid](
            grad_out, grad_in, c, h, w, oh, ow, _align_corners_scale(h, oh), _align_corners_scale(w, ow),
            *grad_out.stride(), *grad_in.stride(),
            BLOCK_W=block_w, BLOCK_C=block_c, num_warps=_BWD_WARPS, enable_fp_fusion=False)
    return grad_in


class _Bilinear2x(torch.autograd.Function):
    """Autograd wrapper: Triton forward and backward (first-order gradients only)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        channels_last = _channels_last(x)
        ctx.in_shape = x.shape
        ctx.channels_last = channels_last
        return _forward(x, channels_last)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        return _backward(grad_out, ctx.in_shape, ctx.channels_last)


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _program_tile(pid, n_cols, C, rows_per_sample, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr):
        """(column block, channel block, sample, row) of a program; column blocks vary fastest, so consecutive
        programs work on the same rows."""
        n_wb = tl.cdiv(n_cols, BLOCK_W)
        n_cb = tl.cdiv(C, BLOCK_C)
        wb = pid % n_wb
        rest = pid // n_wb
        cb = rest % n_cb
        row = rest // n_cb
        return wb, cb, row // rows_per_sample, row % rows_per_sample

    @triton.jit
    def _source(dst, scale, n_in):
        """PyTorch's align_corners=True source of output index ``dst``: (i0, i1, lambda), read as
        (1 - lambda) x[i0] + lambda x[i1]; trunc == floor for the non-negative sources the forward uses. The
        backward calls it too, so its weights are the exact adjoint of the forward's."""
        src = scale * dst.to(tl.float32)
        i0 = src.to(tl.int32)
        return i0, tl.minimum(i0 + 1, n_in - 1), src - i0.to(tl.float32)

    @triton.jit
    def _weight_on(j, dst, scale, n_in, n_out):
        """Weight of input index ``j`` in output ``dst`` along one axis (0 for outputs outside [0, n_out))."""
        i0, i1, lam = _source(dst, scale, n_in)
        w = tl.where(i0 == j, 1.0 - lam, 0.0) + tl.where(i1 == j, lam, 0.0)
        return tl.where((dst >= 0) & (dst < n_out), w, 0.0)

    @triton.jit
    def _bilinear2x_fwd_kernel(
        x_ptr, y_ptr,
        C, H, W, OH, OW,
        scale_h, scale_w,
        sx_b, sx_c, sx_h, sx_w,
        sy_b, sy_c, sy_h, sy_w,
        BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        # Consecutive programs read the same two input rows.
        wb, cb, b, oh = _program_tile(tl.program_id(0), OW, C, OH, BLOCK_W, BLOCK_C)
        h0, h1, lh1 = _source(oh, scale_h, H)
        lh0 = 1.0 - lh1

        ow = wb * BLOCK_W + tl.arange(0, BLOCK_W)
        c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        w0, w1, lw1 = _source(ow, scale_w, W)
        lw1 = lw1[:, None]
        lw0 = 1.0 - lw1
        mask = (ow < OW)[:, None] & (c < C)[None, :]

        x_c = x_ptr + b.to(tl.int64) * sx_b + c[None, :] * sx_c
        top = x_c + h0 * sx_h
        bottom = x_c + h1 * sx_h
        left = w0[:, None] * sx_w
        right = w1[:, None] * sx_w
        v00 = tl.load(top + left, mask=mask, other=0.0).to(tl.float32)
        v01 = tl.load(top + right, mask=mask, other=0.0).to(tl.float32)
        v10 = tl.load(bottom + left, mask=mask, other=0.0).to(tl.float32)
        v11 = tl.load(bottom + right, mask=mask, other=0.0).to(tl.float32)
        # PyTorch's association (column lerp within each source row, then the row lerp), for matching rounding.
        out = lh0 * (lw0 * v00 + lw1 * v01) + lh1 * (lw0 * v10 + lw1 * v11)

        y = y_ptr + b.to(tl.int64) * sy_b + oh * sy_h + ow[:, None] * sy_w + c[None, :] * sy_c
        tl.store(y, out.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _bilinear2x_bwd_kernel(
        g_ptr, gx_ptr,
        C, H, W, OH, OW,
        scale_h, scale_w,
        sg_b, sg_c, sg_h, sg_w,
        sx_b, sx_c, sx_h, sx_w,
        BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        wb, cb, b, ih = _program_tile(tl.program_id(0), W, C, H, BLOCK_W, BLOCK_C)

        iw = wb * BLOCK_W + tl.arange(0, BLOCK_W)
        c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
        c_mask = (c < C)[None, :]
        iw_valid = iw < W
        g_c = g_ptr + b.to(tl.int64) * sg_b + c[None, :] * sg_c

        acc = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32)
        # Outputs 2j-2 .. 2j+2 are the only ones that can read input j (module docstring); their weights on j
        # recompute the forward's coordinates, so ones that do not read j get weight 0.
        for kh in tl.static_range(5):
            oh = 2 * ih - 2 + kh
            wh = _weight_on(ih, oh, scale_h, H, OH)
            # About one candidate row in five reads nothing of this input row: skip its loads entirely.
            if wh != 0.0:
                g_row = g_c + oh * sg_h
                for kw in tl.static_range(5):
                    ow = 2 * iw - 2 + kw
                    ww = tl.where(iw_valid, _weight_on(iw, ow, scale_w, W, OW), 0.0)
                    g = tl.load(g_row + ow[:, None] * sg_w, mask=(ww != 0.0)[:, None] & c_mask, other=0.0)
                    acc += (wh * ww)[:, None] * g.to(tl.float32)

        gx = gx_ptr + b.to(tl.int64) * sx_b + ih * sx_h + iw[:, None] * sx_w + c[None, :] * sx_c
        tl.store(gx, acc.to(gx_ptr.dtype.element_ty), mask=iw_valid[:, None] & c_mask)
