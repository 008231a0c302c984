"""Tetrahedral grid, subdivision and marching tetrahedra (cgha/utils/dmtet.py).

Speed sanity, not asserted (torch 2.13, one CPU thread of the shared development machine): at the default
resolution 128 on GHA's bbox (253,500 vertices, 1,449,984 tetrahedra), ``tet_grid`` takes about 0.1 s,
``marching_tetrahedra`` of a radius-1 sphere (18,844 vertices, 37,684 faces) about 50 ms forward and 25 ms
backward, ``subdivide_tets`` of the whole grid about 1.9 s. On the lent H200 (torch 2.11): 1.4 ms forward and
1.7 ms backward with 32 feature channels, subdivision 2 ms.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import cgha.utils.dmtet as dmtet
from cgha.utils.dmtet import (
    cached_tet_grid,
    grid_cell_size,
    grid_shape,
    marching_tetrahedra,
    subdivide_tets,
    tet_grid,
)

GHA_BBOX = [[-1.6, 1.6], [-1.7, 1.8], [-2.5, 1.0]]
# Sides 2, 1.25 and 1.5: whole numbers of cubes of edge 0.25 at resolution 16, so the grid is exactly the box.
EXACT_BBOX = [[-1.0, 1.0], [-0.5, 0.75], [0.0, 1.5]]


def _signed_volumes(verts, tets):
    p = verts.double()[tets]  # [T, 4, 3]
    return torch.linalg.det(p[:, 1:] - p[:, :1]) / 6.0


def _outward_faces(tets):
    """``[4 T, 3]`` the faces of positively oriented tetrahedra, each counter-clockwise seen from outside."""
    return tets[:, [[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]]].reshape(-1, 3)


def _rotate_min_first(faces):
    """Cyclic rotation of each face that puts its smallest index first (keeps the orientation)."""
    shift = faces.argmin(dim=1, keepdim=True)
    cols = (shift + torch.arange(3)) % 3
    return torch.gather(faces, 1, cols)


def _mesh_stats(verts, faces):
    p = verts.double()[faces]  # [K, 3, 3]
    cross = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    area = 0.5 * cross.norm(dim=1).sum()
    volume = (p[:, 0] * cross).sum() / 6.0  # divergence theorem: positive for outward faces
    return area.item(), volume.item(), cross, p.mean(dim=1)


def _sphere_sdf(verts, radius=1.0, centre=(0.0, 0.0, 0.0)):
    return (verts - torch.tensor(centre, dtype=verts.dtype)).norm(dim=-1) - radius


# ------------------------------------------------------------------------------------------------ grid

def test_grid_counts_on_gha_bbox_and_coverage():
    verts, tets = tet_grid(GHA_BBOX, 128)
    assert grid_shape(GHA_BBOX, 128) == (59, 64, 64)
    assert verts.shape == (60 * 65 * 65, 3) == (253_500, 3) and verts.dtype == torch.float32
    assert tets.shape == (6 * 59 * 64 * 64, 4) and tets.dtype == torch.int64
    cell = grid_cell_size(GHA_BBOX, 128)
    assert cell == pytest.approx(3.5 / 64)
    box = torch.tensor(GHA_BBOX)
    low, high = verts.min(0).values, verts.max(0).values
    assert (low <= box[:, 0] + 1e-6).all() and (high >= box[:, 1] - 1e-6).all()  # covers the box
    assert ((box[:, 0] - low) < cell).all() and ((high - box[:, 1]) < cell).all()  # by less than a cube
    torch.testing.assert_close((low + high) / 2, box.mean(1))  # centred
    assert tets.min() == 0 and tets.max() == verts.shape[0] - 1


def test_grid_other_bbox_counts_and_odd_resolution():
    bbox = [[-1.3, 1.3], [-1.8, 1.45], [-1.45, 1.5]]
    assert grid_shape(bbox, 128) == (52, 64, 59)
    verts, tets = tet_grid(bbox, 128)
    assert verts.shape[0] == 53 * 65 * 60 == 206_700 and tets.shape[0] == 6 * 52 * 64 * 59 == 1_178_112
    # Odd resolutions round up: the longest side always gets exactly ceil(r / 2) cubes.
    assert grid_shape(EXACT_BBOX, 15) == (8, 5, 6)
    assert grid_cell_size(EXACT_BBOX, 15) == pytest.approx(0.25)
    assert grid_shape([[0, 1], [0, 0.01], [0, 1]], 4) == (2, 1, 2)  # at least one cube per side


def test_grid_positive_volumes_sum_to_box_volume():
    verts, tets = tet_grid(EXACT_BBOX, 16)
    assert grid_shape(EXACT_BBOX, 16) == (8, 5, 6)
    vol = _signed_volumes(verts, tets)
    assert (vol > 0).all()
    # Each tetrahedron is a sixth of a cube; positive volumes summing to the box volume means no overlap
    # and no gap.
    torch.testing.assert_close(vol, torch.full_like(vol, 0.25**3 / 6))
    assert vol.sum().item() == pytest.approx(2.0 * 1.25 * 1.5, rel=1e-12)
    # On GHA's box the grid overhangs in x: its volume is that of the covered grid box.
    verts, tets = tet_grid(GHA_BBOX, 32)
    nx, ny, nz = grid_shape(GHA_BBOX, 32)
    vol = _signed_volumes(verts, tets)
    assert (vol > 0).all()
    assert vol.sum().item() == pytest.approx(nx * ny * nz * grid_cell_size(GHA_BBOX, 32) ** 3, rel=1e-9)


def _check_conforming(verts, tets):
    box_low, box_high = verts.double().min(0).values, verts.double().max(0).values
    faces = _outward_faces(tets)
    keys = faces.sort(dim=1).values
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    per_face = counts[inverse]
    assert per_face.max() == 2
    # A face shared by two tetrahedra must appear once in each orientation: oriented faces are all distinct.
    oriented = _rotate_min_first(faces)
    assert torch.unique(oriented, dim=0).shape[0] == faces.shape[0]
    # Faces seen once are on the boundary of the grid's box.
    boundary = verts.double()[faces[per_face == 1]]  # [Fb, 3, 3]
    on_plane = ((boundary - box_low).abs() < 1e-6).all(1) | ((boundary - box_high).abs() < 1e-6).all(1)
    assert on_plane.any(1).all()
    return int((per_face == 1).sum())


def test_grid_is_conforming():
    verts, tets = tet_grid(EXACT_BBOX, 16)
    nx, ny, nz = grid_shape(EXACT_BBOX, 16)
    num_boundary = _check_conforming(verts, tets)
    assert num_boundary == 2 * 2 * (nx * ny + ny * nz + nx * nz)  # two triangles per boundary square


def test_grid_device_argument():
    verts, tets = tet_grid(EXACT_BBOX, 4, device="cpu")
    assert verts.device.type == "cpu" and tets.device.type == "cpu"


@pytest.mark.parametrize("bbox", [[[0, 1], [0, 1]], [[0, 1], [1, 0], [0, 1]], [[0, 1], [0, 1], [0, float("nan")]]])
def test_grid_rejects_bad_bbox(bbox):
    with pytest.raises(ValueError):
        tet_grid(bbox, 8)


@pytest.mark.parametrize("resolution", [0, -2, 2.5, True])
def test_grid_rejects_bad_resolution(resolution):
    with pytest.raises(ValueError):
        tet_grid(EXACT_BBOX, resolution)


# ------------------------------------------------------------------------------------------------ cache

def test_cache_round_trip_and_corruption(tmp_path, monkeypatch):
    verts, tets = cached_tet_grid(EXACT_BBOX, 8, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left behind
    ref_verts, ref_tets = tet_grid(EXACT_BBOX, 8)
    assert torch.equal(verts, ref_verts) and torch.equal(tets, ref_tets)

    # The second call reads the file: generating would fail.
    real_generate = dmtet._tet_grid_numpy

    def refuse(*args):
        raise AssertionError("regenerated although the cache file is valid")

    monkeypatch.setattr(dmtet, "_tet_grid_numpy", refuse)
    verts2, tets2 = cached_tet_grid(EXACT_BBOX, 8, cache_dir=tmp_path)
    assert torch.equal(verts2, ref_verts) and torch.equal(tets2, ref_tets)
    monkeypatch.setattr(dmtet, "_tet_grid_numpy", real_generate)

    # Garbage, a truncated file and a valid .npz with wrong content are all regenerated.
    path = files[0]
    good = path.read_bytes()
    for bad in (b"not a zip file", good[: len(good) // 2]):
        path.write_bytes(bad)
        verts3, tets3 = cached_tet_grid(EXACT_BBOX, 8, cache_dir=tmp_path)
        assert torch.equal(verts3, ref_verts) and torch.equal(tets3, ref_tets)
        assert path.read_bytes() == good
    np.savez(path, verts=np.zeros((4, 3), np.float32), tets=np.array([[0, 1, 2, 9]]))
    verts4, _ = cached_tet_grid(EXACT_BBOX, 8, cache_dir=tmp_path)
    assert torch.equal(verts4, ref_verts)
    assert path.read_bytes() == good

    # Another resolution or box gets its own file.
    cached_tet_grid(EXACT_BBOX, 10, cache_dir=tmp_path)
    cached_tet_grid(GHA_BBOX, 8, cache_dir=tmp_path)
    assert len(list(tmp_path.iterdir())) == 3


# ------------------------------------------------------------------------------------------------ subdivision

def test_subdivision_counts_volumes_and_shared_midpoints():
    verts, tets = tet_grid(EXACT_BBOX, 8)
    keys = torch.cat([tets[:, [a, b]] for a, b in ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))])
    num_edges = torch.unique(keys.sort(dim=1).values, dim=0).shape[0]
    new_verts, new_tets = subdivide_tets(verts, tets)
    assert new_verts.shape == (verts.shape[0] + num_edges, 3)
    assert new_tets.shape == (8 * tets.shape[0], 4) and new_tets.dtype == torch.int64
    assert torch.equal(new_verts[: verts.shape[0]], verts)
    # Every edge got exactly one midpoint, shared by all tetrahedra around it: no two vertices coincide.
    assert torch.unique(new_verts, dim=0).shape[0] == new_verts.shape[0]

    parent_vol = _signed_volumes(verts, tets)
    child_vol = _signed_volumes(new_verts, new_tets).reshape(-1, 8)
    assert (child_vol > 0).all()
    torch.testing.assert_close(child_vol, parent_vol[:, None].expand(-1, 8) / 8)
    # Children lie in their parent: each child vertex is a corner or an edge midpoint of the parent.
    parent_pts = verts.double()[tets]  # [T, 4, 3]
    i, j = torch.triu_indices(4, 4)
    candidates = (parent_pts[:, i] + parent_pts[:, j]) / 2  # [T, 10, 3] corners and midpoints
    child_pts = new_verts.double()[new_tets].reshape(-1, 8 * 4, 3)
    dist = (child_pts[:, :, None] - candidates[:, None]).norm(dim=-1).min(dim=2).values
    assert dist.max() < 1e-6

    _check_conforming(new_verts, new_tets)


def test_subdivided_grid_is_the_grid_of_twice_the_resolution():
    def tet_set(verts, tets):
        q = torch.round(verts.double() * 1e4).long()[tets]  # exact lattice coordinates, [T, 4, 3]
        return {tuple(sorted(map(tuple, t))) for t in q.tolist()}

    box = [[-1.0, 1.0]] * 3
    verts, tets = tet_grid(box, 4)
    for level in (1, 2):  # twice: the vertex order of the children keeps the split regular
        verts, tets = subdivide_tets(verts, tets)
        ref_verts, ref_tets = tet_grid(box, 4 * 2**level)
        assert verts.shape == ref_verts.shape and tets.shape == ref_tets.shape
        assert tet_set(verts, tets) == tet_set(ref_verts, ref_tets)


def test_subdivision_interpolates_features_and_batches():
    verts, tets = tet_grid(EXACT_BBOX, 4)
    def linear(x):
        return torch.stack([x[:, 0], 2 * x[:, 1] - x[:, 2], torch.ones_like(x[:, 0])], -1)

    new_verts, new_tets, new_features = subdivide_tets(verts, tets, linear(verts))
    torch.testing.assert_close(new_features, linear(new_verts))
    batched = torch.stack([verts, verts * 2])
    b_verts, b_tets = subdivide_tets(batched, tets)
    assert torch.equal(b_tets, new_tets)
    torch.testing.assert_close(b_verts, torch.stack([new_verts, new_verts * 2]))


# ------------------------------------------------------------------------------------------------ marching

@pytest.fixture(scope="module")
def sphere_grid():
    verts, tets = tet_grid([[-1.5, 1.5]] * 3, 64)
    return verts.double(), tets


def test_marching_sphere_area_volume_watertight_outward(sphere_grid):
    verts, tets = sphere_grid
    sdf = _sphere_sdf(verts)
    (mesh,) = marching_tetrahedra(verts[None], tets, sdf[None])
    mv, mf, mfeat = mesh
    assert mfeat is None and mf.dtype == torch.int64 and mv.dtype == torch.float64
    assert mf.min() >= 0 and mf.max() < mv.shape[0]
    assert torch.unique(mf).shape[0] == mv.shape[0]  # every vertex is used

    area, volume, normals, centres = _mesh_stats(mv, mf)
    assert area == pytest.approx(4 * math.pi, rel=0.02)
    assert volume == pytest.approx(4 / 3 * math.pi, rel=0.02)  # positive: faces point outward
    cell = grid_cell_size([[-1.5, 1.5]] * 3, 64)
    assert (mv.norm(dim=1) - 1).abs().max() < cell**2  # on the sphere up to interpolation error

    # Watertight and consistently oriented: every directed edge once, and its reverse once.
    directed = mf[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2)
    assert torch.unique(directed, dim=0).shape[0] == directed.shape[0]
    undirected, counts = torch.unique(directed.sort(dim=1).values, dim=0, return_counts=True)
    assert (counts == 2).all()
    # Euler characteristic of a sphere: V - E + F = 2.
    assert mv.shape[0] - undirected.shape[0] + mf.shape[0] == 2

    dots = (normals * centres).sum(1)
    assert dots.mean() > 0
    assert (dots > 0).all()


def test_marching_inverted_sdf_flips_orientation(sphere_grid):
    verts, tets = sphere_grid
    sdf = _sphere_sdf(verts, radius=0.8, centre=(0.1, -0.2, 0.15))
    (out_v, out_f, _), (in_v, in_f, _) = marching_tetrahedra(
        torch.stack([verts, verts]), tets, torch.stack([sdf, -sdf])
    )
    _, vol_out, _, _ = _mesh_stats(out_v, out_f)
    _, vol_in, normals, centres = _mesh_stats(in_v, in_f)
    assert vol_out == pytest.approx(4 / 3 * math.pi * 0.8**3, rel=0.02)
    # With sdf negated the inside is the space around the ball: normals point toward the ball's centre.
    assert vol_in == pytest.approx(-vol_out, rel=0.02)
    assert ((normals * (centres - torch.tensor([0.1, -0.2, 0.15], dtype=torch.float64))).sum(1) < 0).all()


def test_marching_batch_matches_single_and_features_are_linear(sphere_grid):
    verts, tets = sphere_grid
    verts2 = verts * 1.1 + 0.05  # a different (affinely deformed) grid for the second element
    sdfs = torch.stack([_sphere_sdf(verts, 1.0), _sphere_sdf(verts2, 0.7, (0.2, 0.0, -0.1))])
    all_verts = torch.stack([verts, verts2])
    x, y, z = all_verts.unbind(-1)
    features = torch.stack([x, 3 * y - z, torch.ones_like(x)], -1)
    batch = marching_tetrahedra(all_verts, tets, sdfs, features)
    assert len(batch) == 2
    for b in range(2):
        single = marching_tetrahedra(all_verts[b:b + 1], tets, sdfs[b:b + 1, :, None], features[b:b + 1])[0]
        for x, y in zip(batch[b], single):
            assert torch.equal(x, y)
        mv, _, mfeat = batch[b]
        assert mfeat.shape == (mv.shape[0], 3)
        expected = torch.stack([mv[:, 0], 3 * mv[:, 1] - mv[:, 2], torch.ones_like(mv[:, 0])], -1)
        torch.testing.assert_close(mfeat, expected)  # feature = x gives the vertex's x, and so on
    assert batch[0].verts.shape != batch[1].verts.shape


def _unit_tet():
    verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)
    return verts, torch.tensor([[0, 1, 2, 3]])


def test_marching_single_tet_cases_and_zero_sdf():
    verts, tets = _unit_tet()
    # Two inside, two outside: a quad of two triangles at the linear zero crossings.
    mv, mf, _ = marching_tetrahedra(verts[None], tets, torch.tensor([[-1.0, -1.0, 0.5, 0.5]], dtype=torch.float64))[0]
    assert mf.shape == (2, 3) and mv.shape == (4, 3)
    expected = torch.tensor([[0, 2 / 3, 0], [0, 0, 2 / 3], [1 / 3, 2 / 3, 0], [1 / 3, 0, 2 / 3]], dtype=torch.float64)
    torch.testing.assert_close(mv, expected)  # edges (0,2), (0,3), (1,2), (1,3) in that order
    _, _, normals, _ = _mesh_stats(mv, mf)
    assert ((normals @ torch.tensor([-1.0, 1, 1], dtype=torch.float64)) > 0).all()  # toward vertices 2, 3

    # sdf == 0 counts as outside: vertex 3 alone inside gives the face opposite it, pointing away from it.
    mv, mf, _ = marching_tetrahedra(verts[None], tets, torch.tensor([[0.0, 0.0, 0.0, -1.0]], dtype=torch.float64))[0]
    assert mf.shape == (1, 3)
    torch.testing.assert_close(mv, verts[:3])
    _, _, normals, _ = _mesh_stats(mv, mf)
    assert normals[0, 2] < 0 and normals[0, :2].abs().max() < 1e-12

    # All zero: everything outside, no surface.
    mv, mf, _ = marching_tetrahedra(verts[None], tets, torch.zeros(1, 4, dtype=torch.float64))[0]
    assert mv.shape == (0, 3) and mf.shape == (0, 3)


@pytest.mark.parametrize("value", [1.0, -1.0])
def test_marching_empty_result_shapes(value):
    verts, tets = tet_grid(EXACT_BBOX, 4)
    verts = verts[None].clone().requires_grad_(True)
    sdf = torch.full((1, verts.shape[1]), value, requires_grad=True)
    features = torch.zeros(1, verts.shape[1], 5)
    mv, mf, mfeat = marching_tetrahedra(verts, tets, sdf, features)[0]
    assert mv.shape == (0, 3) and mv.dtype == torch.float32
    assert mf.shape == (0, 3) and mf.dtype == torch.int64
    assert mfeat.shape == (0, 5)
    mv.sum().backward()  # an empty mesh still backpropagates (zero gradients)
    assert (verts.grad == 0).all()


def test_marching_gradients():
    verts, tets = tet_grid([[-1.2, 1.2]] * 3, 12)
    verts = verts.double()
    sdf = _sphere_sdf(verts).detach().requires_grad_(True)
    mv, _, _ = marching_tetrahedra(verts[None], tets, sdf[None])[0]
    (grad,) = torch.autograd.grad(mv.norm(dim=1).sum(), sdf)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Raising the sdf shrinks the surface: the radius derivative is negative wherever it is nonzero.
    assert grad.sum() < 0

    # Full check against finite differences, with sdf bounded away from 0 so the topology is stable.
    gen = torch.Generator().manual_seed(0)
    small_verts, small_tets = tet_grid([[0.0, 1.0]] * 3, 4)
    num = small_verts.shape[0]
    s = torch.rand(1, num, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    s = s * torch.where(torch.rand(1, num, generator=gen) < 0.5, -1.0, 1.0).double()
    v = small_verts.double()[None] + 0.05 * torch.rand(1, num, 3, generator=gen, dtype=torch.float64)
    f = torch.rand(1, num, 2, generator=gen, dtype=torch.float64)

    def fn(v, s, f):
        mv, _, mfeat = marching_tetrahedra(v, small_tets, s, f)[0]
        return mv, mfeat

    assert fn(v, s, f)[0].shape[0] > 0
    assert torch.autograd.gradcheck(fn, (v.requires_grad_(), s.requires_grad_(), f.requires_grad_()))


def test_marching_on_subdivided_grid_is_watertight():
    verts, tets = tet_grid([[-1.5, 1.5]] * 3, 16)
    verts, tets = subdivide_tets(verts.double(), tets)
    mv, mf, _ = marching_tetrahedra(verts[None], tets, _sphere_sdf(verts)[None])[0]
    directed = mf[:, [[0, 1], [1, 2], [2, 0]]].reshape(-1, 2)
    assert torch.unique(directed, dim=0).shape[0] == directed.shape[0]
    assert (torch.unique(directed.sort(dim=1).values, dim=0, return_counts=True)[1] == 2).all()
    _, volume, _, _ = _mesh_stats(mv, mf)
    assert volume == pytest.approx(4 / 3 * math.pi, rel=0.03)


def test_marching_rejects_bad_shapes():
    verts, tets = _unit_tet()
    with pytest.raises(ValueError):
        marching_tetrahedra(verts, tets, torch.zeros(1, 4))  # unbatched verts
    with pytest.raises(ValueError):
        marching_tetrahedra(verts[None], tets, torch.zeros(1, 5))
    with pytest.raises(ValueError):
        marching_tetrahedra(verts[None], tets, torch.zeros(1, 4), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError):
        marching_tetrahedra(verts[None], tets[:, :3], torch.zeros(1, 4))
