"""Exact k-nearest neighbours in pure PyTorch (replaces pytorch3d's ``knn_points`` and simple-knn's ``distCUDA2``).

The search is brute force over blocks: a block of ``chunk_size`` queries against a block of
``point_chunk_size`` points at a time, so peak memory is ``chunk_size * point_chunk_size`` distances whatever
the number of points, and a running top-k is merged across point blocks. Candidate selection uses the
matmul expansion ``|q|^2 - 2 q.p + |p|^2`` (fast on GPU and CPU); the returned distances are then recomputed
exactly as ``|q - p|^2`` for the selected neighbours, so they are accurate and differentiable with respect to
both ``query`` and ``points``. Coordinates are centred on the points' mean first to limit the cancellation of
the expansion when the cloud sits far from the origin.
"""

from __future__ import annotations

import torch

__all__ = ["knn", "mean_distance_to_nearest", "mean_sq_distance_to_3nn", "nearest_sq_distance"]

DISTANCE_BLOCK = 1 << 25  # distances per block (128 MiB in float32)


def _check_points(points: torch.Tensor, name: str) -> None:
    if points.dim() != 2:
        raise ValueError(f"{name} must have shape [N, D], got {list(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {points.dtype}")


@torch.no_grad()
def _select_neighbours(
    query: torch.Tensor,  # [M, D]
    points: torch.Tensor,  # [N, D]
    k: int,
    exclude_self_period: int | None,
    chunk_size: int,
    point_chunk_size: int,
) -> torch.Tensor:
    """Indices ``[M, k]`` of the k nearest points of each query row (approximate distances, exact choice
    up to float round-off ties). With ``exclude_self_period = N``, query row ``r`` never picks point
    ``r % N``."""
    centre = points.mean(dim=0, keepdim=True)
    query = query - centre
    points = points - centre
    points_sq = (points * points).sum(-1)  # [N]
    num_query, num_points = query.shape[0], points.shape[0]
    inf = torch.tensor(float("inf"), dtype=query.dtype, device=query.device)
    out = torch.empty(num_query, k, dtype=torch.long, device=query.device)
    for m0 in range(0, num_query, chunk_size):
        q = query[m0:m0 + chunk_size]  # [c, D]
        q_sq = (q * q).sum(-1, keepdim=True)  # [c, 1]
        if exclude_self_period is not None:
            self_col = (torch.arange(m0, m0 + q.shape[0], device=query.device) % exclude_self_period)[:, None]
        best_d = best_i = None
        for n0 in range(0, num_points, point_chunk_size):
            p = points[n0:n0 + point_chunk_size]
            d = (q_sq - 2.0 * (q @ p.T) + points_sq[n0:n0 + point_chunk_size]).clamp_min_(0.0)  # [c, n]
            cols = torch.arange(n0, n0 + p.shape[0], device=query.device)
            if exclude_self_period is not None:
                d = torch.where(self_col == cols[None, :], inf, d)
            d, i = _smallest(d, min(k, d.shape[1]))
            i = cols[i]
            if best_d is not None:
                d = torch.cat([best_d, d], dim=1)
                i = torch.cat([best_i, i], dim=1)
                d, j = _smallest(d, min(k, d.shape[1]))
                i = torch.gather(i, 1, j)
            best_d, best_i = d, i
        out[m0:m0 + q.shape[0]] = best_i
    return out


