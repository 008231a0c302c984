"""Triton kernels of the mesh rasterizer (``cgha.render.mesh``): the hard z-buffer and the soft log-coverage.

The pure-PyTorch twins that define the semantics live in ``cgha.render.mesh`` (``_zbuffer``, ``_soft_fragments``,
``_soft_fragments_backward``, ``_edge_lines`` and ``_edge_lines_backward``); ``tests/test_mesh_kernels.py``
compares both.

Every kernel takes one *window* per face, ``win [4, Nf]`` int32 rows ``x0, y0, bw, bh``: the pixel box
``[x0, x0 + bw) x [y0, y0 + bh)`` of face ``i`` (global index ``b * F + f`` over a [B, F] batch of faces), and
``bw * bh == 0`` for a face that is not drawn. Faces are not compacted and big windows are not split into bands
(both would need the host to learn sizes from the GPU); a program handles ``FPP`` consecutive faces and loops
over their windows in blocks of ``BLOCK`` slots, slot ``s`` of a window being the pixel ``(s mod bw, s div bw)``
of its box. Consecutive faces of a mesh have windows of similar size, so the faces of a program finish together;
a very large face makes its program loop longer (no banding), which only costs time where faces are huge.
Pixel and face indices are int32: ``B * H * W`` and ``B * F`` must be below 2^31 (the launchers check).

Nothing per pixel is kept between the soft forward and backward passes: the backward recomputes the fragments,
so memory stays O(faces + pixels).
"""
from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from cgha.kernels import interpreting, launch_device

__all__ = ["zbuffer", "soft_log_coverage", "soft_log_coverage_backward", "log_half_erfc", "addcmul_fuses"]

# Hard path: windows are tiny for fine meshes (1-4 px at the benchmark's ~0.4 px^2 per face), so many faces and
# few slots per program; elongated silhouette faces loop a few times.
_Z_FACES = 32
_Z_BLOCK = 8
# Soft path: windows are the face's box grown by 2.5 sigma on every side (~36 px at sigma = 1 px).
_SOFT_FACES = 16
_SOFT_BLOCK = 16
_NUM_WARPS = 4
# Under Triton's CPU interpreter every program and every op costs Python time, so fewer, bigger tiles (same
# logic; tests shrink them again to exercise the loops).
_INTERPRETER_FACES = 64
_INTERPRETER_BLOCK = 64
# Smallest normal float32: edges shorter than its square root are points (as in ``_edge_frames``).
_TINY = float(torch.finfo(torch.float32).tiny)
_INT32_LIMIT = 1 << 31


