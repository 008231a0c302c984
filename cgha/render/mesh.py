"""Differentiable triangle-mesh rasterizer (CPU and CUDA): hard z-buffer and soft silhouette, in PyTorch + Triton.

Hard (z-buffer) path
--------------------
1. Project the vertices world -> camera -> pixels (OpenCV axes, pixel ``(u, v)`` centred at ``(u+0.5, v+0.5)``).
2. Per-face setup in float64 (cheap: one row per face): the pixel bounding box clipped to the image, the three
   screen-space barycentrics written as affine functions of the integer pixel offset inside that box, and the
   plane of ``1/z`` in screen space (perspective-correct depth).
3. Enumerate the (face, pixel) fragments of all bounding boxes, faces grouped by bbox pixel count (rounded up to
   a bucket) into dense [faces, slots] blocks of at most ``_MAX_FRAGMENTS`` (CPU) / ``_MAX_FRAGMENTS_GPU``
   entries, so memory follows the number of covered pixels, not pixels x faces (``_chunk_plan`` merges small
   buckets where their kernel launches would cost more than the padding). A fragment is inside when all three
   barycentrics are ``>= -_INSIDE_TOL``; the small tolerance makes pixel centres lying exactly on a shared edge
   covered by both faces (no cracks), the z-test then picks one.
4. Z-test with one ``scatter_reduce('amin')`` per chunk on a packed int64 key
   ``float32_bits(depth) << 32 | face``: bits of positive floats are monotonic, and the face index breaks depth
   ties deterministically (lower index wins).
5. For each covered pixel, recompute the perspective-correct barycentrics of the winning face differentiably by
   intersecting the pixel's camera ray with the face's plane (camera space), so ``attrs``, ``depth``, ``normals``
   and ``bary`` carry gradients w.r.t. ``verts``, ``vert_attrs``, ``viewmats`` and ``Ks`` (the choice of the
   visible face itself is piecewise constant and has no gradient).

Faces with any vertex at camera ``z <= near`` are skipped entirely by both paths (no clipping against the near
plane), and so are faces with (numerically) zero screen area. There is no back-face culling: the z-buffer decides.

Soft silhouette (``soft_mask``, DIB-R-like)
-------------------------------------------
Every face covers a pixel with probability ``p = erfc(d / sigma) / 2``, d being the signed distance (px) from the
pixel centre to the projected triangle (distance to the nearest edge segment, negative inside), and the faces
combine as independent events: ``soft_mask = 1 - prod_f (1 - p_f)``, computed as ``-expm1`` of a scatter-add of
``log(1 - p_f)``. Why erfc rather than a sigmoid or DIB-R's ``exp(-d^2 / sigma)`` outside / 1 inside:

* it is the exact coverage of the face's half-plane by a Gaussian pixel filter ``exp(-r^2 / sigma^2)``, so it is
  1/2 on an edge and smooth across it: pixels on both sides of a silhouette edge pull on the vertices (DIB-R's
  inside value 1 gives no gradient from inside);
* its tail falls like DIB-R's ``exp(-d^2 / sigma^2)``, so p < 2.1e-4 beyond ``_SOFT_RADIUS = 2.5`` sigma and a
  face only needs the window of its bbox grown by 2.5 sigma; a sigmoid's exponential tail would need 8.5 sigma
  for the same cut-off (~8x the fragments of a 1-px face at sigma = 1 px).

``log(1 - p) = log(erfc(-d / sigma) / 2)`` with the erfc argument clamped at ``_ERFC_MAX``, so p < 1 and the log
stays finite (a pixel > 9 sigma inside a face is covered to float precision anyway).

Windows are binned like the hard path: grouped by their (height, width) rounded up to a bucket and evaluated in
dense [3 edges, faces, BH, BW] blocks where every per-edge affine function of the pixel is one broadcast add of a
row and a column term; padding slots are put ``_BIG`` px outside every edge (p = 0). The chunk plan is made once
per call and reused by the backward pass. A custom autograd function keeps, per slot, the derivative of
log(1 - p) w.r.t. the normal and tangential coordinates of the nearest edge (13 bytes), routes the upstream
gradient to that edge's line coefficients with row / column sums, and maps those to the corners analytically;
autograd takes it from the projected corners to ``verts``, ``viewmats`` and ``Ks``.

Properties worth knowing when fitting masks with it: where k faces meet a silhouette edge they all contribute,
and a closed mesh always has at least the front and the back face of a contour edge there (plus grazing faces
near it), so the 0.5 level of ``soft_mask`` lies outside the hard silhouette (~0.4 sigma for k = 2, more for fine
meshes) and a fit shrinks the mesh by about that much; use the smallest sigma that still reaches far enough. Inside
a coarse single-layer mesh, a shared edge reads 1 - 1/4 = 0.75 (as in SoftRas).

Triton path (``backend="triton"``, the default for float32 CUDA tensors)
--------------------------------------------------------------------------
The code above is the pure-PyTorch twin that defines the semantics; on GPUs ``cgha.kernels.mesh_raster`` runs the
z-test and the soft log-coverage as fused kernels instead (tests/test_mesh_kernels.py compares them). Every face
keeps its (possibly empty) box, without compaction, banding or bucket plans, so the host learns no sizes from the
GPU: one program per group of faces loops over their boxes, the z-test reduces the same packed keys with atomic
min (bit-identical to the twin's where the twin does not band; the low word is ``b * F + f``), the soft forward
adds log(1 - p) with atomic adds, and the soft backward recomputes the fragments and reduces the upstream gradient
per face straight to the corners (nothing per fragment is stored). The visible-surface recompute and everything
after it is shared.
"""

from __future__ import annotations

import functools
import math
import sys

import torch
from torch.autograd.function import once_differentiable

from cgha.kernels import resolve_backend

__all__ = ["rasterize_mesh"]

# Cap on the number of (face, pixel) candidate fragments processed at once; peak temporary memory is roughly
# 100 bytes per fragment.
_MAX_FRAGMENTS = 1 << 20
# Barycentric tolerance of the inside test (relative to the triangle, so resolution independent).
_INSIDE_TOL = 1e-5
# Faces whose doubled screen area (px^2) is below this are skipped: they cover no pixel centre in practice and
# their barycentric coefficients would be ill-conditioned.
_MIN_AREA2 = 1e-10
_KEY_EMPTY = torch.iinfo(torch.int64).max
_LITTLE_ENDIAN = sys.byteorder == "little"
# Keys below this belong to a fragment with a finite depth (float32 bits of +inf are 0x7F800000).
_KEY_COVERED_MAX = 0x7F800000 << 32
# Faces whose clipped pixel bbox is larger than this are processed in horizontal bands of at most this many pixels.
_MAX_BOX = 4096
# Fragments per chunk on GPUs: each chunk costs a fixed number of kernel launches, so chunks should be large;
# ~100 bytes per fragment of temporaries is under 4 GiB.
_MAX_FRAGMENTS_GPU = 1 << 25
# Padding slots that merging two buckets into one chunk may add (see _chunk_plan), on CPUs and on GPUs.
_MERGE_SLACK = 1 << 13
_MERGE_SLACK_GPU = 1 << 22
# Soft path: windows reach _SOFT_RADIUS * sigma px beyond a face's bbox, where p = erfc(d / sigma) / 2 < 2.1e-4.
_SOFT_RADIUS = 2.5
# Largest erfc argument used: erfc(9) = 4.1e-37 is still a normal float32, so log(1 - p) stays finite.
_ERFC_MAX = 9.0
# Normal coordinate given to padding slots of a soft block: that far outside every edge, p is exactly 0.
_BIG = 1e6