def _smallest(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k smallest entries of each row of ``d`` [c, n] and their columns, unsorted: ([c, k], [c, k])."""
    if k == 1:
        # A min-reduction: several times faster than topk on GPUs (the Gaussian head's landmark search each step).
        return d.min(dim=1, keepdim=True)
    return torch.topk(d, k, dim=1, largest=False, sorted=False)


def knn(
    query: torch.Tensor,
    points: torch.Tensor,
    k: int,
    chunk_size: int | None = None,
    point_chunk_size: int = 32768,
    exclude_self: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k nearest neighbours (Euclidean) of each query among ``points``.

    Args:
        query: ``[..., M, D]`` query points; leading dims are flattened, all rows search the same ``points``.
        points: ``[N, D]`` reference points (same dtype and device as ``query``).
        k: number of neighbours, ``1 <= k <= N`` (``k <= N - 1`` with ``exclude_self``).
        chunk_size: query rows processed per block; None picks as many as keep a block within
            ``DISTANCE_BLOCK`` distances (one block for 100k queries against a few hundred landmarks, so the
            per-step landmark distances of the Gaussian head cost one kernel, not a Python loop).
        point_chunk_size: reference points processed per block; peak memory is about
            ``chunk_size * point_chunk_size`` distances.
        exclude_self: the queries are the points themselves (``query.shape[-2:] == points.shape``):
            query ``i`` does not return point ``i``. Exclusion is by index, so an exact duplicate of a point
            is still returned at distance 0 (as simple-knn does).

    Returns:
        ``(dists_sq, idx)``: ``dists_sq [..., M, k]`` squared distances in ascending order (differentiable
        with respect to ``query`` and ``points``) and ``idx [..., M, k]`` int64 indices into ``points``.
    """
    _check_points(points, "points")
    if query.dim() < 2 or query.shape[-1] != points.shape[-1]:
        raise ValueError(
            f"query must have shape [..., M, {points.shape[-1]}] to match points {list(points.shape)}, "
            f"got {list(query.shape)}"
        )
    if query.dtype != points.dtype or query.device != points.device:
        raise ValueError(
            f"query ({query.dtype}, {query.device}) and points ({points.dtype}, {points.device}) must share "
            "dtype and device"
        )
    if chunk_size is None:
        chunk_size = max(1024, DISTANCE_BLOCK // min(points.shape[0], point_chunk_size))
    if chunk_size < 1 or point_chunk_size < 1:
        raise ValueError(f"chunk sizes must be positive, got {chunk_size} and {point_chunk_size}")
    num_points = points.shape[0]
    available = num_points - 1 if exclude_self else num_points
    if not isinstance(k, int) or k < 1 or k > available:
        self_note = " excluding each point itself" if exclude_self else ""
        raise ValueError(f"k must be an integer in [1, {available}] for {num_points} points{self_note}, got {k}")
    if exclude_self and tuple(query.shape[-2:]) != tuple(points.shape):
        raise ValueError(
            f"exclude_self needs the queries to be the points: query [..., {num_points}, "
            f"{points.shape[-1]}], got {list(query.shape)}"
        )

    lead = query.shape[:-2]
    flat = query.reshape(-1, query.shape[-1])  # [B*M, D]
    idx = _select_neighbours(
        flat.detach(), points.detach(), k, num_points if exclude_self else None, chunk_size, point_chunk_size
    )
    # Exact distances of the chosen neighbours, then a final sort (selection order is unsorted).
    # index_select, not points[idx]: the backward of indexing adds the gradients of a point chosen by several
    # queries with unordered atomics on multi-threaded CPUs (large inputs), so runs would differ in the last bits.
    neighbours = points.index_select(0, idx.reshape(-1)).view(*idx.shape, points.shape[-1])
    diff = flat[:, None, :] - neighbours  # [B*M, k, D]
    dists_sq = (diff * diff).sum(-1)
    dists_sq, order = torch.sort(dists_sq, dim=1, stable=True)
    idx = torch.gather(idx, 1, order)
    out_shape = lead + (query.shape[-2], k)
    return dists_sq.reshape(out_shape), idx.reshape(out_shape)


def mean_sq_distance_to_3nn(points: torch.Tensor, **knn_kwargs) -> torch.Tensor:
    """Drop-in for simple-knn's ``distCUDA2``: mean *squared* distance to the 3 nearest other points.

    Each point excludes itself (by index; duplicates count, at distance 0), exactly as ``distCUDA2`` does.
    3D Gaussian Splatting (and GHA) turn it into the initial isotropic scale as
    ``scale = sqrt(clamp_min(mean_sq_distance_to_3nn(xyz), 1e-7))``, i.e. the clamp is on the squared value.

    Args:
        points: ``[N, 3]`` with ``N >= 4``.
        **knn_kwargs: ``chunk_size`` / ``point_chunk_size`` forwarded to :func:`knn`.
    Returns:
        ``[N]`` same dtype as ``points``.
    """
    _check_points(points, "points")
    if points.shape[1] != 3:
        raise ValueError(f"points must have shape [N, 3], got {list(points.shape)}")
    if points.shape[0] < 4:
        raise ValueError(f"need at least 4 points to find 3 neighbours of each, got {points.shape[0]}")
    dists_sq, _ = knn(points, points, 3, exclude_self=True, **knn_kwargs)
    return dists_sq.mean(dim=-1)


def mean_distance_to_nearest(points: torch.Tensor, k: int = 3, **knn_kwargs) -> torch.Tensor:
    """Mean Euclidean (not squared) distance from each point to its ``k`` nearest other points.

    Note the difference from :func:`mean_sq_distance_to_3nn` (the ``distCUDA2`` semantics): this averages
    distances, that one averages squared distances.

    Args:
        points: ``[N, D]`` with ``N > k``.
        k: number of neighbours (self excluded by index).
        **knn_kwargs: ``chunk_size`` / ``point_chunk_size`` forwarded to :func:`knn`.
    Returns:
        ``[N]`` same dtype as ``points``.
    """
    _check_points(points, "points")
    if points.shape[0] <= k:
        raise ValueError(f"need more than k={k} points to find {k} neighbours of each, got {points.shape[0]}")
    dists_sq, _ = knn(points, points, k, exclude_self=True, **knn_kwargs)
    # The clamp keeps sqrt's gradient finite for duplicate points (distance exactly 0).
    return dists_sq.clamp_min(torch.finfo(dists_sq.dtype).tiny).sqrt().mean(dim=-1)


def nearest_sq_distance(query: torch.Tensor, points: torch.Tensor, block_elements: int = 1 << 26) -> torch.Tensor:
    """Squared Euclidean distance from each query row to its nearest point, for a few points (e.g. landmarks).

    Exact (from the differences, not the matmul expansion) and a handful of kernels: all query-point differences
    of a block of query rows at once, blocks of at most ``block_elements`` difference components.

    Args:
        query: ``[M, D]``.
        points: ``[K, D]`` with ``K >= 1``, same dtype and device.
    Returns:
        ``[M]`` (differentiable with respect to both).
    """
    _check_points(query, "query")
    _check_points(points, "points")
    if points.shape[0] < 1 or query.shape[1] != points.shape[1]:
        raise ValueError(f"need points [K >= 1, {query.shape[1]}] for query {list(query.shape)}, "
                         f"got {list(points.shape)}")
    rows = max(1, block_elements // points.numel())
    blocks = [torch.linalg.vector_norm(block[:, None, :] - points[None], dim=-1).amin(1)
              for block in query.split(rows)]
    nearest = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
    return nearest.square()
