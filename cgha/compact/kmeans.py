"""Functional k-means (Lloyd) in pure torch, on whatever device the inputs live on.

Distances are computed in row chunks through the expansion |x - c|^2 = |x|^2 - 2 x.c + |c|^2, so one matmul per
chunk does the work and memory stays bounded by `chunk_size * K` instead of `N * K`. Everything is seeded through
an explicit CPU `torch.Generator`, so results are reproducible and do not depend on the global RNG state.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

DEFAULT_CHUNK_SIZE = 16384


def _work_dtype(x: torch.Tensor) -> torch.dtype:
    # Half-precision sums over many members lose too much accuracy; accumulate in at least fp32.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def assign(x: torch.Tensor, centers: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """Index of the nearest centre of every row.

    x [N, D], centers [K, D] (same device). Returns idx [N] int64. Ties go to the lowest centre index.
    """
    if x.ndim != 2 or centers.ndim != 2 or x.shape[1] != centers.shape[1]:
        raise ValueError(f"assign needs x [N, D] and centers [K, D], got {list(x.shape)} and {list(centers.shape)}")
    if centers.shape[0] == 0:
        raise ValueError("assign needs at least one centre")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    dtype = _work_dtype(x)
    c = centers.to(dtype)
    c_sq = (c * c).sum(1)  # [K]
    out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        chunk = x[start:start + chunk_size].to(dtype)
        # |x|^2 is constant per row and does not change the argmin, so it is left out.
        dist = torch.addmm(c_sq[None, :], chunk, c.t(), beta=1.0, alpha=-2.0)  # [chunk, K]
        out[start:start + chunk.shape[0]] = dist.argmin(1)
    return out


class SegmentPlan(NamedTuple):
    """How the rows of one index vector group into clusters (see :func:`segment_plan`)."""

    counts: torch.Tensor  # [K] int64 cluster sizes
    order: Optional[torch.Tensor]  # [N] int64 rows sorted by cluster (stable), GPUs only
    ends: Optional[torch.Tensor]  # [K] int64 end of each cluster's run in `order`, GPUs only


def segment_plan(idx: torch.Tensor, num_clusters: int) -> SegmentPlan:
    """Cluster sizes of idx [N] (int64 in [0, K)) and, on GPUs, the sorted order that :func:`cluster_means` sums
    along. It only depends on the index, so a caller whose index changes rarely can keep it (one sort and one
    host synchronisation, in ``bincount``, saved per call)."""
    counts = torch.bincount(idx, minlength=num_clusters)
    if idx.device.type == "cpu":
        return SegmentPlan(counts, None, None)
    return SegmentPlan(counts, torch.argsort(idx, stable=True), torch.cumsum(counts, 0))


def cluster_means(x: torch.Tensor, idx: torch.Tensor, num_clusters: int,
                  plan: Optional[SegmentPlan] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and size of every cluster.

    x [N, D], idx [N] int64 in [0, K), plan: ``segment_plan(idx, K)`` if the caller keeps one. Returns means [K, D]
    (fp32, or fp64 for fp64 input; rows of empty clusters are 0) and counts [K] int64.
    """
    dtype = _work_dtype(x)
    counts, order, ends = plan if plan is not None else segment_plan(idx, num_clusters)
    if x.device.type == "cpu":
        sums = torch.zeros(num_clusters, x.shape[1], dtype=dtype, device=x.device).index_add_(0, idx, x.to(dtype))
    else:
        # index_add_ on GPUs adds with atomics in a varying order, so results would differ between runs; a sort
        # plus a float64 prefix sum gives segment sums that are deterministic (and accurate enough: the
        # differences of prefix sums lose ~1e-16 of the running total). The scan runs along the contiguous last
        # axis of [D, N], because a scan along dim 0 of [N, D] measured ~50x slower on an H200.
        prefix = torch.cumsum(x.index_select(0, order).t().to(torch.float64).contiguous(), 1)
        prefix = torch.cat([prefix.new_zeros(x.shape[1], 1), prefix], 1)  # [D, N + 1]
        sums = (prefix[:, ends] - prefix[:, ends - counts]).t().to(dtype)
    means = sums / counts.clamp(min=1).to(dtype)[:, None]
    return means, counts