def _check_inputs(verts, faces, vert_attrs, viewmats, Ks, width, height):
    if not isinstance(verts, torch.Tensor) or verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must be a [B, V, 3] tensor, got {getattr(verts, 'shape', type(verts))}")
    if not verts.is_floating_point():
        raise ValueError(f"verts must be floating point, got {verts.dtype}")
    B, V, _ = verts.shape
    if not isinstance(faces, torch.Tensor) or faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must be a [F, 3] tensor, got {getattr(faces, 'shape', type(faces))}")
    if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool:
        raise ValueError(f"faces must be an integer tensor, got {faces.dtype}")
    if vert_attrs is not None:
        if not isinstance(vert_attrs, torch.Tensor) or vert_attrs.dim() != 3 or vert_attrs.shape[:2] != (B, V):
            raise ValueError(
                f"vert_attrs must be a [B={B}, V={V}, A] tensor or None, got {getattr(vert_attrs, 'shape', None)}"
            )
        if not vert_attrs.is_floating_point():
            raise ValueError(f"vert_attrs must be floating point, got {vert_attrs.dtype}")
    if not isinstance(viewmats, torch.Tensor) or viewmats.shape != (B, 4, 4):
        raise ValueError(f"viewmats must be a [B={B}, 4, 4] tensor, got {getattr(viewmats, 'shape', None)}")
    if not isinstance(Ks, torch.Tensor) or Ks.shape != (B, 3, 3):
        raise ValueError(f"Ks must be a [B={B}, 3, 3] tensor, got {getattr(Ks, 'shape', None)}")
    for name, t in (("viewmats", viewmats), ("Ks", Ks)):
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
    for name, val in (("width", width), ("height", height)):
        if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    # One host sync for all value checks (each costs a GPU round trip): a finite sum implies finite entries, and
    # float64 holds every face index exactly.
    named = (("verts", verts), ("viewmats", viewmats), ("Ks", Ks))
    stats = [t.detach().sum().double() for _, t in named]
    if faces.numel() > 0:
        stats += [x.double() for x in torch.aminmax(faces.detach())]
    stats = torch.stack(stats).tolist()
    for (name, t), total in zip(named, stats):
        if not math.isfinite(total) and not bool(torch.isfinite(t.detach()).all()):
            raise ValueError(f"{name} contains NaN or inf")
    if faces.numel() > 0:
        lo, hi = int(stats[3]), int(stats[4])
        if lo < 0 or hi >= V:
            raise ValueError(f"faces index out of range [0, {V}): min {lo}, max {hi}")


def _to_camera(verts, viewmats):
    """World [B, V, 3] -> camera [B, V, 3] with world-to-camera ``viewmats`` [B, 4, 4]."""
    R = viewmats[:, :3, :3]
    t = viewmats[:, :3, 3]
    return verts @ R.transpose(-1, -2) + t[:, None, :]


def _corner_uvz(cam, faces, Ks):
    """Screen position and depth of every face corner (no grad; float64).

    Args:
        cam: [B, V, 3] camera-space vertices.
        faces: [F, 3] int64.
        Ks: [B, 3, 3] intrinsics (pinhole: last row [0, 0, 1]).
    Returns:
        [9, B * F] float64: rows u_0..u_2, v_0..v_2, z_0..z_2 of the three corners of face ``b * F + f``.
    """
    B, V, _ = cam.shape
    F = faces.shape[0]
    device = cam.device
    cam = cam.double()
    K = Ks.double()
    z = cam[..., 2]
    x = cam[..., 0] / z
    y = cam[..., 1] / z
    u = K[:, 0, 0, None] * x + K[:, 0, 1, None] * y + K[:, 0, 2, None]
    v = K[:, 1, 1, None] * y + K[:, 1, 2, None]
    # 1-D index_select is by far the fastest gather on CPU, hence one per component (and _take below).
    vid = (faces.t()[:, None, :] + torch.arange(B, device=device)[:, None] * V).reshape(-1)  # [3 * B * F]
    uvz = torch.empty(3, 3 * B * F, dtype=torch.float64, device=device)
    for r, t in enumerate((u, v, z)):
        torch.index_select(t.reshape(-1), 0, vid, out=uvz[r])
    return uvz.view(9, B * F)


def _screen_extent(uvz, near):
    """Corners' screen bounding box of every face and whether the face is drawable (see ``_face_boxes``).

    Args:
        uvz: [9, B * F] float64 from ``_corner_uvz``.
        near: near plane.
    Returns:
        lo, hi: [2 (u, v), B * F] float64 smallest and largest corner coordinates; drawable: [B * F] bool.
    """
    uv = uvz[:6].view(2, 3, -1)
    lo, hi = uv.amin(1), uv.amax(1)  # [u or v, B * F]
    fu, fv = uvz[0:3], uvz[3:6]
    area2 = (fu[1] - fu[0]) * (fv[2] - fv[0]) - (fv[1] - fv[0]) * (fu[2] - fu[0])
    drawable = (uvz[6:9].amin(0) > near) & (area2.abs() > _MIN_AREA2) & torch.isfinite(area2)
    return lo, hi, drawable


def _pixel_range(lo, hi, margin, width, height):
    """First and last pixel (column, row) whose centre lies in [lo - margin, hi + margin], clipped to the image.

    Args:
        lo, hi: [2, N] float64 from ``_screen_extent``.
    Returns:
        first, last: [2, N] int64; the range is empty on an axis where last < first.
    """
    # Pixel centres u + 0.5 within [umin - margin, umax + margin]; clamp before the int cast so huge projections
    # stay in range (ceil / floor commute with clamping to integers).
    first = torch.ceil(lo - (0.5 + margin))
    last = torch.floor(hi + (margin - 0.5))
    for r, size in enumerate((width, height)):
        first[r].clamp_(-1.0, size)
        last[r].clamp_(-1.0, size)
    first = first.long().clamp_(min=0)
    last = last.long()
    last[0].clamp_(max=width - 1)
    last[1].clamp_(max=height - 1)
    return first, last


