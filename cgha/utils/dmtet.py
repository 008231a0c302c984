"""DMTet building blocks in pure PyTorch: a generated tetrahedral grid, its 1 -> 8 subdivision and batched,
differentiable marching tetrahedra (replaces kaolin and GHA's downloaded ``assets/tets_data.npz``).

**The grid.** ``tet_grid(bbox, resolution)`` fills an axis-aligned box with cubic cells, each split into six
tetrahedra around its main diagonal (the Kuhn / Freudenthal triangulation). Every cube uses the same diagonal
direction, so the split is invariant under translation and neighbouring cubes split their shared square along the
same diagonal: the grid is conforming (faces shared exactly, no gaps, no overlaps). All tetrahedra are stored
with positive signed volume, ``det[v1 - v0, v2 - v0, v3 - v0] > 0``.

``resolution`` is a DMTet-style *nominal* resolution: the longest side of the box gets ``ceil(resolution / 2)``
cubes, the other sides as many cubes of the same edge as needed to cover the box (at least one), centred on it,
so on those sides the grid may reach up to one cube beyond the box. The factor two matches the vertex budget
of DMTet's grids of the same name: DMTet's 128 grid has 277k vertices and 1.53M tetrahedra (NVlabs/nvdiffrec
issue #128); ours has 65^3 = 274,625 vertices and 6 * 64^3 = 1,572,864 tetrahedra in a cube, and on GHA's
``model_bbox`` [[-1.6, 1.6], [-1.7, 1.8], [-2.5, 1.0]] 60 x 65 x 65 = 253,500 vertices and 1,449,984 tetrahedra.
``subdivide_tets`` of a grid gives the grid of twice the resolution with the same spacing and centre (what
GHA's ``grid_res *= 2`` after ``subdivide`` expresses); it is identical up to numbering when every side's cube
count doubles, which holds on the longest side always and on GHA's box on all three (59 x 64 x 64 cubes at 128,
118 x 128 x 128 at 256: 1,980,279 vertices, 11,599,872 tetrahedra).

``grid_cell_size`` is the cube edge ``a``. GHA bounds the learned vertex offsets by ``tanh(.) / grid_res`` head
units (``1 / 128`` = 0.0078, about a seventh of the default edge of 0.0547); nvdiffrec's DMTet uses
``1 / resolution`` in a unit box, which on our grid of the same resolution is half an edge. Offsets below half
the smallest tetrahedron height, ``a / (2 sqrt 2)`` = 0.35 ``a``, can never invert a tetrahedron (GHA's bound is
well inside, half an edge is not); marching tetrahedra orients the faces of an inverted tetrahedron inward.

**Sign convention.** ``sdf < 0`` is inside, ``sdf >= 0`` outside: a vertex with ``sdf`` exactly 0 (or NaN) counts
as outside. GHA / kaolin mark ``sdf > 0`` as occupied (so with GHA's sphere pre-training, ``sdf = |x| - 1``, their
faces point inward); code ported from GHA must negate its SDF. Output faces are counter-clockwise seen from
outside: ``cross(v1 - v0, v2 - v0)`` points toward positive ``sdf`` (docs/conventions.md).

**Speed** at the default resolution 128 on GHA's box (1,449,984 tetrahedra; a radius-1 sphere gives 18,844
vertices and 37,684 faces), measured with torch 2.13 on one CPU thread of the shared development machine and
with torch 2.11 on the lent H200 (2026-11): ``tet_grid`` 0.1 s (CPU); ``marching_tetrahedra`` forward 50 ms and
backward 25 ms on one CPU thread, 14 ms / 11 ms on 16 CPU threads, 1.4 ms / 1.7 ms on the GPU (with 32 feature
channels); ``subdivide_tets`` of the whole grid 1.9 s on one CPU thread, 0.26 s on 16, 2 ms on the GPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from cgha.utils.atomic import atomic_output

__all__ = [
    "TET_GRID_VERSION",
    "MarchingTetsMesh",
    "cached_tet_grid",
    "grid_cell_size",
    "grid_shape",
    "marching_tetrahedra",
    "subdivide_tets",
    "tet_grid",
]

# Bump whenever the generated grid changes (vertex order, tetrahedron order or split); it is part of the cache
# key, so stale cache files are never reused.
TET_GRID_VERSION = 1

BBox = Union[Sequence[Sequence[float]], np.ndarray, torch.Tensor]

_REPO_ROOT = Path(__file__).resolve().parents[2]


def _cache_root() -> Path:
    """Where a relative cache folder lives: the repository root in a checkout (an editable install included), else
    ``$CGHA_CACHE_DIR`` or ``~/.cache/cgha`` (a wheel install must not write into site-packages)."""
    if (_REPO_ROOT / "pyproject.toml").is_file():
        return _REPO_ROOT
    return Path(os.environ.get("CGHA_CACHE_DIR", Path.home() / ".cache" / "cgha"))


# ----------------------------------------------------------------------------------------------------------
# The grid
# ----------------------------------------------------------------------------------------------------------

def _as_bbox(bbox: BBox) -> np.ndarray:
    """``[3, 2]`` float64 array of [low, high] per axis; raises ``ValueError`` on a malformed box."""
    if isinstance(bbox, torch.Tensor):
        bbox = bbox.detach().cpu().tolist()
    box = np.asarray(bbox, dtype=np.float64)
    if box.shape != (3, 2):
        raise ValueError(f"bbox must be [[x0, x1], [y0, y1], [z0, z1]], got shape {list(box.shape)}")
    if not np.all(np.isfinite(box)) or not np.all(box[:, 1] > box[:, 0]):
        raise ValueError(f"bbox must be finite with low < high on every axis, got {box.tolist()}")
    return box


def _check_resolution(resolution: int) -> int:
    if isinstance(resolution, bool) or int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    return int(resolution)


def grid_cell_size(bbox: BBox, resolution: int) -> float:
    """Edge length of the grid's cubes: the longest bbox side divided by ``ceil(resolution / 2)``."""
    box = _as_bbox(bbox)
    resolution = _check_resolution(resolution)
    return float((box[:, 1] - box[:, 0]).max() / math.ceil(resolution / 2))