@triton.jit
def _load_windows(win_ptr, n_faces, F, W, HW, FPP: tl.constexpr):
    """This program's faces and their windows, each [FPP]: face index, in-range flag, linear pixel index of the
    window's first pixel, width (>= 1) and slot count (0: empty window)."""
    face = tl.program_id(0) * FPP + tl.arange(0, FPP)
    live = face < n_faces
    x0 = tl.load(win_ptr + face, mask=live, other=0)
    y0 = tl.load(win_ptr + n_faces + face, mask=live, other=0)
    bw = tl.load(win_ptr + 2 * n_faces + face, mask=live, other=0)
    bh = tl.load(win_ptr + 3 * n_faces + face, mask=live, other=0)
    base = (face // F) * HW + y0 * W + x0
    # bw >= 1 keeps the slot division defined on empty windows (whose slots are all masked).
    return face, live, base, tl.maximum(bw, 1), bw * bh


@triton.jit
def _slot_pixels(start, base, bw, n, W, BLOCK: tl.constexpr):
    """Slots start..start+BLOCK of each window: valid mask, px, py (int) and linear pixel index, [FPP, BLOCK]."""
    slot = start + tl.arange(0, BLOCK)[None, :]
    valid = slot < n[:, None]
    py = slot // bw[:, None]
    px = slot - py * bw[:, None]
    return valid, px, py, base[:, None] + py * W + px


@triton.jit
def _row(ptr, r, n_faces, face, mask):
    """Row r of a [R, n_faces] tensor at the program's faces ([FPP]; 0 where mask is off)."""
    return tl.load(ptr + r * n_faces + face, mask=mask, other=0.0)


@triton.jit
def _addcmul2(c, a, x, b, y, FUSED: tl.constexpr):
    """c + a x + b y rounded as the twin's ``torch.addcmul(c, a, x).addcmul_(b, y)`` rounds on this device.

    FUSED: each step is one fused multiply-add (PyTorch's vectorized CPU kernels), emulated in float64 because
    Triton's interpreter rounds ``tl.fma``'s product: a x and b y are exact there (integer pixel offsets), and
    only a float64 sum falling exactly on a float32 tie could round differently (probability ~2^-29 per step).
    Otherwise every product and sum is rounded (PyTorch's CUDA kernel; the launch turns off the compiler's
    contraction into fused multiply-adds).
    """
    if FUSED:
        w = (c.to(tl.float64) + a.to(tl.float64) * x.to(tl.float64)).to(tl.float32)
        return (w.to(tl.float64) + b.to(tl.float64) * y.to(tl.float64)).to(tl.float32)
    else:
        return (c + a * x) + b * y


@triton.jit
def _zbuffer_kernel(keys_ptr, coef_ptr, win_ptr, n_faces, F, W, HW, TOL: tl.constexpr, FUSED: tl.constexpr,
                    FPP: tl.constexpr, BLOCK: tl.constexpr):
    face, live, base, bw, n = _load_windows(win_ptr, n_faces, F, W, HW, FPP)
    # Faces that are not drawn may have non-finite coefficients: read zeros instead (their slots are masked).
    drawn = n > 0
    a0 = _row(coef_ptr, 0, n_faces, face, drawn)[:, None]
    a1 = _row(coef_ptr, 1, n_faces, face, drawn)[:, None]
    a2 = _row(coef_ptr, 2, n_faces, face, drawn)[:, None]
    b0 = _row(coef_ptr, 3, n_faces, face, drawn)[:, None]
    b1 = _row(coef_ptr, 4, n_faces, face, drawn)[:, None]
    b2 = _row(coef_ptr, 5, n_faces, face, drawn)[:, None]
    c0 = _row(coef_ptr, 6, n_faces, face, drawn)[:, None]
    c1 = _row(coef_ptr, 7, n_faces, face, drawn)[:, None]
    c2 = _row(coef_ptr, 8, n_faces, face, drawn)[:, None]
    za = _row(coef_ptr, 9, n_faces, face, drawn)[:, None]
    zb = _row(coef_ptr, 10, n_faces, face, drawn)[:, None]
    zc = _row(coef_ptr, 11, n_faces, face, drawn)[:, None]
    low = face.to(tl.int64)[:, None]
    start = 0
    n_max = tl.max(n, 0)
    while start < n_max:  # not range(): Triton's interpreter cannot take a reduced tensor as a bound
        valid, px, py, pix = _slot_pixels(start, base, bw, n, W, BLOCK)
        x = px.to(tl.float32)
        y = py.to(tl.float32)
        w0 = _addcmul2(c0, a0, x, b0, y, FUSED)
        w1 = _addcmul2(c1, a1, x, b1, y, FUSED)
        w2 = _addcmul2(c2, a2, x, b2, y, FUSED)
        w_min = tl.minimum(tl.minimum(w0, w1), w2)
        inv_z = tl.maximum(_addcmul2(zc, za, x, zb, y, FUSED), 0.0)
        covered = valid & (w_min >= -TOL) & (inv_z > 0.0)
        # IEEE division, as the twin's reciprocal (Triton's "/" is an approximate division on GPUs).
        depth = tl.math.div_rn(tl.full(inv_z.shape, 1.0, tl.float32), tl.where(covered, inv_z, 1.0))
        key = (depth.to(tl.int32, bitcast=True).to(tl.int64) << 32) | low
        tl.atomic_min(keys_ptr + pix, key, mask=covered, sem="relaxed")
        start += BLOCK


def _tiles(faces, block):
    """(faces per program, slots per block): the given GPU tiles, or big ones under the interpreter."""
    if interpreting():
        return _INTERPRETER_FACES, _INTERPRETER_BLOCK
    return faces, block


@functools.lru_cache(maxsize=8)
def addcmul_fuses(device_type):
    """Whether ``torch.addcmul`` rounds ``c + a * b`` once (a fused multiply-add) on this device type.

    PyTorch's vectorized CPU kernels fuse (with AVX2 / AVX-512), its CUDA kernel does not; the z-buffer kernel
    follows so that its keys are bit-identical to the twin's. Probed once per device type with broadcast operands
    as the twin uses them: (1 + 2^-12)^2 - 1 is 2^-11 + 2^-24 fused and 2^-11 when the product is rounded first.
    """
    a = torch.full((2, 1), 1.0 + 2.0 ** -12, device=device_type)
    out = torch.addcmul(torch.full((2, 1), -1.0, device=device_type), a, a.expand(2, 8).contiguous())
    return bool((out != 2.0 ** -11).any())


def _check_sizes(n_faces, n_pix):
    if n_faces >= _INT32_LIMIT or n_pix >= _INT32_LIMIT:
        raise ValueError(f"mesh kernels index with int32: B*F = {n_faces} and B*H*W = {n_pix} must be < 2^31")


def _grid(n_faces, per_program):
    return (max(1, triton.cdiv(n_faces, per_program)),)


def zbuffer(coef, win, B, F, width, height, inside_tol):
    """Hard z-test of every face's window.

    Args:
        coef: [12, B * F] float32 plane coefficients relative to each window's first pixel (rows as in
            ``cgha.render.mesh._face_setup``: d w_i / d px, d w_i / d py, w_i at the first pixel centre, then the
            same three for 1/z).
        win: [4, B * F] int32 windows (module docstring), margin 0.
        B, F: batch size and faces per batch element.
        width, height: image size.
        inside_tol: barycentric tolerance of the inside test (fragment covered when all w_i >= -inside_tol).
    Returns:
        keys: [B * H * W] int64, ``float32_bits(depth) << 32 | (b * F + f)`` of the front-most covered fragment,
            ``int64 max`` where no fragment covers the pixel.
    """
    n_faces, n_pix = B * F, B * height * width
    _check_sizes(n_faces, n_pix)
    keys = torch.full((n_pix,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=coef.device)
    if n_faces == 0:
        return keys
    fpp, block = _tiles(_Z_FACES, _Z_BLOCK)
    fused = addcmul_fuses(coef.device.type)
    with launch_device(coef):
        _zbuffer_kernel[_grid(n_faces, fpp)](
            keys, coef.contiguous(), win.contiguous(), n_faces, F, width, height * width, TOL=inside_tol,
            FUSED=fused, FPP=fpp, BLOCK=block, num_warps=_NUM_WARPS, enable_fp_fusion=False)
    return keys


@triton.jit
def _log_half_erfc_parts(z):
    """log(erfc(z) / 2) and exp(-z^2) / erfc(z) of a float32 tensor, without overflow or underflow.

    erfc(a) = t exp(-a^2 + poly(t)), t = 1 / (1 + a / 2), for a >= 0 (the Chebyshev fit of Numerical Recipes,
    section 6.2; fractional error < 1.2e-7 for all a >= 0), and erfc(-a) = 2 - erfc(a). Taking the log of the
    first form analytically keeps log(erfc(z)) finite where erfc(z) underflows, and the ratio exp(-z^2) / erfc(z)
    = exp(-poly) / t avoids 0 / 0 deep inside a face. Libdevice's erfc is not available in Triton's interpreter,
    so both the interpreter and GPUs evaluate this same formula; tests/test_mesh_kernels.py measures its error.
    """
    a = tl.abs(z)
    t = 1.0 / (1.0 + 0.5 * a)
    p = 0.17087277
    p = -0.82215223 + t * p
    p = 1.48851587 + t * p
    p = -1.13520398 + t * p
    p = 0.27886807 + t * p
    p = -0.18628806 + t * p
    p = 0.09678418 + t * p
    p = 0.37409196 + t * p
    p = 1.00002368 + t * p
    p = -1.26551223 + t * p
    log_erfc_a = tl.log(t) + (p - a * a)
    half_erfc_neg = 1.0 - 0.5 * tl.exp(log_erfc_a)  # erfc(-a) / 2
    log_q = tl.where(z >= 0.0, log_erfc_a - 0.6931471805599453, tl.log(half_erfc_neg))
    ratio = tl.where(z >= 0.0, tl.exp(-p) / t, tl.exp(-a * a) / (2.0 * half_erfc_neg))
    return log_q, ratio


@triton.jit
def _log_half_erfc_kernel(z_ptr, log_q_ptr, ratio_ptr, n, BLOCK: tl.constexpr):
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = i < n
    log_q, ratio = _log_half_erfc_parts(tl.load(z_ptr + i, mask=m, other=0.0))
    tl.store(log_q_ptr + i, log_q, mask=m)
    tl.store(ratio_ptr + i, ratio, mask=m)


def log_half_erfc(z):
    """The soft kernels' log(erfc(z) / 2) and exp(-z^2) / erfc(z) for a float32 tensor ``z`` [N] (for tests)."""
    z = z.contiguous()
    log_q, ratio = torch.empty_like(z), torch.empty_like(z)
    if z.numel():
        with launch_device(z):
            _log_half_erfc_kernel[(triton.cdiv(z.numel(), 1024),)](z, log_q, ratio, z.numel(), BLOCK=1024)
    return log_q, ratio


@triton.jit
def _edge_line(pjx, pjy, pkx, pky, orient, TINY: tl.constexpr):
    """Frame of the edge from corner j to corner k ([FPP] each), as ``_edge_frames`` / ``_edge_lines`` define it.

    Returns nx, ny, cl, tx, ty, cs, h (the line coordinates), the midpoint mx, my, the clamped length and the
    zero-length flag.
    """
    ex = pkx - pjx
    ey = pky - pjy
    len2 = ex * ex + ey * ey
    point = len2 <= TINY
    length = tl.sqrt(tl.maximum(len2, TINY))
    tx = tl.where(point, 1.0, ex / length)
    ty = tl.where(point, 0.0, ey / length)
    nx = -ty * orient
    ny = tx * orient
    mx = 0.5 * (pjx + pkx)
    my = 0.5 * (pjy + pky)
    return nx, ny, -(nx * mx + ny * my), tx, ty, -(tx * mx + ty * my), 0.5 * length, mx, my, length, point


@triton.jit
def _edge_coords(x, y, nx, ny, cl, tx, ty, cs, h):
    """Normal coordinate l, overshoot beyond the nearer endpoint ex, and distance to the segment, [FPP, BLOCK]."""
    l = ny[:, None] * y + (cl[:, None] + nx[:, None] * x)
    s = ty[:, None] * y + (cs[:, None] + tx[:, None] * x)
    hh = h[:, None]
    ex = s - tl.minimum(tl.maximum(s, -hh), hh)
    return l, ex, tl.sqrt(l * l + ex * ex)


@triton.jit
def _load_corners(P_ptr, n_faces, face, live):
    """Corners of the faces' triangles relative to each window's first pixel centre, and the winding sign."""
    u0 = _row(P_ptr, 0, n_faces, face, live)
    u1 = _row(P_ptr, 1, n_faces, face, live)
    u2 = _row(P_ptr, 2, n_faces, face, live)
    v0 = _row(P_ptr, 3, n_faces, face, live)
    v1 = _row(P_ptr, 4, n_faces, face, live)
    v2 = _row(P_ptr, 5, n_faces, face, live)
    # Sign of cross(P0 - P2, P1 - P0), the doubled signed area, exactly as ``_edge_frames`` tests it.
    orient = tl.where((u0 - u2) * (v1 - v0) >= (v0 - v2) * (u1 - u0), 1.0, -1.0)
    return u0, u1, u2, v0, v1, v2, orient


@triton.jit
def _fragments(x, y, e0, e1, e2):
    """Signed distance d to the triangle (negative inside), inside flag, nearest edge and its l, ex."""
    l0, x0, d0 = _edge_coords(x, y, e0[0], e0[1], e0[2], e0[3], e0[4], e0[5], e0[6])
    l1, x1, d1 = _edge_coords(x, y, e1[0], e1[1], e1[2], e1[3], e1[4], e1[5], e1[6])
    l2, x2, d2 = _edge_coords(x, y, e2[0], e2[1], e2[2], e2[3], e2[4], e2[5], e2[6])
    # Nearest segment: the first of the smallest distances, as torch's min does.
    take1 = d1 < d0
    udist = tl.where(take1, d1, d0)
    l_near = tl.where(take1, l1, l0)
    x_near = tl.where(take1, x1, x0)
    edge = tl.where(take1, 1, 0)
    take2 = d2 < udist
    udist = tl.where(take2, d2, udist)
    l_near = tl.where(take2, l2, l_near)
    x_near = tl.where(take2, x2, x_near)
    edge = tl.where(take2, 2, edge)
    lmin = tl.minimum(tl.minimum(l0, l1), l2)
    inside = lmin >= 0.0
    return tl.where(inside, -lmin, udist), inside, edge, l_near, x_near


@triton.jit
def _soft_setup(P_ptr, win_ptr, n_faces, F, W, HW, FPP: tl.constexpr, TINY: tl.constexpr):
    face, live, base, bw, n = _load_windows(win_ptr, n_faces, F, W, HW, FPP)
    u0, u1, u2, v0, v1, v2, orient = _load_corners(P_ptr, n_faces, face, live)
    # Edge i is opposite corner i, from corner i+1 to corner i+2.
    e0 = _edge_line(u1, v1, u2, v2, orient, TINY)
    e1 = _edge_line(u2, v2, u0, v0, orient, TINY)
    e2 = _edge_line(u0, v0, u1, v1, orient, TINY)
    return face, live, base, bw, n, orient, e0, e1, e2


@triton.jit
def _soft_forward_kernel(out_ptr, P_ptr, win_ptr, n_faces, F, W, HW, neg_inv_sigma, ERFC_MAX: tl.constexpr,
                         TINY: tl.constexpr, FPP: tl.constexpr, BLOCK: tl.constexpr):
    face, live, base, bw, n, orient, e0, e1, e2 = _soft_setup(P_ptr, win_ptr, n_faces, F, W, HW, FPP, TINY)
    start = 0
    n_max = tl.max(n, 0)
    while start < n_max:  # not range(): Triton's interpreter cannot take a reduced tensor as a bound
        valid, px, py, pix = _slot_pixels(start, base, bw, n, W, BLOCK)
        d, inside, edge, l_near, x_near = _fragments(px.to(tl.float32), py.to(tl.float32), e0, e1, e2)
        log_q, ratio = _log_half_erfc_parts(tl.minimum(d * neg_inv_sigma, ERFC_MAX))
        tl.atomic_add(out_ptr + pix, log_q, mask=valid, sem="relaxed")
        start += BLOCK


@triton.jit
def _edge_grad(g_nx, g_ny, g_cl, g_tx, g_ty, g_cs, g_h, e, orient):
    """``_edge_lines_backward`` for one edge: gradients of its 7 line coordinates -> its two endpoints."""
    nx, ny, tx, ty, mx, my, length, point = e[0], e[1], e[3], e[4], e[7], e[8], e[9], e[10]
    # cl = -n . m and cs = -t . m.
    g_nx = g_nx - g_cl * mx
    g_ny = g_ny - g_cl * my
    g_tx = g_tx - g_cs * mx
    g_ty = g_ty - g_cs * my
    g_mx = -(g_cl * nx + g_cs * tx)
    g_my = -(g_cl * ny + g_cs * ty)
    # n = orient * (-t_y, t_x).
    g_tx = g_tx + orient * g_ny
    g_ty = g_ty - orient * g_nx
    # t = e / |e| and h = |e| / 2; a point edge has a constant t and a clamped length: no gradient.
    g_tt = g_tx * tx + g_ty * ty
    g_ex = tl.where(point, 0.0, (g_tx - g_tt * tx) / length + 0.5 * g_h * tx)
    g_ey = tl.where(point, 0.0, (g_ty - g_tt * ty) / length + 0.5 * g_h * ty)
    # m = (P_j + P_k) / 2 and e = P_k - P_j.
    return 0.5 * g_mx - g_ex, 0.5 * g_my - g_ey, 0.5 * g_mx + g_ex, 0.5 * g_my + g_ey


@triton.jit
def _edge_sums(sel, gl, gs, gh, x, y):
    """One edge's share of d loss / d l and d loss / d s (times px, py and 1) and of d loss / d h, per slot."""
    gl = tl.where(sel, gl, 0.0)
    gs = tl.where(sel, gs, 0.0)
    return gl * x, gl * y, gl, gs * x, gs * y, gs, tl.where(sel, gh, 0.0)


@triton.jit
def _soft_backward_kernel(grad_P_ptr, grad_out_ptr, P_ptr, win_ptr, n_faces, F, W, HW, neg_inv_sigma, g_scale,
                          ERFC_MAX: tl.constexpr, TINY: tl.constexpr, FPP: tl.constexpr, BLOCK: tl.constexpr):
    face, live, base, bw, n, orient, e0, e1, e2 = _soft_setup(P_ptr, win_ptr, n_faces, F, W, HW, FPP, TINY)
    zero = tl.zeros((FPP, BLOCK), dtype=tl.float32)
    # Per edge: sums of d loss / d l weighted by px, py, 1, of d loss / d s likewise, and of d loss / d h, kept per
    # slot across the loop and reduced once at the end.
    a00, a01, a02, a03, a04, a05, a06 = zero, zero, zero, zero, zero, zero, zero
    a10, a11, a12, a13, a14, a15, a16 = zero, zero, zero, zero, zero, zero, zero
    a20, a21, a22, a23, a24, a25, a26 = zero, zero, zero, zero, zero, zero, zero
    start = 0
    n_max = tl.max(n, 0)
    while start < n_max:  # not range(): Triton's interpreter cannot take a reduced tensor as a bound
        valid, px, py, pix = _slot_pixels(start, base, bw, n, W, BLOCK)
        x = px.to(tl.float32)
        y = py.to(tl.float32)
        d, inside, edge, l_near, x_near = _fragments(x, y, e0, e1, e2)
        log_q, ratio = _log_half_erfc_parts(tl.minimum(d * neg_inv_sigma, ERFC_MAX))
        # d log(1 - p) / d d = 2 exp(-z^2) / (sigma sqrt(pi) erfc(z)).
        g = g_scale * ratio
        # d log(1 - p) / d l and / d s of the nearest edge: d d / d l = -1 and d d / d s = 0 inside (d = -l),
        # l / d and ex / d outside (d > 0 there); d ex / d h = -sign(s) = -sign(b).
        rd = tl.where(inside, 0.0, 1.0 / tl.where(inside, 1.0, d))
        a = tl.where(inside, -g, l_near * rd * g)
        b = x_near * rd * g
        gf = tl.load(grad_out_ptr + pix, mask=valid, other=0.0)
        gl = gf * a
        gs = gf * b
        gh = -tl.abs(b) * gf
        t0, t1, t2, t3, t4, t5, t6 = _edge_sums(edge == 0, gl, gs, gh, x, y)
        a00, a01, a02, a03, a04, a05, a06 = a00 + t0, a01 + t1, a02 + t2, a03 + t3, a04 + t4, a05 + t5, a06 + t6
        t0, t1, t2, t3, t4, t5, t6 = _edge_sums(edge == 1, gl, gs, gh, x, y)
        a10, a11, a12, a13, a14, a15, a16 = a10 + t0, a11 + t1, a12 + t2, a13 + t3, a14 + t4, a15 + t5, a16 + t6
        t0, t1, t2, t3, t4, t5, t6 = _edge_sums(edge == 2, gl, gs, gh, x, y)
        a20, a21, a22, a23, a24, a25, a26 = a20 + t0, a21 + t1, a22 + t2, a23 + t3, a24 + t4, a25 + t5, a26 + t6
        start += BLOCK
    # Edge i moves corners i+1 (j) and i+2 (k).
    j0x, j0y, k0x, k0y = _edge_grad(tl.sum(a00, 1), tl.sum(a01, 1), tl.sum(a02, 1), tl.sum(a03, 1),
                                    tl.sum(a04, 1), tl.sum(a05, 1), tl.sum(a06, 1), e0, orient)
    j1x, j1y, k1x, k1y = _edge_grad(tl.sum(a10, 1), tl.sum(a11, 1), tl.sum(a12, 1), tl.sum(a13, 1),
                                    tl.sum(a14, 1), tl.sum(a15, 1), tl.sum(a16, 1), e1, orient)
    j2x, j2y, k2x, k2y = _edge_grad(tl.sum(a20, 1), tl.sum(a21, 1), tl.sum(a22, 1), tl.sum(a23, 1),
                                    tl.sum(a24, 1), tl.sum(a25, 1), tl.sum(a26, 1), e2, orient)
    drawn = n > 0
    tl.store(grad_P_ptr + face, tl.where(drawn, k1x + j2x, 0.0), mask=live)
    tl.store(grad_P_ptr + n_faces + face, tl.where(drawn, j0x + k2x, 0.0), mask=live)
    tl.store(grad_P_ptr + 2 * n_faces + face, tl.where(drawn, k0x + j1x, 0.0), mask=live)
    tl.store(grad_P_ptr + 3 * n_faces + face, tl.where(drawn, k1y + j2y, 0.0), mask=live)
    tl.store(grad_P_ptr + 4 * n_faces + face, tl.where(drawn, j0y + k2y, 0.0), mask=live)
    tl.store(grad_P_ptr + 5 * n_faces + face, tl.where(drawn, k0y + j1y, 0.0), mask=live)


def soft_log_coverage(P, win, B, F, width, height, sigma, erfc_max):
    """Per-pixel sum over the faces whose window holds it of ``log(1 - p) = log(erfc(-d / sigma) / 2)``.

    Args:
        P: [2, 3, B * F] float32 corners (u, v) of every face relative to its window's first pixel centre.
        win: [4, B * F] int32 windows (module docstring), grown by the soft margin.
        B, F: batch size and faces per batch element.
        width, height: image size.
        sigma: falloff scale in px.
        erfc_max: clamp of the erfc argument ``-d / sigma`` (``cgha.render.mesh._ERFC_MAX``).
    Returns:
        [B * H * W] float32.
    """
    n_faces, n_pix = B * F, B * height * width
    _check_sizes(n_faces, n_pix)
    out = torch.zeros(n_pix, dtype=torch.float32, device=P.device)
    if n_faces:
        fpp, block = _tiles(_SOFT_FACES, _SOFT_BLOCK)
        with launch_device(P):
            _soft_forward_kernel[_grid(n_faces, fpp)](
                out, P.contiguous(), win.contiguous(), n_faces, F, width, height * width, -1.0 / sigma,
                ERFC_MAX=erfc_max, TINY=_TINY, FPP=fpp, BLOCK=block, num_warps=_NUM_WARPS)
    return out


def soft_log_coverage_backward(grad_out, P, win, B, F, width, height, sigma, erfc_max):
    """Vector-Jacobian product of ``soft_log_coverage`` w.r.t. ``P``: grad_out [B * H * W] -> [2, 3, B * F].

    One program per group of faces recomputes their fragments and reduces ``grad_out`` over their windows, so
    each face's gradient is written once (no atomics); faces that are not drawn get 0.
    """
    n_faces = B * F
    _check_sizes(n_faces, B * height * width)
    grad_P = torch.empty((2, 3, n_faces), dtype=torch.float32, device=P.device)
    if n_faces:
        fpp, block = _tiles(_SOFT_FACES, _SOFT_BLOCK)
        with launch_device(P):
            _soft_backward_kernel[_grid(n_faces, fpp)](
                grad_P, grad_out.contiguous(), P.contiguous(), win.contiguous(), n_faces, F, width, height * width,
                -1.0 / sigma, 2.0 / (sigma * math.sqrt(math.pi)), ERFC_MAX=erfc_max, TINY=_TINY, FPP=fpp,
                BLOCK=block, num_warps=_NUM_WARPS)
    return grad_P