def _face_boxes(uvz, B, F, width, height, near, margins):
    """Pixel bounding boxes of the drawable faces, split into bands of at most ``_MAX_BOX`` pixels.

    A face is drawable when all its corners are in front of the near plane and its doubled screen area exceeds
    ``_MIN_AREA2``; it gets a box for a margin when its corners' bounding box, grown by that margin on every side,
    contains a pixel centre of the image. The work shared by the margins (hard path: 0, soft path: a few sigma)
    is done once.

    Args:
        uvz: [9, B * F] float64 from ``_corner_uvz``.
        B, F: batch size and face count.
        width, height: image size.
        near: near plane.
        margins: px added on every side of the corners' bounding box, one box set per margin.
    Returns:
        one tuple per margin of
            gid: [Fv] int64 global face index ``b * F + f`` of each virtual face (ascending),
            x0, y0: [Fv] int64 pixel of the box's top-left corner,
            bw, bh: [Fv] int64 box width and height (>= 1),
            base: [Fv] int64 linear index into [B, H, W] of that corner pixel.
    """
    device = uvz.device
    lo, hi, drawable = _screen_extent(uvz, near)
    batch_base = (torch.arange(B, device=device) * (height * width)).repeat_interleave(F) if B > 1 else None
    out = []
    for margin in margins:
        first, last = _pixel_range(lo, hi, margin, width, height)
        gid = (drawable & (last >= first).all(0)).nonzero().squeeze(1)
        base = first[1] * width + first[0]
        if batch_base is not None:
            base += batch_base
        # One gather for all per-face integers (fewer kernels than one per array).
        x0, y0, y1, bw, base = _take(torch.stack([first[0], first[1], last[1], last[0] - first[0] + 1, base]), gid)
        bh = y1 - y0 + 1
        if gid.numel() > 0 and int((bw * bh).max()) > _MAX_BOX:
            rows_per = (_MAX_BOX // bw).clamp(min=1)
            n_bands = (bh + rows_per - 1) // rows_per
            rep = torch.repeat_interleave(torch.arange(gid.numel(), device=device), n_bands)
            band = torch.arange(rep.numel(), device=device) - (n_bands.cumsum(0) - n_bands).index_select(0, rep)
            gid, x0, y0, y1, bw, base, rows_per = _take(torch.stack([gid, x0, y0, y1, bw, base, rows_per]), rep)
            y0 = y0 + band * rows_per
            base = base + band * rows_per * width
            bh = torch.minimum(rows_per, y1 - y0 + 1)
        out.append((gid, x0, y0, bw, bh, base))
    return out


def _face_setup(uvz, boxes):
    """Per-face screen-space setup for the hard fragment stage (no grad; float64 math, float32 coefficients).

    Args:
        uvz: [9, B * F] float64 corner positions from ``_corner_uvz``.
        boxes: the margin-0 tuple of ``_face_boxes`` (faces with big boxes split into bands, "virtual faces").
    Returns:
        gid: [Fv] int64 global face index ``b * F + f`` of each virtual face (ascending).
        base: [Fv] int64 linear index into [B, H, W] of each virtual face's bbox origin pixel.
        bw, bh: [Fv] int64 bbox width and height (>= 1).
        coef: [12, Fv] float32; rows 0:3 / 3:6 / 6:9 hold d(w_i)/dpx, d(w_i)/dpy and w_i at the bbox origin pixel
            centre for the screen-space barycentrics w_0..w_2 (px, py: pixel offset inside the bbox); rows 9:12
            the same for 1/z, which is affine in screen space.
    """
    gid, x0, y0, bw, bh, base = boxes
    return gid, base, bw, bh, _plane_coefficients(_take(uvz, gid), x0, y0)


def _plane_coefficients(rows, x0, y0):
    """Screen-space barycentrics and 1/z of faces as affine functions of the pixel offset inside their box.

    Args:
        rows: [9, N] float64 corner positions (``_corner_uvz`` columns of the faces).
        x0, y0: [N] int64 pixel of each box's top-left corner.
    Returns:
        [12, N] float32 ``coef`` as documented in ``_face_setup``.
    """
    # Edge i is opposite vertex i, from vertex j = i+1 to k = i+2: w_i = (a_i (x - u_j) + b_i (y - v_j)) / D with
    # D the signed doubled area, so w_i = 1 at vertex i and the sign of D (winding) cancels. Rows [3, Fv] hold
    # the three edges at once (few kernels).
    fu, fv, fz = rows[0:3], rows[3:6], rows[6:9]
    fu_j, fu_k = fu.roll(-1, 0), fu.roll(-2, 0)
    fv_j, fv_k = fv.roll(-1, 0), fv.roll(-2, 0)
    inv_d = 1.0 / ((fv[2] - fv[1]) * (fu[0] - fu[1]) + (fu[1] - fu[2]) * (fv[0] - fv[1]))
    a = (fv_k - fv_j) * inv_d
    b = (fu_j - fu_k) * inv_d
    c = a * (x0.double() + 0.5 - fu_j) + b * (y0.double() + 0.5 - fv_j)
    abc = torch.stack([a, b, c])  # [coefficient, edge, Fv]
    # 1/z is affine in screen space with coefficients sum_i coef_i / z_i.
    inv_z = (abc * fz.reciprocal()).sum(1)
    return torch.cat([abc.view(9, -1), inv_z]).float()


def _take(t, idx):
    """Columns ``idx`` of a 2-D tensor [R, N] -> [R, len(idx)]."""
    if t.device.type != "cpu":
        return t.index_select(1, idx)  # one kernel
    return torch.stack([row.index_select(0, idx) for row in t])  # 1-D gathers are the fast ones on CPUs


def _zbuffer(uvz, boxes, B, width, height):
    """Hard z-test.

    Args:
        uvz: [9, B * F] float64 corner positions from ``_corner_uvz``.
        boxes: the margin-0 tuple of ``_face_boxes``.
        B: batch size.
        width, height: image size.
    Returns:
        keys: [B*H*W] int64 packed ``float32_bits(depth) << 32 | virtual face index`` of the front-most fragment;
            pixels with no fragment hold a key ``>= _KEY_COVERED_MAX``.
        gid: [Fv] int64 global face index ``b * F + f`` of each virtual face.
    """
    device = uvz.device
    n_pix = B * height * width
    keys = torch.full((n_pix,), _KEY_EMPTY, dtype=torch.int64, device=device)
    gid, base, bw, bh, coef = _face_setup(uvz, boxes)
    if gid.numel() == 0:
        return keys, gid

    # Group faces by their pixel count rounded up to a bucket size, then evaluate each group as a dense
    # [faces, slots] block with per-face scalars broadcast over the slots: no per-fragment gathers, at the price
    # of < 33 % padding (more where _chunk_plan merges small buckets). Slot s of a face is the pixel
    # (s mod bw, s div bw) of its bbox; padding slots repeat the face's last pixel, harmless for a min-reduction.
    counts = bw * bh
    # Banding bounds every count by max(_MAX_BOX, width): bucket sizes known without a host sync.
    sizes, sizes_t = _bucket_sizes(max(_MAX_BOX, width), device)
    bucket = torch.searchsorted(sizes_t, counts)
    order = torch.argsort(bucket, stable=True)
    per_bucket = torch.bincount(bucket, minlength=len(sizes)).tolist()
    budget, slack = _device_costs(device)
    # Permute every per-face array into bucket order once, so each chunk below is a plain slice.
    coef = _take(coef, order)
    bw_f, last_f = _take(torch.stack([bw, counts - 1]).float(), order)
    base = base.index_select(0, order)
    order32 = order.to(torch.int32)
    exact_f32 = n_pix < (1 << 24)  # pixel indices are exact in float32 below 2^24
    base_f = base.float() if exact_f32 else None
    for s, e, (slots,) in _chunk_plan(per_bucket, [(k,) for k in sizes], budget, slack):
        lin = torch.arange(slots, device=device, dtype=torch.float32)[None]
        c = coef[:, s:e, None]  # [12, n, 1]
        w_box = bw_f[s:e, None]
        slot = torch.minimum(lin, last_f[s:e, None])
        # Exact in float32: slot < bw * bh <= max(_MAX_BOX, W) keeps the rounding far below the 0.5 / bw margin.
        py = torch.floor_((slot + 0.5) / w_box)
        px = torch.addcmul(slot, py, w_box, value=-1.0)
        w_min = None
        for i in range(3):
            w = torch.addcmul(c[6 + i], c[i], px).addcmul_(c[3 + i], py)
            w_min = w if w_min is None else torch.minimum(w_min, w)
        inv_z = torch.addcmul(c[11], c[9], px).addcmul_(c[10], py).clamp_(min=0.0)
        # Outside fragments get 1/z = 0 -> depth +inf, whose bits are above every finite depth's.
        depth = torch.where(w_min >= -_INSIDE_TOL, inv_z, 0.0).reciprocal_()
        if _LITTLE_ENDIAN:  # int32 pair (face, depth bits) read as one int64: depth bits are the high word
            key = torch.stack([order32[s:e, None].expand_as(depth), depth.view(torch.int32)], -1)
            key = key.view(torch.int64)
        else:
            key = (depth.view(torch.int32).long() << 32) | order[s:e, None]
        if exact_f32:
            pix = torch.add(px, py, alpha=width).add_(base_f[s:e, None]).long()
        else:
            pix = py.long() * width + px.long() + base[s:e, None]
        keys.scatter_reduce_(0, pix.reshape(-1), key.reshape(-1), reduce="amin", include_self=True)
    return keys, gid


def _chunk_plan(counts, shapes, budget, slack):
    """Chunks of bucket-ordered faces: consecutive buckets merged while cheap, groups split by ``budget``.

    Args:
        counts: python list, number of faces in each bucket (in bucket order).
        shapes: python list of tuples, the dense block shape of one face of each bucket.
        budget: largest number of slots (faces x prod(shape)) per chunk (a single face may exceed it).
        slack: padding slots worth one chunk's fixed cost (its kernel launches); see ``_device_costs``.
    Returns:
        list of ``(start, end, shape)``: faces start:end are evaluated as one block of that shape. A merged group
        takes the largest shape of its buckets; buckets are merged while that adds at most ``slack`` slots.
    """
    groups = []  # [faces, shape, slots if each bucket were padded separately]
    for n, shape in zip(counts, shapes):
        if n == 0:
            continue
        slots = n * math.prod(shape)
        if groups:
            m, gshape, gslots = groups[-1]
            merged_shape = tuple(max(x, y) for x, y in zip(gshape, shape))
            if (m + n) * math.prod(merged_shape) <= gslots + slots + slack:
                groups[-1] = [m + n, merged_shape, gslots + slots]
                continue
        groups.append([n, shape, slots])
    chunks, start = [], 0
    for n, shape, _ in groups:
        step = max(1, budget // math.prod(shape))
        chunks += [(s, min(s + step, start + n), shape) for s in range(start, start + n, step)]
        start += n
    return chunks


@functools.lru_cache(maxsize=64)
def _bucket_sizes(max_count, device):
    """Slot counts 1, 2, 3, 4, 6, 8, 12, ... (two per octave) up to >= max_count: a tuple and an int64 tensor.

    Cached: a copy between host and GPU waits for the GPU to drain its queue, so it should happen once per size
    and device, not on every call.
    """
    sizes, p = [1, 2], 2
    while sizes[-1] < max_count:
        sizes += [p + p // 2, 2 * p]
        p *= 2
    return tuple(sizes), torch.tensor(sizes, dtype=torch.int64, device=device)


def _device_costs(device):
    """(fragments per chunk, merge slack) for ``_chunk_plan``.

    CPUs: cache-sized chunks, and a chunk's ~100 kernel calls (~1 ms) cost about as much as a few thousand padding
    slots. GPUs: every chunk costs launches and little else, so chunks are large and padding is cheap (a few
    million slots per chunk saved).
    """
    if device.type == "cpu":
        return _MAX_FRAGMENTS, _MERGE_SLACK
    return max(_MAX_FRAGMENTS, _MAX_FRAGMENTS_GPU), _MERGE_SLACK_GPU


def _soft_plan(boxes, width, height):
    """Windows of the soft path and the chunks that evaluate them (no grad), computed once per call.

    ``boxes`` (from ``_face_boxes`` with the soft margin) give every drawable face the window of pixel centres
    within a few sigma of its bounding box (banded like the hard path). Windows are grouped by (height, width)
    rounded up to ``_bucket_sizes`` and each group is evaluated in dense [n, BH, BW] blocks: per-row and
    per-column terms broadcast against each other, so an affine function of the pixel costs one full-size add,
    and padding slots are pushed far outside every edge.

    Returns a dict of
        ``gid`` [Fv] int64 global face ``b * F + f`` of each window, in bucket order (the chunks are slices of it),
        ``bw``, ``bh`` [Fv] int64 window size, ``base`` [Fv] int64 linear index into [B, H, W] of its first pixel,
        ``origin`` [2, 1, Fv] float64 centre (x, y) of that pixel,
        ``chunks``: list of python ``(start, end, BH, BW)``: windows ``start:end`` evaluated as one block.
    """
    gid, x0, y0, bw, bh, base = boxes
    device = gid.device
    sizes, sizes_t = _bucket_sizes(max(width, height), device)
    S = len(sizes)
    key = torch.searchsorted(sizes_t, bh) * S + torch.searchsorted(sizes_t, bw)
    order = torch.argsort(key, stable=True)
    counts = torch.bincount(key, minlength=S * S).tolist()
    shapes = [(sizes[k // S], sizes[k % S]) for k in range(S * S)]
    chunks = [(s, e, BH, BW) for s, e, (BH, BW) in _chunk_plan(counts, shapes, *_device_costs(device))]
    gid, x0, y0, bw, bh, base = torch.stack([gid, x0, y0, bw, bh, base]).index_select(1, order)
    origin = torch.stack([x0, y0]).double().add_(0.5).unsqueeze(1)
    return {"gid": gid, "bw": bw, "bh": bh, "base": base, "origin": origin, "chunks": chunks}


def _soft_corners(cam, Ks, faces, plan):
    """Differentiable screen positions of the windows' corners, relative to each window's first pixel centre.

    Args:
        cam: [B, V, 3] camera-space vertices (differentiable).
        Ks: [B, 3, 3] intrinsics (differentiable).
        faces: [F, 3] int64.
        plan: from ``_soft_plan``.
    Returns:
        [2 (u, v), 3 (corner), Fv].
    """
    B, V, _ = cam.shape
    F = faces.shape[0]
    gid = plan["gid"]
    b = torch.div(gid, F, rounding_mode="floor")
    corner = faces.index_select(0, gid - b * F).t() + b * V  # [3, Fv] columns of cam.reshape(B * V, 3).t()
    # Project the used corners only: they are in front of the near plane, so no division by ~0 can leak NaN
    # into the gradients of vertices that no drawn face uses.
    p = cam.reshape(B * V, 3).t().index_select(1, corner.reshape(-1)).view(3, 3, -1)  # [xyz, corner, Fv]
    xy = p[:2] / p[2:]
    K = Ks.reshape(B, 9).t()
    K = K.index_select(1, b) if B > 1 else K  # [9, Fv or 1]
    uv = torch.stack([torch.addcmul(torch.addcmul(K[2], K[0], xy[0]), K[1], xy[1]), torch.addcmul(K[5], K[4], xy[1])])
    return uv - plan["origin"].to(uv.dtype)


def _edge_frames(P):
    """Per-edge frames of each window's triangle, shared by ``_edge_lines`` and its backward.

    Edge i is opposite corner i, from corner j = i+1 to k = i+2. A zero-length edge is a point: it gets
    t = (1, 0), and with h = 0 the line coordinates below still measure the distance to it.

    Args:
        P: [2, 3, Fv] corners relative to the window's first pixel centre.
    Returns:
        t, n, m: [2, 3, Fv] unit direction, unit normal pointing into the triangle and midpoint of each edge,
        length: [3, Fv] edge length (clamped away from 0), point: [3, Fv] bool zero-length edges,
        orient: [Fv] +-1 winding of the triangle.
    """
    Pj, Pk = P.roll(-1, 1), P.roll(-2, 1)
    e = Pk - Pj
    len2 = (e * e).sum(0)
    tiny = torch.finfo(P.dtype).tiny
    point = len2 <= tiny
    length = len2.clamp(min=tiny).sqrt()
    t = e / length
    t = torch.stack([torch.where(point, 1.0, t[0]), torch.where(point, 0.0, t[1])])
    # cross(e_1, e_2) = cross(P0 - P2, P1 - P0) is the doubled signed area; its sign turns (-ty, tx) inward.
    orient = torch.where(e[0, 1] * e[1, 2] >= e[1, 1] * e[0, 2], 1.0, -1.0).to(P.dtype)
    n = torch.stack([-t[1], t[0]]) * orient
    return t, n, 0.5 * (Pj + Pk), length, point, orient


def _edge_lines(P):
    """Line coordinates of the three edges of each window's triangle (no grad).

    For an edge with unit direction t, inward unit normal n, midpoint m and half-length h, a pixel offset
    (px, py) inside the window has the normal coordinate ``l = n . (p - m) = nx px + ny py + cl`` (signed distance
    to the edge's line, positive inside) and the tangential one ``s = t . (p - m) = tx px + ty py + cs`` (the foot
    of the perpendicular lies on the edge iff |s| <= h).

    Args:
        P: [2, 3, Fv] corners relative to the window's first pixel centre.
    Returns:
        [7, 3, Fv]: rows nx, ny, cl, tx, ty, cs, h of each edge.
    """
    t, n, m, length, _, _ = _edge_frames(P)
    return torch.cat([n, -(n * m).sum(0, keepdim=True), t, -(t * m).sum(0, keepdim=True), 0.5 * length[None]])


def _edge_lines_backward(P, grad):
    """Vector-Jacobian product of ``_edge_lines``: grad [7, 3, Fv] w.r.t. its output -> [2, 3, Fv] w.r.t. P."""
    t, n, m, length, point, orient = _edge_frames(P)
    g_n, g_cl, g_t, g_cs, g_h = grad[0:2], grad[2], grad[3:5], grad[5], grad[6]
    # cl = -n . m and cs = -t . m.
    g_n = g_n - g_cl * m
    g_t = g_t - g_cs * m
    g_m = -(g_cl * n + g_cs * t)
    # n = orient * (-t_y, t_x).
    g_t = g_t + orient * torch.stack([g_n[1], -g_n[0]])
    # t = e / |e| and h = |e| / 2, e = P_k - P_j; a point edge has a constant t and a clamped length: no gradient.
    g_e = (g_t - (g_t * t).sum(0) * t) / length + 0.5 * g_h * t
    g_e = torch.where(point, 0.0, g_e)
    # m = (P_j + P_k) / 2; P_j and P_k are P rolled by -1 and -2 along the corners.
    g_pj = 0.5 * g_m - g_e
    g_pk = 0.5 * g_m + g_e
    return g_pj.roll(1, 1) + g_pk.roll(2, 1)


def _soft_pixels(plan, s, e, BH, BW, width):
    """[n, BH, BW] int64 linear pixel index of every slot of windows s:e; padding slots repeat a window pixel."""
    device = plan["gid"].device
    px = torch.arange(BW, device=device)
    py = torch.arange(BH, device=device)
    col = torch.minimum(px, plan["bw"][s:e, None] - 1)
    row = torch.minimum(py, plan["bh"][s:e, None] - 1) * width + plan["base"][s:e, None]
    return row[:, :, None] + col[:, None, :]


def _soft_fragments(c, bw, bh, BH, BW, sigma, need_grad):
    """log(1 - p) of every slot of one block, and what the backward pass needs.

    Args:
        c: [7, 3, n] edge lines of the block's windows (``_edge_lines``).
        bw, bh: [n] int64 window sizes (slots beyond them are padding).
        BH, BW: block size.
        sigma: falloff scale in px.
        need_grad: also return the derivative terms.
    Returns:
        logq: [n, BH, BW] log(1 - p), 0 on padding.
        and if need_grad: a, b [n, BH, BW] = dlog(1-p)/dl and dlog(1-p)/ds of the nearest edge (0 on padding),
        edge [n, BH, BW] uint8 index of that edge.
    """
    dt, dev = c.dtype, c.device
    px = torch.arange(BW, device=dev, dtype=dt)
    py = torch.arange(BH, device=dev, dtype=dt)
    nx, ny, cl, tx, ty, cs, h = c.unsqueeze(-1)  # each [3, n, 1]
    # Padding rows / columns get l = -_BIG on every edge: ~_BIG px outside the triangle, so p = 0 exactly.
    l_col = torch.where(px < bw[:, None], torch.addcmul(cl, nx, px), -_BIG)  # [3, n, BW]
    l_row = torch.where(py < bh[:, None], ny * py, -_BIG)  # [3, n, BH]
    l = l_row.unsqueeze(-1) + l_col.unsqueeze(-2)  # [3, n, BH, BW]
    hh = h.unsqueeze(-1)
    ex = (ty * py).unsqueeze(-1) + torch.addcmul(cs, tx, px).unsqueeze(-2)  # s, then in place: s - clamp(s, -h, h)
    ex -= torch.clamp(ex, -hh, hh)
    # Distance to each edge segment: perpendicular part l, and the part ex beyond the nearer endpoint.
    dist = torch.hypot(l, ex)
    if need_grad:
        udist, edge = dist.min(0)
    else:
        udist = dist.amin(0)
    del dist
    # Inside (all l >= 0) the distance to the boundary is the smallest l, and the nearest segment is its edge.
    lmin = l.amin(0)
    inside = lmin >= 0
    d = torch.where(inside, -lmin, udist)  # signed distance to the triangle, negative inside
    del udist, lmin
    # 1 - p = erfc(-d / sigma) / 2. Clamping the argument at _ERFC_MAX keeps erfc a normal float32 (p < 1, the log
    # finite); beyond it the pixel is > 9 sigma inside this face and the coverage is 1 to float precision.
    z = d.mul(-1.0 / sigma).clamp_(max=_ERFC_MAX)
    q2 = torch.special.erfc(z)
    logq = (q2 * 0.5).log_()
    if not need_grad:
        return (logq,)
    # d log(1 - p) / d d = 2 exp(-z^2) / (sigma sqrt(pi) erfc(z)); 0 on padding (exp(-_BIG^2) = 0).
    g = z.square_().neg_().exp_().div_(q2).mul_(2.0 / (sigma * math.pi ** 0.5))
    del z, q2
    # d d / d l and d d / d s of the nearest edge: -1 and 0 inside (d = -l); outside d = sqrt(l^2 + ex^2), so
    # l / d and ex / d (d > 0 there: an outside point is strictly outside some edge's half-plane).
    sel = edge.unsqueeze(0)
    rd = torch.where(inside, 0.0, d.reciprocal_())
    a = torch.where(inside, -g, l.gather(0, sel).squeeze(0).mul_(rd).mul_(g))
    b = ex.gather(0, sel).squeeze(0).mul_(rd).mul_(g)
    return logq, a, b, edge.to(torch.uint8)


def _soft_fragments_backward(gf, a, b, edge):
    """Chain rule of one block into its edge lines: gf [n, BH, BW] = d loss / d log(1 - p) -> [7, 3, n].

    l = nx px + ny py + cl, s = tx px + ty py + cs and, beyond an endpoint, ex = s -+ h; every slot feeds only its
    nearest edge. The per-slot terms are routed to their edge with one select, then each is summed over the block
    weighted by px, by py and by 1 from its row and column sums (reductions, not a matmul: cuBLAS runs these
    tiny-width products many times slower).
    """
    n, BH, BW = a.shape
    dt, dev = a.dtype, a.device
    # d ex / d h = -sign(s) = -sign(b) (g, rd >= 0), so the h term is -gf |b|.
    terms = torch.stack([gf * a, gf * b, b.abs().mul_(gf).neg_()])  # d/dl, d/ds, d/dh
    three = torch.arange(3, device=dev, dtype=torch.uint8).view(3, 1, 1, 1)
    picked = torch.where(edge == three, terms.unsqueeze(1), 0.0)  # [term, edge, n, BH, BW]
    rows = picked.sum(-1)  # [term, edge, n, BH]
    by_px = (picked.sum(-2) * torch.arange(BW, device=dev, dtype=dt)).sum(-1)
    by_py = (rows * torch.arange(BH, device=dev, dtype=dt)).sum(-1)
    total = rows.sum(-1)
    return torch.stack([by_px[0], by_py[0], total[0], by_px[1], by_py[1], total[1], total[2]])


class _SoftLogCoverage(torch.autograd.Function):
    """Per-pixel sum over nearby faces of log(1 - p_face), from the windows' corners; memory per chunk."""

    @staticmethod
    def forward(ctx, P, plan, n_pix, width, sigma):
        """P: [2, 3, Fv] (``_soft_corners``) -> [n_pix] sum of log(1 - p) over the fragments of each pixel."""
        need_grad = ctx.needs_input_grad[0]
        lines = _edge_lines(P)
        out = torch.zeros(n_pix, dtype=P.dtype, device=P.device)
        saved = []
        # int32 pixel indices (index_add_ / index_select take them) shrink what the backward keeps.
        index_dtype = torch.int32 if n_pix < 2 ** 31 else torch.int64
        for s, e, BH, BW in plan["chunks"]:
            res = _soft_fragments(lines[:, :, s:e], plan["bw"][s:e], plan["bh"][s:e], BH, BW, sigma, need_grad)
            pix = _soft_pixels(plan, s, e, BH, BW, width).to(index_dtype).view(-1)
            out.index_add_(0, pix, res[0].view(-1))
            if need_grad:
                saved.append((pix, *res[1:]))
        ctx.plan, ctx.saved_fragments = plan, saved
        ctx.save_for_backward(P)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        P, = ctx.saved_tensors
        grad = torch.empty((7,) + P.shape[1:], dtype=P.dtype, device=P.device)
        for (s, e, _, _), (pix, a, b, edge) in zip(ctx.plan["chunks"], ctx.saved_fragments):
            grad[:, :, s:e] = _soft_fragments_backward(grad_out.index_select(0, pix).view(a.shape), a, b, edge)
        return _edge_lines_backward(P, grad), None, None, None, None


def _soft_mask(cam, faces, Ks, boxes, width, height, sigma):
    """Soft silhouette [B, 1, H, W] = 1 - prod over faces of (1 - p_face), differentiable w.r.t. cam and Ks.

    ``boxes``: the soft-margin tuple of ``_face_boxes``, or None when there are no faces.
    """
    B = cam.shape[0]
    n_pix = B * height * width
    if boxes is None:
        return cam.new_zeros(B, 1, height, width)
    with torch.no_grad():
        plan = _soft_plan(boxes, width, height)
    P = _soft_corners(cam, Ks, faces, plan)
    log_empty = _SoftLogCoverage.apply(P, plan, n_pix, width, float(sigma))
    return (0.0 - torch.expm1(log_empty)).view(B, 1, height, width)  # 0 - x, not -x: empty pixels read +0


def _face_windows(uvz, B, F, width, height, near, margins):
    """Triton path: the box of every face for each margin, without compacting or banding (no host sync).

    Same boxes as ``_face_boxes`` (same drawability test and pixel range), but one per face: a face that
    ``_face_boxes`` leaves out gets an empty box, and a big box stays whole (the kernels loop over it).

    Args:
        uvz: [9, B * F] float64 from ``_corner_uvz``.
        B, F, width, height, near, margins: as for ``_face_boxes``.
    Returns:
        one [4, B * F] int32 tensor per margin: rows x0, y0, bw, bh of face ``b * F + f`` (bw = bh = 0: not drawn).
    """
    lo, hi, drawable = _screen_extent(uvz, near)
    out = []
    for margin in margins:
        first, last = _pixel_range(lo, hi, margin, width, height)
        size = torch.where(drawable & (last >= first).all(0), last - first + 1, 0)
        out.append(torch.cat([first, size]).to(torch.int32))
    return out


def _zbuffer_triton(uvz, win, B, F, width, height):
    """Hard z-test with the Triton kernel: keys as ``_zbuffer``'s, with the global face ``b * F + f`` in the low word.

    Args:
        uvz: [9, B * F] float64 from ``_corner_uvz``.
        win: [4, B * F] int32 margin-0 boxes from ``_face_windows``.
    Returns:
        keys: [B * H * W] int64; pixels with no fragment hold ``_KEY_EMPTY``.
    """
    from cgha.kernels import mesh_raster  # here, not at the top: it imports Triton, which CPU-only installs lack

    coef = _plane_coefficients(uvz, win[0].long(), win[1].long())
    return mesh_raster.zbuffer(coef, win, B, F, width, height, _INSIDE_TOL)


def _window_corners(cam, Ks, faces, win):
    """Triton path: differentiable screen corners of every face relative to its window's first pixel centre.

    Like ``_soft_corners`` for all B * F faces: faces with an empty window (some of them behind the camera) are
    projected with z = 1, so no division by ~0 can leak NaN into the gradients (theirs are 0).

    Args:
        cam: [B, V, 3] camera-space vertices (differentiable).
        Ks: [B, 3, 3] intrinsics (differentiable).
        faces: [F, 3] int64.
        win: [4, B * F] int32 soft-margin boxes from ``_face_windows``.
    Returns:
        [2 (u, v), 3 (corner), B * F].
    """
    B, V, _ = cam.shape
    F = faces.shape[0]
    corner = faces.t()[:, None, :] + (torch.arange(B, device=cam.device) * V)[None, :, None]  # [3, B, F]
    p = cam.reshape(B * V, 3).t().index_select(1, corner.reshape(-1)).view(3, 3, B, F)  # [xyz, corner, B, F]
    drawn = (win[2] > 0).view(1, B, F)
    xy = p[:2] / torch.where(drawn, p[2], 1.0)
    K = Ks.reshape(B, 9).t()[:, None, :, None]  # [9, 1, B, 1]
    uv = torch.stack([torch.addcmul(torch.addcmul(K[2], K[0], xy[0]), K[1], xy[1]), torch.addcmul(K[5], K[4], xy[1])])
    origin = win[:2].to(uv.dtype).add_(0.5).view(2, 1, B, F)
    return (uv - origin).reshape(2, 3, B * F)


class _SoftLogCoverageTriton(torch.autograd.Function):
    """Triton twin of ``_SoftLogCoverage``: the kernels recompute the fragments in the backward pass."""

    @staticmethod
    def forward(ctx, P, win, B, F, width, height, sigma):
        """P: [2, 3, B * F] (``_window_corners``) -> [B * H * W] sum of log(1 - p) over each pixel's fragments."""
        from cgha.kernels import mesh_raster

        ctx.save_for_backward(P, win)
        ctx.sizes = (B, F, width, height, sigma)
        return mesh_raster.soft_log_coverage(P.float(), win, B, F, width, height, sigma, _ERFC_MAX).to(P.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        from cgha.kernels import mesh_raster

        P, win = ctx.saved_tensors
        B, F, width, height, sigma = ctx.sizes
        grad = mesh_raster.soft_log_coverage_backward(grad_out.float(), P.float(), win, B, F, width, height, sigma,
                                                      _ERFC_MAX)
        return grad.to(P.dtype), None, None, None, None, None, None


def _soft_mask_triton(cam, faces, Ks, win, width, height, sigma):
    """``_soft_mask`` with the Triton kernels; ``win``: the soft-margin boxes of ``_face_windows``, or None."""
    B = cam.shape[0]
    if win is None:
        return cam.new_zeros(B, 1, height, width)
    P = _window_corners(cam, Ks, faces, win)
    log_empty = _SoftLogCoverageTriton.apply(P, win, B, faces.shape[0], width, height, float(sigma))
    return (0.0 - torch.expm1(log_empty)).view(B, 1, height, width)


def _pick_backend(backend, verts, n_faces, n_pix):
    """"triton" or "torch" for this call: ``resolve_backend``, then the kernels' limits.

    The kernels compute in float32 and index with int32, so "auto" keeps float64 inputs and batches with
    ``B * F`` or ``B * H * W`` of 2^31 or more on the twin; an explicit "triton" computes float64 inputs in float32
    and refuses the sizes it cannot index.
    """
    resolved = resolve_backend(backend, verts)
    too_big = max(n_faces, n_pix) >= (1 << 31)
    if backend == "auto" and (verts.dtype != torch.float32 or too_big):
        return "torch"
    if resolved == "triton" and too_big:
        raise ValueError(f"backend='triton' needs B*F and B*H*W below 2^31, got {n_faces} and {n_pix}")
    return resolved


def rasterize_mesh(verts, faces, vert_attrs, viewmats, Ks, width, height, sigma=1.0, near=0.01, soft=True,
                   backend="auto"):
    """Rasterize a triangle mesh with a hard z-buffer and a soft silhouette; outputs are differentiable by autograd.

    Args:
        verts: [B, V, 3] world-space vertex positions (float).
        faces: [F, 3] integer vertex indices shared by the batch (CCW seen from outside).
        vert_attrs: [B, V, A] per-vertex attributes to interpolate, or None.
        viewmats: [B, 4, 4] world-to-camera, OpenCV axes (x right, y down, z forward).
        Ks: [B, 3, 3] pinhole intrinsics in pixels (last row [0, 0, 1]); pixel (u, v) centre is (u+0.5, v+0.5).
        width, height: image size in pixels.
        sigma: falloff scale of the soft silhouette in px (> 0): a face covers a pixel whose centre is at signed
            distance d from it (negative inside) with probability ``erfc(d / sigma) / 2``.
        near: faces with any vertex at camera z <= near are skipped (not clipped), by both paths.
        soft: compute ``soft_mask``; callers that only need the hard outputs pass False and skip its cost.
        backend: ``"auto"``, ``"triton"`` or ``"torch"`` (``cgha.kernels``): who computes the z-buffer and the soft
            silhouette. ``"torch"`` is the pure-PyTorch path (the reference); ``"triton"`` runs the fused kernels of
            ``cgha.kernels.mesh_raster`` (same hard outputs; soft_mask and its gradients equal up to float32
            rounding; float64 inputs are computed in float32 there); ``"auto"`` picks Triton for float32 CUDA
            tensors when it imports, the twin otherwise.
    Returns:
        dict with
            ``attrs`` [B, A, H, W]: perspective-correct interpolation of the visible face's ``vert_attrs``, 0 outside
                (only present when ``vert_attrs`` is not None),
            ``mask`` [B, 1, H, W] float: 1 where a face covers the pixel centre,
            ``depth`` [B, 1, H, W]: camera z of the visible surface, 0 outside,
            ``normals`` [B, 3, H, W]: unit camera-space normal of the visible face
                (``cross(v1 - v0, v2 - v0)`` direction, outward for CCW faces), 0 outside,
            ``face_ids`` [B, H, W] int64: visible face, -1 for background,
            ``bary`` [B, 3, H, W]: perspective-correct barycentrics of the visible face, 0 outside,
            ``soft_mask`` [B, 1, H, W] (only when ``soft``): ``1 - prod_faces (1 - p)``, differentiable w.r.t.
                ``verts``, ``viewmats`` and ``Ks``.
    """
    _check_inputs(verts, faces, vert_attrs, viewmats, Ks, width, height)
    if soft and (isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 0 < sigma < math.inf):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    B, V, _ = verts.shape
    F = faces.shape[0]
    H, W = height, width
    HW = H * W
    device = verts.device
    dtype = verts.dtype
    faces = faces.to(device=device, dtype=torch.int64)
    viewmats = viewmats.to(device=device, dtype=dtype)
    Ks = Ks.to(device=device, dtype=dtype)
    use_triton = _pick_backend(backend, verts, B * F, B * HW) == "triton"
    cam = _to_camera(verts, viewmats)

    # Host syncs of the Triton path: the value checks of _check_inputs (one .tolist()) and the nonzero() below
    # (the number of covered pixels sizes everything after the z-buffer); the torch path adds its bucket plans'
    # .tolist() and _face_boxes' nonzero() / max().
    with torch.no_grad():
        boxes = [None, None]
        margins = (0.0, _SOFT_RADIUS * sigma) if soft else (0.0,)
        gid = None  # Triton keys hold b * F + f itself
        if F > 0 and use_triton:
            uvz = _corner_uvz(cam.detach(), faces, Ks.detach())
            boxes = _face_windows(uvz, B, F, W, H, near, margins)
            keys = _zbuffer_triton(uvz, boxes[0], B, F, W, H)
        elif F > 0:
            uvz = _corner_uvz(cam.detach(), faces, Ks.detach())
            boxes = _face_boxes(uvz, B, F, W, H, near, margins)
            keys, gid = _zbuffer(uvz, boxes[0], B, W, H)
        else:
            keys = torch.full((B * HW,), _KEY_EMPTY, dtype=torch.int64, device=device)
        pix = (keys < _KEY_COVERED_MAX).nonzero().squeeze(1)  # covered pixels, linear over [B, H, W]
        g = keys.index_select(0, pix) & 0xFFFFFFFF  # visible face, as b * F + f
        if gid is not None:
            g = gid.index_select(0, g)
        if B == 1:
            bi, fi, rem = None, g, pix
        else:
            bi = torch.div(pix, HW, rounding_mode="floor")
            fi = g - bi * F
            rem = pix - bi * HW
        face_ids = torch.full((B * HW,), -1, dtype=torch.int64, device=device).index_copy_(0, pix, fi)
        if HW < (1 << 24):  # exact in float32
            remf = rem.to(torch.float32)
            pyf = torch.floor((remf + 0.5) / W)
            pxf = remf - pyf * W
        else:
            pyf = torch.div(rem, W, rounding_mode="floor")
            pxf = (rem - pyf * W).to(dtype)
            pyf = pyf.to(dtype)
        uc = pxf.to(dtype) + 0.5
        vc = pyf.to(dtype) + 0.5
        # Corners of each covered pixel's visible face as columns of cam.reshape(B * V, 3).t(), corner-major.
        corner = faces.index_select(0, fi)
        if B > 1:
            corner += (bi * V)[:, None]
        corner = corner.t().reshape(-1)

    # Differentiable recompute of the visible surface: intersect each pixel's camera ray d = K^-1 [u+.5, v+.5, 1]
    # with the plane of its visible face. With unit normal n and area |e1 x e2|, the hit point P = t d has
    # t = (n . v0) / (n . d) and barycentrics b1 = (P - v0) . (e2 x n) / |e1 x e2|, b2 = (P - v0) . (n x e1) / |...|,
    # which are the perspective-correct ones. Everything is per covered pixel, in component-major [3, N] rows:
    # few kernels on GPUs, contiguous row arithmetic on CPUs.
    c = cam.reshape(B * V, 3).t().index_select(1, corner).view(3, 3, -1)  # [xyz, corner, N]
    v0 = c[:, 0]
    e1 = c[:, 1] - v0
    e2 = c[:, 2] - v0
    n = _cross(e1, e2)
    # Clamp before the sqrt: degenerate faces must get finite (zero) gradients, not 0 * inf = NaN.
    area = (n * n).sum(0, keepdim=True).clamp(min=torch.finfo(dtype).tiny).sqrt()
    n = n / area
    Kinv = torch.linalg.inv_ex(Ks).inverse.reshape(B, 9).t()  # inv_ex: no singularity check, no host sync
    if B > 1:
        Kinv = Kinv.index_select(1, bi)
    Kinv = Kinv.reshape(3, 3, -1)  # [row, col, 1 or N]
    d = torch.addcmul(torch.addcmul(Kinv[:, 2], Kinv[:, 0], uc), Kinv[:, 1], vc)  # [3, N]
    t = (n * v0).sum(0, keepdim=True) / (n * d).sum(0, keepdim=True)
    w = t * d - v0  # hit point relative to v0
    b12 = torch.cat([(w * _cross(e2, n)).sum(0, keepdim=True), (w * _cross(n, e1)).sum(0, keepdim=True)]) / area
    bary = torch.cat([1.0 - b12.sum(0, keepdim=True), b12])  # [3, N]
    vals = [t * d[2:], n, bary]  # depth, normals, barycentrics
    if vert_attrs is not None:
        A = vert_attrs.shape[-1]
        attr_corner = vert_attrs.to(device=device, dtype=dtype).reshape(B * V, A).t().index_select(1, corner)
        vals.append((bary * attr_corner.view(A, 3, -1)).sum(1))
    sizes = [v.shape[0] for v in vals]

    # Scatter all channels of the covered pixels into one zero [B, C, H, W] image with a single index_copy
    # (in place on a fresh buffer: autograd tracks it and no clone is made), then split it by channel.
    C = sum(sizes)
    tgt = pix if B == 1 else pix + bi * ((C - 1) * HW)
    idx = (tgt[None] + torch.arange(C, device=device)[:, None] * HW).reshape(-1)
    img = torch.zeros(B * C * HW, dtype=dtype, device=device)
    img = img.index_copy_(0, idx, torch.cat(vals).reshape(-1)).view(B, C, H, W)
    depth, normals, bary_img, *attrs_img = (part.contiguous() for part in img.split(sizes, 1))
    out = {
        "mask": (face_ids >= 0).to(dtype).view(B, 1, H, W),
        "depth": depth,
        "normals": normals,
        "face_ids": face_ids.view(B, H, W),
        "bary": bary_img,
    }
    if vert_attrs is not None:
        out["attrs"] = attrs_img[0]
    if soft and use_triton:
        out["soft_mask"] = _soft_mask_triton(cam, faces, Ks, boxes[1], W, H, sigma)
    elif soft:
        out["soft_mask"] = _soft_mask(cam, faces, Ks, boxes[1], W, H, sigma)
    return out


def _cross(a, b):
    """Cross product of component-major vectors [3, ...] x [3, ...] -> [3, ...]."""
    if a.device.type != "cpu":
        return torch.linalg.cross(a, b, dim=0)  # one kernel
    # On CPUs linalg.cross is several times slower than six contiguous row products.
    return torch.stack([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])