def update(x: torch.Tensor, idx: torch.Tensor, num_clusters: int, centers: torch.Tensor,
           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One Lloyd update: every centre becomes the mean of its members.

    x [N, D], idx [N] int64 (from `assign`), centers [K, D] (the current ones; only their dtype is used).
    An empty cluster is re-seeded with a data point: by default the points farthest from their own (new) centre,
    one per empty cluster, in order of decreasing distance (deterministic); with a `generator`, random distinct
    points drawn from it instead. When there are fewer distinct points than clusters some centres coincide, which
    is the best any codebook can do for such data. Returns new centers [K, D] in centers' dtype.
    """
    if centers.shape[0] != num_clusters:
        raise ValueError(f"centers has {centers.shape[0]} rows, expected {num_clusters}")
    means, counts = cluster_means(x, idx, num_clusters)
    empty = torch.nonzero(counts == 0)[:, 0]
    if empty.numel() > 0:
        count = min(empty.numel(), x.shape[0])
        if generator is None:
            dist = ((x.to(means.dtype) - means[idx]) ** 2).sum(1)
            # A stable sort breaks ties by point index, so the choice does not depend on the device's sort.
            order = torch.sort(dist, descending=True, stable=True).indices
            picks = order[:count]
        else:
            picks = torch.randperm(x.shape[0], generator=generator)[:count].to(x.device)
        means[empty[:count]] = x[picks].to(means.dtype)
    return means.to(centers.dtype)


def init_centers(x: torch.Tensor, num_clusters: int, generator: torch.Generator,
                 method: str = "kmeans++", sample: Optional[int] = None) -> torch.Tensor:
    """Seeded initial centres.

    x [N, D], K <= N. `method`: 'random' picks K distinct rows; 'kmeans++' draws each next centre with probability
    proportional to its squared distance to the nearest chosen one (the uniform draws come from the CPU
    `generator`, the sampling itself runs on x's device without host syncs), from a random subset of
    max(sample, K) rows when `sample` is given. Returns centers [K, D] in x's dtype.
    """
    n = x.shape[0]
    if not 1 <= num_clusters <= n:
        raise ValueError(f"need 1 <= K <= N, got K={num_clusters}, N={n}")
    if method == "random":
        return x[torch.randperm(n, generator=generator)[:num_clusters].to(x.device)].clone()
    if method != "kmeans++":
        raise ValueError(f"unknown k-means init '{method}', expected 'random' or 'kmeans++'")
    if sample is not None and sample < n:
        # "k-means++ light": seed from a random subset; its cost is K * sample * D instead of K * N * D.
        rows = torch.randperm(n, generator=generator)[:max(sample, num_clusters)].to(x.device)
        return init_centers(x[rows], num_clusters, generator, method)
    dtype = _work_dtype(x)
    xw = x.to(dtype)
    first = int(torch.randint(n, (1,), generator=generator))
    uniform = torch.rand(num_clusters, generator=generator, dtype=torch.float64).to(x.device)
    chosen = torch.empty(num_clusters, dtype=torch.int64, device=x.device)
    chosen[0] = first
    x_sq = (xw * xw).sum(1)  # [N]
    # |x - c|^2 through a matrix-vector product: no [N, D] temporary per step (the loop runs K times).
    min_dist = (x_sq - 2.0 * (xw @ xw[first]) + x_sq[first]).clamp(min=0.0)
    min_dist[first] = 0.0
    for k in range(1, num_clusters):
        cumulative = torch.cumsum(min_dist.double(), 0)
        total = cumulative[-1]
        # right=True skips zero-weight points (already chosen ones); all-zero weights (duplicates only) fall back
        # to a uniform pick.
        weighted = torch.searchsorted(cumulative, (uniform[k] * total)[None], right=True)[0].clamp(max=n - 1)
        uniform_pick = (uniform[k] * n).long().clamp(max=n - 1)
        pick = torch.where(total > 0, weighted, uniform_pick)
        chosen[k] = pick
        center = xw.index_select(0, pick[None])[0]
        min_dist = torch.minimum(min_dist, (x_sq - 2.0 * (xw @ center) + x_sq[pick]).clamp(min=0.0))
        min_dist[pick] = 0.0  # exact zero at the chosen point, whatever the rounding of the expansion
    return x[chosen].clone()


def kmeans(x: torch.Tensor, num_clusters: int, iters: int, generator: Optional[torch.Generator] = None,
           chunk_size: int = DEFAULT_CHUNK_SIZE, init: str = "kmeans++",
           init_sample: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Seeded k-means: `init` centres, then `iters` rounds of assign + update, then a final assignment.

    x [N, D] (K is clamped to N). generator: CPU generator for init (default: seed 0). init_sample: rows the
    k-means++ seeding looks at (default max(16 K, 4096); the Lloyd iterations always use all rows).
    Returns centers [K, D] (x's dtype) and idx [N] int64, consistent with each other (idx = assign(x, centers)).
    """
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"kmeans needs x [N, D] with N >= 1, got {list(x.shape)}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    k = min(num_clusters, x.shape[0])
    sample = max(16 * k, 4096) if init_sample is None else init_sample
    centers = init_centers(x, k, generator, init, sample)
    for _ in range(iters):
        idx = assign(x, centers, chunk_size)
        centers = update(x, idx, k, centers)
    return centers, assign(x, centers, chunk_size)