def grid_shape(bbox: BBox, resolution: int) -> Tuple[int, int, int]:
    """Number of cubes along x, y and z: ``V = prod(n + 1)`` vertices and ``T = 6 * prod(n)`` tetrahedra."""
    box = _as_bbox(bbox)
    cell = grid_cell_size(box, resolution)
    # The relative slack keeps a side that is an exact multiple of the cell (up to float round-off) from
    # getting one extra cube.
    counts = np.ceil((box[:, 1] - box[:, 0]) / cell - 1e-9)
    return tuple(int(max(1, c)) for c in counts)


def _kuhn_tets() -> np.ndarray:
    """``[6, 4, 3]`` corner offsets (0/1) of the six tetrahedra of the unit cube, positively oriented.

    Tetrahedron ``p`` walks from corner (0,0,0) to (1,1,1) along the axes in the order of permutation ``p``:
    ``(q0, q1, q2, q3)``. Its signed volume is ``sign(p) / 6``, so odd walks are stored as ``(q2, q1, q0, q3)``.
    That swap keeps the vertex pairs {0, 2} and {1, 3} together, which ``subdivide_tets`` relies on to split
    every tetrahedron into 8 tetrahedra of the same (Kuhn) shape.
    """
    out = []
    for perm in ((0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (2, 1, 0), (1, 0, 2)):  # 3 even, then 3 odd
        walk = [np.zeros(3, dtype=np.int64)]
        for axis in perm:
            step = walk[-1].copy()
            step[axis] = 1
            walk.append(step)
        if np.linalg.det(np.stack(walk[1:]) - walk[0]) < 0:
            walk = [walk[2], walk[1], walk[0], walk[3]]
        out.append(np.stack(walk))
    return np.stack(out)


def _tet_grid_numpy(bbox: BBox, resolution: int) -> Tuple[np.ndarray, np.ndarray]:
    box = _as_bbox(bbox)
    cell = grid_cell_size(box, resolution)
    nx, ny, nz = grid_shape(box, resolution)
    counts = np.array([nx, ny, nz])
    origin = 0.5 * (box[:, 0] + box[:, 1]) - 0.5 * counts * cell  # centre the grid on the box

    # Vertex (i, j, k) has index (i * (ny + 1) + j) * (nz + 1) + k.
    axes = [origin[a] + cell * np.arange(counts[a] + 1, dtype=np.float64) for a in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    verts = grid.reshape(-1, 3).astype(np.float32)

    stride = np.array([(ny + 1) * (nz + 1), nz + 1, 1], dtype=np.int64)
    cube_ijk = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij"), -1)
    cube_base = cube_ijk.reshape(-1, 3).astype(np.int64) @ stride  # [C] index of each cube's min corner
    offsets = _kuhn_tets() @ stride  # [6, 4] index offsets of the six tetrahedra's corners
    tets = (cube_base[:, None, None] + offsets[None]).reshape(-1, 4)
    return verts, tets


def tet_grid(
    bbox: BBox, resolution: int, device: Optional[Union[str, torch.device]] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Conforming tetrahedral grid covering ``bbox`` (Kuhn split of cubic cells, see the module docstring).

    Args:
        bbox: ``[[x0, x1], [y0, y1], [z0, z1]]`` (list, array or tensor), canonical head space.
        resolution: nominal resolution; the longest side gets ``ceil(resolution / 2)`` cubes.
        device: where the tensors are created (default CPU).
    Returns:
        verts: ``[V, 3]`` float32, ``V = prod(grid_shape + 1)``; the grid is centred on the box.
        tets: ``[T, 4]`` int64 vertex indices, ``T = 6 * prod(grid_shape)``, all with positive signed volume.
            Tetrahedra are ordered cube by cube (6 per cube, cubes in x-major order).
    """
    verts, tets = _tet_grid_numpy(bbox, resolution)
    return torch.from_numpy(verts).to(device), torch.from_numpy(tets).to(device)


def _cache_key(box: np.ndarray, resolution: int) -> str:
    # repr-exact floats: two boxes share a file only if they are bit-identical.
    text = json.dumps({"bbox": box.tolist(), "resolution": resolution, "version": TET_GRID_VERSION})
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _load_cached(path: Path, box: np.ndarray, resolution: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """The arrays of a valid cache file, or None if it is missing, unreadable or does not match."""
    try:
        with np.load(path, allow_pickle=False) as data:
            verts, tets = data["verts"], data["tets"]
            meta = (data["bbox"], data["resolution"], data["version"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if (
        verts.dtype != np.float32 or verts.ndim != 2 or verts.shape[1] != 3
        or tets.dtype != np.int64 or tets.ndim != 2 or tets.shape[1] != 4
        or not np.array_equal(meta[0], box) or int(meta[1]) != resolution or int(meta[2]) != TET_GRID_VERSION
        or tets.size == 0 or tets.min() < 0 or tets.max() >= verts.shape[0]
    ):
        return None
    return verts, tets


def _save_atomic(path: Path, **arrays: np.ndarray) -> None:
    """Write an .npz next to ``path`` and rename it into place, so readers never see a partial file."""
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def cached_tet_grid(
    bbox: BBox,
    resolution: int,
    cache_dir: Union[str, os.PathLike] = "assets/cache",
    device: Optional[Union[str, torch.device]] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """``tet_grid`` through an on-disk cache.

    The file ``{cache_dir}/tet_grid_{key}.npz`` is keyed by a hash of (bbox, resolution, ``TET_GRID_VERSION``).
    It is read with ``allow_pickle=False`` and validated (keys, dtypes, shapes, index range, stored bbox and
    resolution); a missing, unreadable or mismatching file is regenerated and replaced atomically (temporary
    file + rename). A relative ``cache_dir`` is taken from the repository root (``_cache_root``), not the working
    directory.

    Returns:
        Same as ``tet_grid``: verts ``[V, 3]`` float32, tets ``[T, 4]`` int64, on ``device``.
    """
    box = _as_bbox(bbox)
    resolution = _check_resolution(resolution)
    cache_dir = Path(cache_dir)
    if not cache_dir.is_absolute():
        cache_dir = _cache_root() / cache_dir
    path = cache_dir / f"tet_grid_{_cache_key(box, resolution)}.npz"
    arrays = _load_cached(path, box, resolution) if path.exists() else None
    if arrays is None:
        arrays = _tet_grid_numpy(box, resolution)
        _save_atomic(
            path, verts=arrays[0], tets=arrays[1], bbox=box,
            resolution=np.int64(resolution), version=np.int64(TET_GRID_VERSION),
        )
    return torch.from_numpy(arrays[0]).to(device), torch.from_numpy(arrays[1]).to(device)


# ----------------------------------------------------------------------------------------------------------
# Subdivision
# ----------------------------------------------------------------------------------------------------------

# The six edges of a tetrahedron as (first, second) local vertex indices; edge e is the e-th column.
_EDGE_A = (0, 0, 0, 1, 1, 2)
_EDGE_B = (1, 2, 3, 2, 3, 3)

# Children of tetrahedron (0, 1, 2, 3) in local labels: 0-3 are its corners, 4 + e the midpoint of edge e,
# i.e. 4 = m01, 5 = m02, 6 = m03, 7 = m12, 8 = m13, 9 = m23. Four corner tetrahedra and four around the
# octahedron's diagonal m02-m13. All have the parent's orientation. On the Kuhn grid this is Freudenthal's
# subdivision: every child is again a Kuhn tetrahedron in the vertex order ``_kuhn_tets`` uses (up to a
# permutation that keeps the pairs {0, 2} and {1, 3}), so repeated subdivision gives the regular grid of
# twice the resolution each time.
_CHILDREN = (
    (0, 4, 5, 6),
    (4, 1, 7, 8),
    (5, 7, 2, 9),
    (6, 8, 9, 3),
    (4, 5, 6, 8),
    (5, 6, 8, 9),
    (8, 7, 5, 9),
    (7, 5, 4, 8),
)


def _edge_ends(tets: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[N, 6]`` first and second vertex of each tetrahedron edge."""
    ends = torch.tensor((_EDGE_A, _EDGE_B), dtype=torch.long, device=tets.device).reshape(-1)
    a, b = _take_columns(tets, ends).split(6, dim=1)
    return a, b


def _take_columns(x: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``x[:, columns]`` for a ``[N, C]`` tensor; ``gather`` is about twice as fast on CPU as advanced
    indexing for millions of rows."""
    return torch.gather(x, 1, columns.expand(x.shape[0], -1))


def _check_tets(tets: torch.Tensor) -> torch.Tensor:
    if tets.dim() != 2 or tets.shape[1] != 4:
        raise ValueError(f"tets must have shape [T, 4], got {list(tets.shape)}")
    if tets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"tets must be an integer tensor, got {tets.dtype}")
    return tets.long()


def subdivide_tets(
    verts: torch.Tensor, tets: torch.Tensor, features: Optional[torch.Tensor] = None
) -> Union[Tuple[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Split every tetrahedron into 8 at its edge midpoints (kaolin's ``subdivide_tetmesh`` semantics).

    Each edge gets one new vertex, shared by all tetrahedra around it, so a conforming mesh stays conforming.
    The inner octahedron is cut along the diagonal joining the midpoints of edges (0, 2) and (1, 3); children
    keep their parent's orientation. ``subdivide_tets(*tet_grid(box, r))`` is ``tet_grid(box, 2 r)`` up to
    vertex and tetrahedron numbering when the cube count of every side doubles (see the module docstring).

    Args:
        verts: ``[..., V, 3]`` vertex positions (any leading batch dimensions).
        tets: ``[T, 4]`` integer vertex indices.
        features: optional ``[..., V, F]`` per-vertex features, interpolated linearly like the positions.
    Returns:
        verts ``[..., V + E, 3]`` (the old vertices first, then one midpoint per unique edge, in increasing
        order of the edge's sorted (i, j) pair), tets ``[8 T, 4]`` int64 (children of tetrahedron ``t`` in
        rows ``8 t .. 8 t + 7``), and, if ``features`` was given, features ``[..., V + E, F]``.
    """
    if verts.dim() < 2 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape [..., V, 3], got {list(verts.shape)}")
    num_verts = verts.shape[-2]
    tets = _check_tets(tets).to(verts.device)
    if features is not None and (features.dim() < 2 or features.shape[-2] != num_verts):
        raise ValueError(f"features must have shape [..., {num_verts}, F], got {list(features.shape)}")

    with torch.no_grad():
        a, b = _edge_ends(tets)  # [T, 6] each
        keys = torch.minimum(a, b) * num_verts + torch.maximum(a, b)
        edge_keys, edge_of = torch.unique(keys.reshape(-1), return_inverse=True)
        lo, hi = edge_keys // num_verts, edge_keys % num_verts
        local = torch.cat([tets, num_verts + edge_of.reshape(-1, 6)], dim=1)  # [T, 10] in the local labels
        children = torch.tensor(_CHILDREN, dtype=torch.long, device=tets.device).reshape(-1)
        new_tets = _take_columns(local, children).reshape(-1, 4)

    def midpoints(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, 0.5 * (x.index_select(-2, lo) + x.index_select(-2, hi))], dim=-2)

    if features is None:
        return midpoints(verts), new_tets
    return midpoints(verts), new_tets, midpoints(features)


# ----------------------------------------------------------------------------------------------------------
# Marching tetrahedra
# ----------------------------------------------------------------------------------------------------------

def _triangle_table() -> Tuple[torch.Tensor, torch.Tensor]:
    """Triangles per inside/outside case of a positively oriented tetrahedron, derived rather than typed in.

    Case ``c`` has bit ``i`` set when local vertex ``i`` is inside. Returns ``table [16, 2, 3]`` (local edge
    indices into ``_EDGE_A/_EDGE_B``, unused slots 0) and ``count [16]`` (0, 1 or 2 triangles). Orientation
    is fixed on the reference tetrahedron with crossings at edge midpoints: the normal must point from the
    inside corners toward the outside ones. Any positively oriented tetrahedron, with crossings anywhere on its
    edges, is an orientation-preserving deformation of that, so the table holds for all of them.
    """
    ref = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    edge_id = {(a, b): e for e, (a, b) in enumerate(zip(_EDGE_A, _EDGE_B))}
    edge_id.update({(b, a): e for (a, b), e in list(edge_id.items())})
    table = np.zeros((16, 2, 3), dtype=np.int64)
    count = np.zeros(16, dtype=np.int64)
    for case in range(16):
        inside = [v for v in range(4) if case >> v & 1]
        outside = [v for v in range(4) if not case >> v & 1]
        if len(inside) in (1, 3):
            lone, others = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            tris = [[edge_id[lone, o] for o in others]]
        elif len(inside) == 2:
            (a, b), (c, d) = inside, outside
            # The four crossings form a cycle around the quad; cut it along one of its diagonals.
            quad = [edge_id[a, c], edge_id[a, d], edge_id[b, d], edge_id[b, c]]
            tris = [quad[:3], [quad[0], quad[2], quad[3]]]
        else:
            tris = []
        towards_outside = (ref[outside].mean(0) - ref[inside].mean(0)) if tris else None
        for slot, tri in enumerate(tris):
            p = [(ref[_EDGE_A[e]] + ref[_EDGE_B[e]]) / 2 for e in tri]
            if np.dot(np.cross(p[1] - p[0], p[2] - p[0]), towards_outside) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[case, slot] = tri
        count[case] = len(tris)
    return torch.from_numpy(table), torch.from_numpy(count)


_TRI_TABLE, _TRI_COUNT = _triangle_table()
_CORNER_BITS = torch.tensor([1, 2, 4, 8])


class MarchingTetsMesh(NamedTuple):
    """One extracted surface; unpacks as ``verts, faces, features``."""

    verts: torch.Tensor  # [M, 3]
    faces: torch.Tensor  # [K, 3] int64, counter-clockwise seen from outside
    features: Optional[torch.Tensor]  # [M, F] or None


def _march_one(
    verts: torch.Tensor,  # [V, 3]
    sdf: torch.Tensor,  # [V]
    tets: torch.Tensor,  # [T, 4] int64
    features: Optional[torch.Tensor],  # [V, F] or None
) -> MarchingTetsMesh:
    num_verts = verts.shape[0]
    device = verts.device
    with torch.no_grad():
        inside = (sdf < 0).to(torch.uint8)
        # The one pass over all T tetrahedra: read their four corner flags as one int32, which is 0 when all
        # are outside and 0x01010101 when all are inside (either byte order), to find the few that are cut.
        packed = inside.index_select(0, tets.reshape(-1)).view(torch.int32)  # [T]
        cut = torch.nonzero((packed != 0) & (packed != 0x01010101)).squeeze(1)
        cut_tets = tets.index_select(0, cut)  # [N, 4]
        corner = inside[cut_tets]  # [N, 4]
        case = (corner.long() * _CORNER_BITS.to(device)).sum(-1)  # [N] in 1..14
        corner = corner.bool()

        a, b = _edge_ends(cut_tets)  # [N, 6] edge endpoints
        corner_a, corner_b = _edge_ends(corner)
        crossing = corner_a != corner_b  # [N, 6]
        keys = (torch.minimum(a, b) * num_verts + torch.maximum(a, b))[crossing]
        # Each crossed edge is shared by several tetrahedra: one output vertex per unique edge keeps the
        # surface connected (watertight for a closed level set).
        edge_keys, vertex_of = torch.unique(keys, return_inverse=True)
        local = torch.zeros_like(a)
        local[crossing] = vertex_of  # [N, 6] output vertex of each crossed edge; others never read

        slots = _TRI_TABLE.to(device)[case]  # [N, 2, 3] local edge ids
        faces = torch.gather(local, 1, slots.reshape(-1, 6)).reshape(-1, 2, 3)
        used = torch.arange(2, device=device)[None] < _TRI_COUNT.to(device)[case][:, None]  # [N, 2]
        faces = faces[used]  # [K, 3]
        lo, hi = edge_keys // num_verts, edge_keys % num_verts

    # index_select, not indexing: a grid vertex ends several crossed edges, and the backward of `x[lo]` is an
    # index_put_ with accumulate, which multi-threaded CPUs run with unordered atomic float adds from 32768
    # elements on (the features reach that), so two runs of one config drifted apart; index_select's backward
    # (index_add_) adds in a fixed order.
    s_lo, s_hi = sdf.index_select(0, lo), sdf.index_select(0, hi)
    # Linear zero crossing. The signs on a crossed edge differ strictly (one < 0, the other >= 0), so the
    # denominator is never 0; written symmetrically, it does not matter which end is inside.
    w = (s_lo / (s_lo - s_hi)).unsqueeze(-1)  # [M, 1]
    v_lo = verts.index_select(0, lo)
    out_verts = v_lo + w * (verts.index_select(0, hi) - v_lo)
    out_features = None
    if features is not None:
        f_lo = features.index_select(0, lo)
        out_features = f_lo + w.to(features.dtype) * (features.index_select(0, hi) - f_lo)
    return MarchingTetsMesh(out_verts, faces, out_features)


def marching_tetrahedra(
    verts: torch.Tensor,
    tets: torch.Tensor,
    sdf: torch.Tensor,
    features: Optional[torch.Tensor] = None,
) -> List[MarchingTetsMesh]:
    """Triangle mesh of the zero level set of an SDF sampled on a tetrahedral grid.

    Vertices lie at the linear zero crossing of each edge whose ends differ in sign (inside = ``sdf < 0``,
    ``sdf == 0`` counts as outside), one vertex per edge whatever the number of tetrahedra sharing it, so a
    closed level set gives a watertight, consistently oriented mesh with faces counter-clockwise seen from
    outside (normals toward positive ``sdf``). Requires positively oriented tetrahedra (``tet_grid`` and
    ``subdivide_tets`` produce them; learned offsets must not invert them). Differentiable with respect to
    ``verts``, ``sdf`` and ``features``. A vertex with ``sdf == 0`` next to an inside vertex gives an output
    vertex exactly on it (several output vertices may then coincide, and some faces have zero area).

    Args:
        verts: ``[B, V, 3]`` (possibly deformed) grid vertex positions.
        tets: ``[T, 4]`` integer vertex indices, shared by the batch.
        sdf: ``[B, V]`` (or GHA's ``[B, V, 1]``) signed distance at the grid vertices.
        features: optional ``[B, V, F]`` per-vertex features, interpolated like the positions.
    Returns:
        A list of ``B`` ``MarchingTetsMesh(verts [M, 3], faces [K, 3] int64, features [M, F] or None)``.
        Without any crossing, ``M = K = 0`` (tensors still of the right dtype, width and device). Vertices
        come in increasing order of their edge's sorted (i, j) grid vertex pair.
    """
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"verts must have shape [B, V, 3], got {list(verts.shape)}")
    batch, num_verts = verts.shape[:2]
    if sdf.dim() == 3 and sdf.shape[-1] == 1:
        sdf = sdf.squeeze(-1)
    if tuple(sdf.shape) != (batch, num_verts):
        raise ValueError(f"sdf must have shape [{batch}, {num_verts}] (or [B, V, 1]), got {list(sdf.shape)}")
    if features is not None and (features.dim() != 3 or tuple(features.shape[:2]) != (batch, num_verts)):
        raise ValueError(f"features must have shape [{batch}, {num_verts}, F], got {list(features.shape)}")
    tets = _check_tets(tets).to(verts.device)
    return [
        _march_one(verts[i], sdf[i], tets, None if features is None else features[i]) for i in range(batch)
    ]
