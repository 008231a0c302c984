"""Instance normalisation (no affine, no running statistics) fused with the ReLU that follows it.

``instance_norm_relu(x)`` is ``relu(instance_norm(x))``: each (sample, channel) plane of ``x`` is normalised to zero
mean and unit biased variance (``eps`` added to the variance), then clamped at zero. It is the
"InstanceNorm2d -> ReLU" pair of GHA's super-resolution network, which on a 2048^2 bf16 training step spent
7 ms (H100) in PyTorch's batch-norm and ReLU kernels, about ten times what their memory traffic needs.

Triton path (CUDA, channels-last input ``[B, C, H, W]`` stored as ``[B, H, W, C]``): forward is a statistics
kernel (per-channel sums of ``x - x[b, 0, 0, c]``, shifted so the variance does not cancel, accumulated with
atomics over chunks of pixels) and one normalise-and-clamp kernel; backward is a reduction kernel and one
elementwise kernel, from the saved input and statistics. Three launches each way, no host synchronisation,
fp32 arithmetic whatever the storage dtype.

Twin (``backend="torch"``, and any input that is not channels-last): PyTorch's own instance norm and ReLU,
keeping channels-last tensors channels-last (see :func:`instance_norm`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from cgha.kernels import launch_device, resolve_backend, triton_available

__all__ = ["instance_norm", "instance_norm_relu"]


def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """PyTorch instance norm of ``x`` ``[B, C, H, W]`` that keeps a channels-last input channels-last.

    ``F.instance_norm`` makes its input NCHW-contiguous, which would force a layout conversion around every
    convolution of a channels-last network. For a channels-last input each sample goes through ``F.batch_norm`` in
    training mode, whose statistics over (N=1, H, W) per channel are exactly one sample's instance statistics and
    whose CUDA kernels read channels-last directly.
    """
    if x.dim() != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
        return F.instance_norm(x, eps=eps)
    if x.shape[0] == 1:
        return F.batch_norm(x, None, None, training=True, eps=eps)
    # split (not indexing): its backward is one cat, where slicing's would zero-fill a full-size gradient for every
    # sample.
    return torch.cat([F.batch_norm(s, None, None, training=True, eps=eps) for s in x.split(1)], dim=0)


def instance_norm_relu(x: torch.Tensor, eps: float = 1e-5, backend: str = "auto") -> torch.Tensor:
    """``relu(instance_norm(x))`` for ``x`` ``[B, C, H, W]`` -> ``[B, C, H, W]`` (same dtype and memory format).

    Differentiable. ``backend``: see :mod:`cgha.kernels`; the Triton kernels take channels-last inputs (what the
    super-resolution network's fast path produces), others use the twin.
    """
    if x.dim() != 4:
        raise ValueError(f"instance_norm_relu expects [B, C, H, W], got {list(x.shape)}")
    if resolve_backend(backend, x) == "triton" and _channels_last(x) and x.numel() > 0:
        return _InstanceNormReLU.apply(x, float(eps))
    # In place, as GHA's nn.ReLU(inplace=True): the norm's backward reads its saved input, not its output.
    return F.relu(instance_norm(x, eps), inplace=True)


def _channels_last(x: torch.Tensor) -> bool:
    # A [B, C, 1, 1] or C == 1 tensor is both layouts at once; the kernels only need [B, H, W, C] indexing to work.
    return x.is_contiguous(memory_format=torch.channels_last)


class _InstanceNormReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps):
        y, stats = _forward(x, eps)
        ctx.save_for_backward(x, stats)
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, stats = ctx.saved_tensors
        return _backward(x, stats, grad_y.contiguous(memory_format=torch.channels_last)), None


# Pixels x channels per program tile (a power of two); pixel chunks per statistics program.
_TILE = 4096
_TILES_PER_PROGRAM = 8


def _launch_shape(x: torch.Tensor):
    B, C, H, W = x.shape
    block_c = triton.next_power_of_2(C)
    block_p = max(1, _TILE // block_c)
    return B, C, H * W, block_c, block_p


def _forward(x: torch.Tensor, eps: float):
    """-> (y like x, stats [B, 2, C] fp32: mean and 1 / sqrt(var + eps))."""
    B, C, HW, block_c, block_p = _launch_shape(x)
    sums = torch.zeros(B, 2, C, dtype=torch.float32, device=x.device)
    chunk = block_p * _TILES_PER_PROGRAM
    y = torch.empty_like(x, memory_format=torch.channels_last)
    stats = torch.empty(B, 2, C, dtype=torch.float32, device=x.device)
    with launch_device(x):
        _stats_kernel[(triton.cdiv(HW, chunk), B)](x, sums, HW, C, CHUNK=chunk, BLOCK_P=block_p, BLOCK_C=block_c)
        _normalize_kernel[(triton.cdiv(HW, block_p), B)](x, y, sums, stats, HW, C, eps, BLOCK_P=block_p,
                                                         BLOCK_C=block_c)
    return y, stats


def _backward(x: torch.Tensor, stats: torch.Tensor, grad_y: torch.Tensor) -> torch.Tensor:
    B, C, HW, block_c, block_p = _launch_shape(x)
    sums = torch.zeros(B, 2, C, dtype=torch.float32, device=x.device)
    chunk = block_p * _TILES_PER_PROGRAM
    grad_x = torch.empty_like(x, memory_format=torch.channels_last)
    with launch_device(x):
        _grad_stats_kernel[(triton.cdiv(HW, chunk), B)](x, grad_y, stats, sums, HW, C, CHUNK=chunk,
                                                        BLOCK_P=block_p, BLOCK_C=block_c)
        _grad_input_kernel[(triton.cdiv(HW, block_p), B)](x, grad_y, stats, sums, grad_x, HW, C, BLOCK_P=block_p,
                                                          BLOCK_C=block_c)
    return grad_x


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _tile(base, p0, HW, C, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """Offsets and mask of pixels p0 .. p0 + BLOCK_P x all channels of one sample (pixel-major, C fastest)."""
        p = p0 + tl.arange(0, BLOCK_P)
        c = tl.arange(0, BLOCK_C)
        mask = (p[:, None] < HW) & (c[None, :] < C)
        return base + p[:, None].to(tl.int64) * C + c[None, :], mask

    @triton.jit
    def _load_pair(ptr, b, C, BLOCK_C: tl.constexpr):
        """Rows 0 and 1 of sample ``b`` of a [B, 2, C] fp32 buffer (sums or statistics), as [BLOCK_C] vectors."""
        c = tl.arange(0, BLOCK_C)
        row = ptr + b * 2 * C + c
        return tl.load(row, mask=c < C, other=0.0), tl.load(row + C, mask=c < C, other=0.0)

    @triton.jit
    def _add_pair(ptr, b, C, s1, s2, BLOCK_C: tl.constexpr):
        """Atomically add the column sums of the [BLOCK_P, BLOCK_C] tiles s1, s2 to rows 0 and 1 of sample ``b``."""
        c = tl.arange(0, BLOCK_C)
        row = ptr + b * 2 * C + c
        tl.atomic_add(row, tl.sum(s1, axis=0), mask=c < C)
        tl.atomic_add(row + C, tl.sum(s2, axis=0), mask=c < C)

    @triton.jit
    def _stats_kernel(x_ptr, sums_ptr, HW, C, CHUNK: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        # sums[b, 0, c] += sum (x - shift), sums[b, 1, c] += sum (x - shift)^2 over this program's pixels, with
        # shift = x[b, pixel 0, c]: near the mean, so the variance below does not cancel catastrophically.
        chunk = tl.program_id(0)
        b = tl.program_id(1)
        base = b.to(tl.int64) * HW * C
        c = tl.arange(0, BLOCK_C)
        shift = tl.load(x_ptr + base + c, mask=c < C, other=0.0).to(tl.float32)
        s1 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        s2 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        for i in range(0, CHUNK, BLOCK_P):
            offsets, mask = _tile(base, chunk * CHUNK + i, HW, C, BLOCK_P, BLOCK_C)
            d = tl.where(mask, tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32) - shift[None, :], 0.0)
            s1 += d
            s2 += d * d
        _add_pair(sums_ptr, b, C, s1, s2, BLOCK_C)

    @triton.jit
    def _mean_rstd(x_ptr, sums_ptr, base, b, HW, C, eps, BLOCK_C: tl.constexpr):
        c = tl.arange(0, BLOCK_C)
        shift = tl.load(x_ptr + base + c, mask=c < C, other=0.0).to(tl.float32)
        s1, s2 = _load_pair(sums_ptr, b, C, BLOCK_C)
        s1 = s1 / HW
        s2 = s2 / HW
        var = tl.maximum(s2 - s1 * s1, 0.0)
        return shift + s1, 1.0 / tl.sqrt(var + eps)

    @triton.jit
    def _normalize_kernel(x_ptr, y_ptr, sums_ptr, stats_ptr, HW, C, eps, BLOCK_P: tl.constexpr,
                          BLOCK_C: tl.constexpr):
        tile = tl.program_id(0)
        b = tl.program_id(1)
        base = b.to(tl.int64) * HW * C
        mean, rstd = _mean_rstd(x_ptr, sums_ptr, base, b, HW, C, eps, BLOCK_C)
        if tile == 0:  # the statistics the backward pass needs, written once per sample
            c = tl.arange(0, BLOCK_C)
            tl.store(stats_ptr + b * 2 * C + c, mean, mask=c < C)
            tl.store(stats_ptr + b * 2 * C + C + c, rstd, mask=c < C)
        offsets, mask = _tile(base, tile * BLOCK_P, HW, C, BLOCK_P, BLOCK_C)
        x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        y = tl.maximum((x - mean[None, :]) * rstd[None, :], 0.0)
        tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _load_normalized(x_ptr, g_ptr, stats_ptr, offsets, mask, b, C, BLOCK_C: tl.constexpr):
        """x_hat and the gradient that passes the ReLU (g where x_hat > 0), fp32 tiles."""
        mean, rstd = _load_pair(stats_ptr, b, C, BLOCK_C)
        x_hat = (tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32) - mean[None, :]) * rstd[None, :]
        g = tl.load(g_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        return x_hat, tl.where(x_hat > 0.0, g, 0.0), rstd

    @triton.jit
    def _grad_stats_kernel(x_ptr, g_ptr, stats_ptr, sums_ptr, HW, C, CHUNK: tl.constexpr, BLOCK_P: tl.constexpr,
                           BLOCK_C: tl.constexpr):
        # sums[b, 0, c] += sum g_relu, sums[b, 1, c] += sum g_relu * x_hat (masked-out slots load 0: no effect).
        chunk = tl.program_id(0)
        b = tl.program_id(1)
        base = b.to(tl.int64) * HW * C
        s1 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        s2 = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
        for i in range(0, CHUNK, BLOCK_P):
            offsets, mask = _tile(base, chunk * CHUNK + i, HW, C, BLOCK_P, BLOCK_C)
            x_hat, g, _ = _load_normalized(x_ptr, g_ptr, stats_ptr, offsets, mask, b, C, BLOCK_C)
            s1 += g
            s2 += g * x_hat
        _add_pair(sums_ptr, b, C, s1, s2, BLOCK_C)

    @triton.jit
    def _grad_input_kernel(x_ptr, g_ptr, stats_ptr, sums_ptr, gx_ptr, HW, C, BLOCK_P: tl.constexpr,
                           BLOCK_C: tl.constexpr):
        # d x = rstd * (g_relu - mean(g_relu) - x_hat * mean(g_relu * x_hat)), the means over the sample's pixels.
        tile = tl.program_id(0)
        b = tl.program_id(1)
        base = b.to(tl.int64) * HW * C
        offsets, mask = _tile(base, tile * BLOCK_P, HW, C, BLOCK_P, BLOCK_C)
        x_hat, g, rstd = _load_normalized(x_ptr, g_ptr, stats_ptr, offsets, mask, b, C, BLOCK_C)
        m1, m2 = _load_pair(sums_ptr, b, C, BLOCK_C)
        m1 = m1 / HW
        m2 = m2 / HW
        gx = rstd[None, :] * (g - m1[None, :] - x_hat * m2[None, :])
        tl.store(gx_ptr + offsets, gx.to(gx_ptr.dtype.element_ty), mask=mask)
