"""Gaussian splatting rasterizer for any channel count: gsplat on CUDA, and a pure-PyTorch twin.

``rasterize_gaussians`` renders ``B`` images, one camera each, from ``[B, N, ...]`` Gaussians with 3D Gaussian
Splatting's semantics as implemented by **gsplat 1.5.3** (the version this repository pins). The twin
(``backend="torch"``) reproduces gsplat's arithmetic, so it is a faithful CPU substitute and the reference
in the GPU tests.

Constants and rules (gsplat 1.5.3 sources, paths under ``gsplat/cuda/``)
----------------------------------------------------------------------
==============================  ===================================================================================
``eps2d = 0.3`` px^2            added to the diagonal of the 2D covariance (``fully_fused_projection(eps2d=0.3)``,
                                ``add_blur()`` in ``include/Utils.cuh``); the "classic" mode, i.e. without the
                                antialiasing opacity compensation.
near plane ``0.01``             a Gaussian is culled when its camera z ``< near_plane`` (``z == near_plane`` is drawn);
                                far plane ``1e10`` (``csrc/ProjectionEWA3DGSFused.cu``).
Jacobian clamp                  ``x/z`` in the EWA Jacobian is clamped to ``[-(cx/fx + 0.3 tan_x),
                                (W - cx)/fx + 0.3 tan_x]`` with ``tan_x = W / (2 fx)`` (same for y); for a centred
                                principal point this is 3DGS's ``1.3 tan(half fov)`` (``persp_proj()``).
opacity-aware extent            culled when ``opacity < 1/255``; otherwise ``extend = min(3.33, sqrt(2 ln(255 o)))``
                                and per-axis radii ``ceil(extend * sqrt(cov2d_xx))``, ``ceil(extend *
                                sqrt(cov2d_yy))`` px; culled when both are 0 or the box misses the image.
pixel centres                   pixel ``(u, v)`` is evaluated at ``(u + 0.5, v + 0.5)``.
alpha                           ``min(0.999, opacity * exp(-sigma))`` with ``sigma = 0.5 d^T cov2d^-1 d``: the clamp
                                is **0.999** in gsplat (``csrc/RasterizeToPixels3DGSFwd.cu``), not the 0.99 of the
                                original 3DGS rasterizer. Its gradient is cut where ``opacity * exp(-sigma) > 0.999``.
cut-off                         fragments with ``alpha < 1/255`` (``ALPHA_THRESHOLD``, ``include/Common.h``) or
                                ``sigma < 0`` are skipped.
order                           front to back by the Gaussian centre's camera z; equal depths keep the Gaussian
                                index order (gsplat's stable radix sort of ``tile | depth`` keys).
stop rule                       with ``T`` the transmittance before a fragment, if ``T * (1 - alpha) <= 1e-4`` the
                                pixel is done and that fragment is **not** composited (exclusive); so the final
                                transmittance is always ``> 1e-4``.
background                      ``image = sum_i w_i f_i + T_final * background``, ``w_i = alpha_i T_i``;
                                ``alpha image = 1 - T_final``.
==============================  ===================================================================================

The twin enumerates (Gaussian, pixel) fragments over each Gaussian's *pixel* bounding box (pixel centres within
``mean2d +- radii``) instead of gsplat's 16x16 tiles; both contain every pixel with ``alpha >= 1/255`` (the box
bounds the ellipse ``sigma <= ln(255 opacity)``), so they composite the same fragments up to float rounding of the
cut-off.

Depth is ``sum_i w_i z_i``: the alpha-weighted camera z, **not** normalised by alpha (divide by ``alpha`` for the
expected depth of covered pixels); the background contributes depth 0. gsplat computes it as one more channel
(``render_mode="RGB+D"``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from cgha.kernels.finite import start_finite_check
from cgha.render.projection import ALPHA_THRESHOLD, EPS2D, FAR_PLANE, project_gaussians

__all__ = ["rasterize_gaussians", "gsplat_available", "ALPHA_MAX", "TRANSMITTANCE_MIN", "TILE_SIZE"]

ALPHA_MAX = 0.999  # gsplat RasterizeToPixels3DGSFwd.cu: alpha = min(0.999f, opac * __expf(-sigma)).
TRANSMITTANCE_MIN = 1e-4  # gsplat: `if (next_T <= 1e-4f) { done = true; break; }` (exclusive).
TILE_SIZE = 16  # gsplat's default tile size (the torch twin bins per pixel and does not need it).

# The twin enumerates candidate (Gaussian, pixel) fragments in chunks of at most this many, so the temporaries
# of the enumeration (~100 bytes per candidate) stay bounded; only fragments that pass the 1/255 cut-off are kept.
_MAX_CANDIDATES = 1 << 21
# gsplat's rasterize_to_pixels handles at most 513 channels per call; we add one channel for depth.
_GSPLAT_MAX_CHANNELS = 512

_BACKENDS = ("auto", "gsplat", "torch")
_gsplat = None  # the imported module, once imported
_gsplat_import_error: Optional[BaseException] = None


def _import_gsplat():
    """Import gsplat once; return the module or None (the error is kept for the message of backend='gsplat')."""
    global _gsplat, _gsplat_import_error
    if _gsplat is None and _gsplat_import_error is None:
        try:
            import gsplat

            _gsplat = gsplat
        except Exception as error:  # ImportError, or a broken CUDA extension raising anything else
            _gsplat_import_error = error
    return _gsplat


def gsplat_available() -> bool:
    """True when gsplat imports (it still needs CUDA tensors to run)."""
    return _import_gsplat() is not None


# ----------------------------------------------------------------------------------------------------------
# Input checks
# ----------------------------------------------------------------------------------------------------------


def _shape_error(name: str, expected: str, tensor) -> ValueError:
    got = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
    return ValueError(f"{name} must have shape {expected}, got {got}")


def _check_inputs(means, quats, scales, opacities, features, viewmats, Ks, width, height, backgrounds, near_plane):
    """Validate shapes, dtypes and devices (no device sync); return (B, N, C)."""
    if not isinstance(means, torch.Tensor) or means.dim() != 3 or means.shape[-1] != 3:
        raise _shape_error("means", "[B, N, 3]", means)
    B, N, _ = means.shape
    if B < 1:
        raise ValueError("means must have a batch size B >= 1")
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        raise _shape_error("features", "[B, N, C]", features)
    C = features.shape[-1]
    if C < 1:
        raise ValueError(f"features must have C >= 1 channels, got shape {list(features.shape)}")
    expected = {
        "quats": (quats, (B, N, 4), "[B, N, 4]"),
        "scales": (scales, (B, N, 3), "[B, N, 3]"),
        "opacities": (opacities, (B, N), "[B, N]"),
        "features": (features, (B, N, C), "[B, N, C]"),
        "viewmats": (viewmats, (B, 4, 4), "[B, 4, 4]"),
        "Ks": (Ks, (B, 3, 3), "[B, 3, 3]"),
    }
    if backgrounds is not None:
        expected["backgrounds"] = (backgrounds, (B, C), "[B, C]")
    for name, (tensor, shape, text) in expected.items():
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have shape {text} = {list(shape)} (B={B}, N={N}, C={C} from means/features), "
                f"got {list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__}"
            )
    named = _named_tensors(means, quats, scales, opacities, features, viewmats, Ks, backgrounds)
    for name, tensor in named:
        if not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {tensor.dtype}")
        if tensor.dtype != means.dtype:
            raise ValueError(f"{name} has dtype {tensor.dtype} but means has {means.dtype}; use one dtype")
        if tensor.device != means.device:
            raise ValueError(f"{name} is on {tensor.device} but means is on {means.device}; use one device")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not (isinstance(near_plane, (int, float)) and math.isfinite(near_plane) and near_plane > 0):
        raise ValueError(f"near_plane must be a finite positive number, got {near_plane!r}")
    return B, N, C


def _named_tensors(means, quats, scales, opacities, features, viewmats, Ks, backgrounds):
    named = [
        ("means", means),
        ("quats", quats),
        ("scales", scales),
        ("opacities", opacities),
        ("features", features),
        ("viewmats", viewmats),
        ("Ks", Ks),
    ]
    if backgrounds is not None:
        named.append(("backgrounds", backgrounds))
    return named


def _raise_on_nonfinite(named) -> None:
    """Exact check, one device sync per tensor: raise ValueError naming the first argument with NaN/inf."""
    with torch.no_grad():
        for name, tensor in named:
            if tensor.numel() and not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"{name} contains NaN or inf values")


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------


def rasterize_gaussians(
    means: torch.Tensor,  # [B, N, 3]
    quats: torch.Tensor,  # [B, N, 4]
    scales: torch.Tensor,  # [B, N, 3]
    opacities: torch.Tensor,  # [B, N]
    features: torch.Tensor,  # [B, N, C]
    viewmats: torch.Tensor,  # [B, 4, 4]
    Ks: torch.Tensor,  # [B, 3, 3]
    width: int,
    height: int,
    backgrounds: Optional[torch.Tensor] = None,  # [B, C]
    backend: str = "auto",
    near_plane: float = 0.01,
    check_finite: bool = True,
) -> dict:
    """Render ``B`` images (one camera each) of ``N`` Gaussians with ``C`` feature channels.

    Semantics, constants and their gsplat sources are listed in the module docstring.

    Args:
        means: ``[B, N, 3]`` world-space centres.
        quats: ``[B, N, 4]`` wxyz rotations (normalised inside).
        scales: ``[B, N, 3]`` positive standard deviations along the local axes.
        opacities: ``[B, N]`` in ``(0, 1)``.
        features: ``[B, N, C]``, any ``C >= 1`` (e.g. GHA's 32 channels).
        viewmats: ``[B, 4, 4]`` world-to-camera, OpenCV axes (x right, y down, z forward).
        Ks: ``[B, 3, 3]`` pinhole intrinsics in pixels of this ``width`` x ``height`` image.
        width, height: image size in pixels.
        backgrounds: ``[B, C]`` or None (zeros); weighted by the final transmittance.
        backend: ``"gsplat"`` (CUDA float32 tensors, needs gsplat), ``"torch"`` (pure PyTorch, CPU or CUDA, any
            float dtype, differentiable by autograd) or ``"auto"`` (gsplat when the tensors are float32 on CUDA
            and gsplat imports, else torch).
        near_plane: Gaussians whose centre has camera z below this are not drawn.
        check_finite: raise ValueError naming the argument when any tensor holds NaN or inf. On the gsplat path
            this is one fused kernel read at the synchronisation gsplat's tile intersection makes anyway, about
            0.1-0.2 ms of host time per call: noticeable only where the whole render is that short (512^2, one
            camera; see benchmarks/bench_render.py and the README). Pass False where a loop checks its loss.

    Returns:
        dict with
            - ``image``: ``[B, C, H, W]`` features composited over the background;
            - ``alpha``: ``[B, 1, H, W]`` accumulated opacity ``1 - T_final``;
            - ``depth``: ``[B, 1, H, W]`` alpha-weighted camera z, ``sum_i w_i z_i`` (not divided by alpha);
            - ``radii``: ``[B, N]`` int32, the larger of the per-axis screen radii in pixels, 0 = not drawn;
            - ``means2d``: ``[B, N, 2]`` projected centres in pixels, part of the autograd graph upstream of the
              image, so ``out["means2d"].retain_grad()`` before ``backward()`` yields the screen-space gradient
              used by densification. Values where ``radii == 0`` are unspecified (0 for the twin, uninitialised
              for gsplat).

        ``image``, ``alpha`` and ``depth`` are permuted views of ``[B, H, W, ...]`` buffers (channels last in
        memory, not copied); call ``.contiguous()`` if a kernel needs NCHW-contiguous input.

    Raises:
        ValueError: wrong shapes (e.g. mismatched B), dtypes or devices, non-positive sizes, NaN/inf in any
            tensor argument (the message names it; unless ``check_finite=False``), an unknown backend, or
            ``backend="gsplat"`` with tensors it cannot take.
        ImportError: ``backend="gsplat"`` when gsplat does not import.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    _check_inputs(means, quats, scales, opacities, features, viewmats, Ks, width, height, backgrounds, near_plane)
    named = _named_tensors(means, quats, scales, opacities, features, viewmats, Ks, backgrounds)

    if backend == "auto":
        use_gsplat = means.is_cuda and means.dtype == torch.float32 and gsplat_available()
    else:
        use_gsplat = backend == "gsplat"
    if use_gsplat:
        if not means.is_cuda:
            raise ValueError(f"backend='gsplat' needs CUDA tensors, got {means.device}; use backend='torch'")
        if means.dtype != torch.float32:
            raise ValueError(f"backend='gsplat' needs float32 tensors, got {means.dtype}; use backend='torch'")
        if _import_gsplat() is None:
            raise ImportError(f"backend='gsplat' but gsplat does not import: {_gsplat_import_error!r}")
    # Zero Gaussians: nothing to rasterize, the twin's background-only path needs no kernel launches.
    if use_gsplat and means.shape[1] > 0:
        return _rasterize_gsplat(named if check_finite else None, means, quats, scales, opacities, features,
                                 viewmats, Ks, width, height, backgrounds, near_plane)
    if check_finite:
        _raise_on_nonfinite(named)
    return _rasterize_torch(
        means, quats, scales, opacities, features, viewmats, Ks, width, height, backgrounds, near_plane
    )


# ----------------------------------------------------------------------------------------------------------
# gsplat backend
# ----------------------------------------------------------------------------------------------------------


def _rasterize_gsplat(named, means, quats, scales, opacities, features, viewmats, Ks, width, height,
                      backgrounds, near_plane) -> dict:
    """gsplat's projection + tile intersection + rasterization, called directly (what ``gsplat.rasterization``
    does for ``packed=False, render_mode="RGB+D"``) so that the outputs keep the ``[B, N, ...]`` layout and
    ``means2d`` can be returned as a tensor upstream of the image."""
    gs = _gsplat
    B, N, C = features.shape
    # NaN/inf inputs: one fused kernel now, read after isect_tiles (which synchronises to size its buffers), so it
    # costs one launch. Until then gsplat runs on the bad values: NaN centres, scales or rotations give NaN radii,
    # which its float-to-int conversion turns into 0 (not drawn); NaN opacities or features give NaN pixels; infinite
    # scales give Gaussians that cover every tile (bounded by Gaussians x tiles). PyTorch ops for the same check
    # (concatenate, sum, compare) added 0.15-0.3 ms to this ~1 ms call on an H100, before or after the rasteriser.
    finite_check = start_finite_check([t for _, t in named]) if named is not None else None
    # One camera per batch element: gsplat's layout is [..., C_cams, N, ...] with C_cams = 1.
    radii, means2d, depths, conics, _ = gs.fully_fused_projection(
        means, None, quats, scales, viewmats[:, None], Ks[:, None], width, height,
        eps2d=EPS2D, near_plane=near_plane, far_plane=FAR_PLANE, radius_clip=0.0, packed=False,
        calc_compensations=False, opacities=opacities,
    )  # radii [B, 1, N, 2] int32, means2d [B, 1, N, 2], depths [B, 1, N], conics [B, 1, N, 3]

    tile_w = math.ceil(width / TILE_SIZE)
    tile_h = math.ceil(height / TILE_SIZE)
    _, isect_ids, flatten_ids = gs.isect_tiles(means2d, radii, depths, TILE_SIZE, tile_w, tile_h, packed=False)
    if finite_check is not None and not finite_check.all_finite():
        _raise_on_nonfinite(named)
    isect_offsets = gs.isect_offset_encode(isect_ids, B, tile_w, tile_h).reshape(B, 1, tile_h, tile_w)

    # Route the rasterizer's input through a [B, N, 2] view so the returned tensor is upstream of the image.
    means2d_bn = means2d.squeeze(1)
    means2d_in = means2d_bn.unsqueeze(1)
    opacities_in = opacities.unsqueeze(1)  # [B, 1, N]
    depth_feature = depths.unsqueeze(-1)  # [B, 1, N, 1]
    renders = []
    alphas = None
    for start in range(0, C, _GSPLAT_MAX_CHANNELS):
        stop = min(C, start + _GSPLAT_MAX_CHANNELS)
        last = stop == C
        colors = features[:, None, :, start:stop]  # [B, 1, N, c]
        bg = None if backgrounds is None else backgrounds[:, None, start:stop]  # [B, 1, c]
        if last:
            # Depth is rasterized as one more channel (background depth 0), as render_mode="RGB+D" does.
            colors = torch.cat([colors, depth_feature], dim=-1)
            if bg is not None:
                bg = torch.cat([bg, bg.new_zeros(B, 1, 1)], dim=-1)  # F.pad costs 3x the host time
        render, alpha = gs.rasterize_to_pixels(
            means2d_in, conics, colors, opacities_in, width, height, TILE_SIZE, isect_offsets, flatten_ids,
            backgrounds=bg, packed=False,
        )  # [B, 1, H, W, c(+1)], [B, 1, H, W, 1]
        renders.append(render[:, 0])
        alphas = alpha[:, 0] if alphas is None else alphas
    render = renders[0] if len(renders) == 1 else torch.cat(renders, dim=-1)  # [B, H, W, C + 1]
    return {
        "image": render[..., :C].permute(0, 3, 1, 2),
        "alpha": alphas.permute(0, 3, 1, 2),
        "depth": render[..., C:].permute(0, 3, 1, 2),
        "radii": radii[:, 0].amax(dim=-1),
        "means2d": means2d_bn,
    }


# ----------------------------------------------------------------------------------------------------------
# Pure-PyTorch twin
# ----------------------------------------------------------------------------------------------------------


# Columns of the per-Gaussian parameter table the twin gathers per fragment (one gather, one scatter back).
_MX, _MY, _CA, _CB, _CC, _OP, _Z = range(7)


def _sigma_alpha(dx, dy, table):
    """gsplat's per-fragment Mahalanobis term and clamped alpha; ``dx, dy = mean2d - pixel centre``.

    ``table`` holds the conic and opacity columns of the fragments' Gaussians.
    """
    sigma = 0.5 * (table[:, _CA] * dx * dx + table[:, _CC] * dy * dy) + table[:, _CB] * dx * dy
    alpha = (table[:, _OP] * torch.exp(-sigma)).clamp_max(ALPHA_MAX)
    return sigma, alpha


def _enumerate_fragments(table: torch.Tensor, radii: torch.Tensor, N: int, width: int, height: int):
    """All (Gaussian, pixel) fragments with ``alpha >= 1/255`` and ``sigma >= 0``, ordered by (pixel, depth,
    Gaussian index). No gradient; memory follows the number of fragments (candidates are made in chunks).

    Candidates are the pixels whose centres ``u + 0.5`` lie in ``[mean2d - r, mean2d + r]`` (per axis), clipped
    to the image: a superset of the pixels with ``alpha >= 1/255`` (see the module docstring).

    Args:
        table: ``[B * N, 7]`` detached per-Gaussian parameters (columns ``_MX`` ... ``_Z``).
        radii: ``[B * N, 2]`` int per-axis radii, 0 = culled.
    Returns:
        ``(gauss, pixel)``: int64 ``[F]`` flat indices into ``B * N`` and ``B * H * W``.
    """
    device = table.device
    ids = torch.nonzero(radii[:, 0] > 0).squeeze(1)  # ascending b * N + n
    # Front-to-back order: a stable sort by depth keeps the index order for equal depths (as gsplat does).
    ids = ids[torch.sort(table[ids, _Z], stable=True).indices]
    g_tab = table[ids]  # [G, 7]
    r = radii[ids].to(table.dtype)
    mx, my = g_tab[:, _MX], g_tab[:, _MY]
    x0 = torch.ceil(mx - r[:, 0] - 0.5).clamp(0, width)
    x1 = torch.floor(mx + r[:, 0] - 0.5).clamp(-1, width - 1)
    y0 = torch.ceil(my - r[:, 1] - 0.5).clamp(0, height)
    y1 = torch.floor(my + r[:, 1] - 0.5).clamp(-1, height - 1)
    nx = (x1 - x0 + 1).clamp_min(0).long()
    counts = nx * (y1 - y0 + 1).clamp_min(0).long()
    ends = torch.cumsum(counts, 0)
    total = int(ends[-1]) if ends.numel() else 0
    b = torch.div(ids, N, rounding_mode="floor")
    # Integer table: first candidate, box width, flat pixel index of the box's top-left pixel, Gaussian id.
    i_tab = torch.stack([ends - counts, nx, (b * height + y0.long()) * width + x0.long(), ids], dim=1)
    f_tab = torch.stack([x0, y0], dim=1)  # box corner as floats (exact integers)

    gauss_parts, pixel_parts = [], []
    for start in range(0, total, _MAX_CANDIDATES):
        k = torch.arange(start, min(total, start + _MAX_CANDIDATES), device=device)
        slot = torch.searchsorted(ends, k, right=True)  # which Gaussian's box candidate k falls into
        i_c = i_tab.index_select(0, slot)
        local = k - i_c[:, 0]
        row = torch.div(local, i_c[:, 1], rounding_mode="floor")
        col = local - row * i_c[:, 1]
        corner = f_tab.index_select(0, slot)
        g_c = g_tab.index_select(0, slot)
        # Same expression as the differentiable pass in _rasterize_torch, so the same fragments pass.
        dx = g_c[:, _MX] - ((corner[:, 0] + col) + 0.5)
        dy = g_c[:, _MY] - ((corner[:, 1] + row) + 0.5)
        sigma, alpha = _sigma_alpha(dx, dy, g_c)
        keep = torch.nonzero((alpha >= ALPHA_THRESHOLD) & (sigma >= 0)).squeeze(1)
        i_k = i_c.index_select(0, keep)
        gauss_parts.append(i_k[:, 3])
        pixel_parts.append(i_k[:, 2] + row.index_select(0, keep) * width + col.index_select(0, keep))
    if not gauss_parts:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    gauss = torch.cat(gauss_parts)
    pixel = torch.cat(pixel_parts)
    # Candidates were made in depth order, so a stable sort by pixel gives (pixel, depth, index) order.
    pixel, order = torch.sort(pixel, stable=True)
    return gauss.index_select(0, order), pixel


def _rasterize_torch(means, quats, scales, opacities, features, viewmats, Ks, width, height, backgrounds,
                     near_plane) -> dict:
    """Pure-PyTorch twin of the gsplat path (same outputs, differentiable by autograd)."""
    B, N, C = features.shape
    dtype, device = means.dtype, means.device
    P = B * height * width
    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane=near_plane)
    table = torch.cat([proj.means2d, proj.conics, opacities[..., None], proj.depths[..., None]], dim=-1)
    table = table.reshape(B * N, 7)
    with torch.no_grad():
        gauss, pixel = _enumerate_fragments(table.detach(), proj.radii.reshape(B * N, 2), N, width, height)

    # Differentiable per-fragment alpha with the enumeration's arithmetic, so the kept fragments all pass again.
    frag = table.index_select(0, gauss)  # [F, 7]
    pix_x = (pixel % width).to(dtype)
    pix_y = (torch.div(pixel, width, rounding_mode="floor") % height).to(dtype)
    _, alpha = _sigma_alpha(frag[:, _MX] - (pix_x + 0.5), frag[:, _MY] - (pix_y + 0.5), frag)

    # Per-pixel transmittance by a segmented cumulative sum of log(1 - alpha). The running sum spans all
    # fragments of all pixels, so it is kept in float64: subtracting the segment's base then loses nothing.
    log_t = torch.log1p(-alpha.double())
    cum = torch.cumsum(log_t, 0)
    excl = cum - log_t  # log T before each fragment, still offset by the earlier pixels' sums
    first = torch.ones_like(pixel, dtype=torch.bool)
    first[1:] = pixel[1:] != pixel[:-1]
    segment = torch.cumsum(first.long(), 0) - 1
    base = excl[first].index_select(0, segment)
    log_t_before = excl - base
    # Stop rule (exclusive): a fragment is composited only if T after it stays > 1e-4. T only decreases along
    # a pixel's list, so this keeps exactly the prefix that gsplat's loop composites before `break`.
    with torch.no_grad():
        drawn = torch.nonzero((log_t_before + log_t).exp() > TRANSMITTANCE_MIN).squeeze(1)
    pixel_d = pixel.index_select(0, drawn)
    gauss_d = gauss.index_select(0, drawn)
    weight = alpha.index_select(0, drawn) * log_t_before.index_select(0, drawn).exp().to(dtype)  # w_i = alpha_i T_i

    log_t_final = torch.zeros(P, dtype=torch.float64, device=device).index_add(
        0, pixel_d, log_t.index_select(0, drawn)
    )
    t_final = log_t_final.exp().to(dtype).reshape(B, height, width, 1)
    # Depth rides along as one more channel, as gsplat's "RGB+D" mode does.
    values = torch.cat([features.reshape(B * N, C).index_select(0, gauss_d),
                        frag[:, _Z].index_select(0, drawn)[:, None]], dim=1)  # [F_drawn, C + 1]
    accum = torch.zeros(P, C + 1, dtype=dtype, device=device).index_add(0, pixel_d, weight[:, None] * values)
    accum = accum.reshape(B, height, width, C + 1)
    image = accum[..., :C]
    if backgrounds is not None:
        image = image + t_final * backgrounds[:, None, None, :]
    return {
        "image": image.permute(0, 3, 1, 2),
        "alpha": (1.0 - t_final).permute(0, 3, 1, 2),
        "depth": accum[..., C:].permute(0, 3, 1, 2),
        "radii": proj.radii.amax(dim=-1),
        "means2d": proj.means2d,
    }
