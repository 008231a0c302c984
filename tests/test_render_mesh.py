"""Tests for cgha.render.mesh.rasterize_mesh: the hard (z-buffer) path and the soft silhouette (CPU, fast)."""

import math

import pytest
import torch

from cgha.render import mesh as mesh_mod
from cgha.utils.primitives import uv_sphere
from cgha.render.mesh import rasterize_mesh


def _camera(width, height, focal, dtype=torch.float32):
    """Identity world-to-camera and a centred pinhole K, both batched [1, ...]."""
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)[None]
    return torch.eye(4, dtype=dtype)[None], K


def _unproject(uv, z, K):
    """Pixel coordinates [N, 2] at camera depth z -> camera points [N, 3] (for an identity viewmat)."""
    K = K[0].double()
    uv = torch.as_tensor(uv, dtype=torch.float64)
    x = (uv[:, 0] - K[0, 2]) / K[0, 0] * z
    y = (uv[:, 1] - K[1, 2]) / K[1, 1] * z
    return torch.stack([x, y, torch.full_like(x, z)], -1)


def _pixel_centres(width, height):
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    return u + 0.5, v + 0.5


def _edge_distances(tri_uv, width, height):
    """Signed distances (px) of every pixel centre to the three edges of a 2D triangle, positive inside: [3, H, W]."""
    u, v = _pixel_centres(width, height)
    t = torch.as_tensor(tri_uv, dtype=torch.float64)
    area2 = (t[1, 0] - t[0, 0]) * (t[2, 1] - t[0, 1]) - (t[1, 1] - t[0, 1]) * (t[2, 0] - t[0, 0])
    out = []
    for i in range(3):
        a, b = t[(i + 1) % 3], t[(i + 2) % 3]
        e = (b[0] - a[0]) * (v - a[1]) - (b[1] - a[1]) * (u - a[0])
        out.append(e * torch.sign(area2) / torch.linalg.norm(b - a))
    return torch.stack(out)


def test_single_triangle_coverage_matches_point_in_triangle():
    W, H = 48, 40
    vm, K = _camera(W, H, 50.0)
    tri_uv = [[3.3, 4.1], [44.7, 11.9], [17.2, 37.6]]
    verts = _unproject(tri_uv, 2.5, K).float()[None]
    faces = torch.tensor([[0, 1, 2]])
    out = rasterize_mesh(verts, faces, None, vm, K, W, H)
    dist = _edge_distances(tri_uv, W, H)
    inside = (dist > 1e-3).all(0)
    outside = (dist < -1e-3).any(0)
    assert inside.sum() > 300
    mask = out["mask"][0, 0].bool()
    assert mask[inside].all() and not mask[outside].any()
    assert torch.equal(out["face_ids"][0] >= 0, mask)
    assert "attrs" not in out or out["attrs"] is None
    # Both windings are drawn (no back-face culling).
    out2 = rasterize_mesh(verts, faces[:, [0, 2, 1]], None, vm, K, W, H)
    assert torch.equal(out2["mask"], out["mask"])


def test_shared_edge_no_cracks_no_double():
    W, H = 16, 16
    vm, K = _camera(W, H, 20.0)
    # Square [2, 14]^2 in pixels; its diagonal passes exactly through pixel centres (u + 0.5, u + 0.5).
    corners = [[2.0, 2.0], [14.0, 2.0], [14.0, 14.0], [2.0, 14.0]]
    verts = _unproject(corners, 3.0, K).float()[None]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    out = rasterize_mesh(verts, faces, None, vm, K, W, H)
    expected = torch.zeros(H, W)
    expected[2:14, 2:14] = 1
    assert torch.equal(out["mask"][0, 0], expected)
    fid = out["face_ids"][0]
    assert set(fid[2:14, 2:14].unique().tolist()) == {0, 1}
    # Separately, each triangle claims a diagonal pixel (ties on the shared edge), but nothing else twice.
    m0 = rasterize_mesh(verts, faces[:1], None, vm, K, W, H)["mask"][0, 0]
    m1 = rasterize_mesh(verts, faces[1:], None, vm, K, W, H)["mask"][0, 0]
    both = (m0 * m1).bool()
    assert torch.equal(both, torch.diag(expected.diagonal()).bool())
    assert torch.equal(torch.clamp(m0 + m1, max=1), expected)


def test_fan_of_tilted_triangles_has_no_cracks():
    # A perspective-projected, tilted hexagon made of 6 triangles around its centre: union == polygon coverage.
    W, H = 64, 64
    vm, K = _camera(W, H, 60.0)
    ang = torch.arange(6, dtype=torch.float64) * math.pi / 3 + 0.3
    ring = torch.stack([ang.cos(), ang.sin(), 0.4 * ang.cos() + 0.3 * ang.sin()], -1)
    pts = torch.cat([torch.zeros(1, 3, dtype=torch.float64), ring]) + torch.tensor([0.05, -0.03, 3.0],
                                                                                  dtype=torch.float64)
    faces = torch.tensor([[0, 1 + i, 1 + (i + 1) % 6] for i in range(6)])
    out = rasterize_mesh(pts.float()[None], faces, None, vm, K, W, H)
    proj = pts @ K[0].double().T
    uv = proj[:, :2] / proj[:, 2:]
    inside_any = torch.zeros(H, W, dtype=torch.bool)
    near_edge = torch.zeros(H, W, dtype=torch.bool)
    for f in faces.tolist():
        dist = _edge_distances(uv[f], W, H)
        inside_any |= (dist > -1e-3).all(0)
    for i in range(6):  # outer boundary only: the fan's interior edges must not leave holes
        dist = _edge_distances(uv[[0, 1 + i, 1 + (i + 1) % 6]], W, H)
        near_edge |= (dist[0].abs() < 1e-3) & (dist[1:] > -1e-3).all(0)
    mask = out["mask"][0, 0].bool()
    assert torch.equal(mask[~near_edge], inside_any[~near_edge])
    assert mask.sum() > 1000


@pytest.mark.parametrize("front_first", [True, False])
def test_z_order_front_face_wins(front_first):
    W, H = 32, 32
    vm, K = _camera(W, H, 40.0)
    front = _unproject([[2.0, 3.0], [28.0, 5.0], [10.0, 29.0]], 2.0, K)
    back = _unproject([[30.0, 30.0], [4.0, 27.0], [20.0, 1.0]], 3.0, K)
    verts = torch.cat([front, back] if front_first else [back, front]).float()[None]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    front_id = 0 if front_first else 1
    out = rasterize_mesh(verts, faces, None, vm, K, W, H)
    only_front = rasterize_mesh(verts, faces[front_id:front_id + 1], None, vm, K, W, H)["mask"][0, 0].bool()
    fid = out["face_ids"][0]
    assert only_front.sum() > 100
    assert (fid[only_front] == front_id).all()
    assert torch.allclose(out["depth"][0, 0][only_front], torch.tensor(2.0), atol=1e-5)
    back_only = (fid >= 0) & ~only_front
    assert back_only.sum() > 50 and (fid[back_only] == 1 - front_id).all()
    assert torch.allclose(out["depth"][0, 0][back_only], torch.tensor(3.0), atol=1e-5)


def _rot(axis_angle):
    a = torch.as_tensor(axis_angle, dtype=torch.float64)
    th = a.norm()
    k = a / th
    Kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + th.sin() * Kx + (1 - th.cos()) * Kx @ Kx


def test_perspective_correct_interpolation_on_tilted_plane():
    W, H = 40, 32
    # Quad on the world plane z = 0.6 x + 0.3 y (strongly tilted), seen by a rotated, translated camera.
    xy = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
    world = torch.cat([xy, (0.6 * xy[:, 0] + 0.3 * xy[:, 1])[:, None]], 1)
    R = _rot([0.1, -0.2, 0.05])
    t = torch.tensor([0.1, -0.05, 3.0], dtype=torch.float64)
    vm = torch.eye(4, dtype=torch.float64)
    vm[:3, :3], vm[:3, 3] = R, t
    K = torch.tensor([[35.0, 0.0, 19.0], [0.0, 33.0, 17.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    verts = world.float()[None]
    out = rasterize_mesh(verts, faces, verts.clone(), vm.float()[None], K.float()[None], W, H)
    mask = out["mask"][0, 0].bool()
    assert mask.sum() > 300
    # Exact ray / plane intersection at every covered pixel centre.
    u, v = _pixel_centres(W, H)
    d_cam = torch.stack([u, v, torch.ones_like(u)], -1) @ torch.linalg.inv(K).T  # [H, W, 3]
    d_world = d_cam @ R  # R^T d
    origin = -R.T @ t
    normal = torch.tensor([0.6, 0.3, -1.0], dtype=torch.float64)
    s = -(origin @ normal) / (d_world @ normal)
    hit = origin + s[..., None] * d_world
    attrs = out["attrs"][0].permute(1, 2, 0).double()
    assert (attrs[mask] - hit[mask]).abs().max() < 1e-4
    depth_true = (hit @ R.T + t)[..., 2]
    assert (out["depth"][0, 0].double()[mask] - depth_true[mask]).abs().max() < 1e-4
    bary = out["bary"][0]
    assert torch.allclose(bary.sum(0)[mask], torch.tensor(1.0), atol=1e-5)
    assert (out["attrs"][0][:, ~mask] == 0).all() and (out["depth"][0, 0][~mask] == 0).all()
    assert (bary[:, ~mask] == 0).all() and (out["normals"][0][:, ~mask] == 0).all()


def _sphere_scene(size, dist, n_lat=48, n_lon=96):
    verts, faces = uv_sphere(n_lat, n_lon)
    focal = 1.3 * size
    vm, K = _camera(size, size, focal)
    vm[0, 2, 3] = dist
    return verts[None], faces, vm, K, focal


def test_sphere_silhouette_area_and_normals():
    size, dist = 256, 3.0
    verts, faces, vm, K, focal = _sphere_scene(size, dist)
    out = rasterize_mesh(verts, faces, None, vm, K, size, size)
    # Perspective silhouette of a unit sphere on the optical axis: a disk of radius f * tan(asin(r / d)).
    r_px = focal * math.tan(math.asin(1.0 / dist))
    area = math.pi * r_px ** 2
    count = out["mask"].sum().item()
    assert abs(count - area) / area < 0.02
    mask = out["mask"][0, 0].bool()
    n = out["normals"][0][:, mask]
    assert torch.allclose(n.norm(dim=0), torch.tensor(1.0), atol=1e-5)
    assert (n[2] < 0).all()
    # The visible face normal is close to the analytic sphere normal at the visible point.
    u, v = _pixel_centres(size, size)
    ray = torch.stack([(u - size / 2) / focal, (v - size / 2) / focal, torch.ones_like(u)], 0).float()
    p = ray * out["depth"][0]
    sphere_n = p - torch.tensor([0.0, 0.0, dist])[:, None, None]
    sphere_n = sphere_n / sphere_n.norm(dim=0, keepdim=True)
    assert (n * sphere_n[:, mask]).sum(0).min() > 0.99
    # The visible surface is the front hemisphere: depth within [d - 1, d].
    z = out["depth"][0, 0][mask]
    assert z.min() > dist - 1.0 - 1e-4 and z.max() < dist + 1e-6


def test_faces_behind_or_crossing_near_plane_are_skipped():
    W, H = 32, 32
    vm, K = _camera(W, H, 40.0)
    visible = _unproject([[2.0, 2.0], [12.0, 2.0], [2.0, 12.0]], 2.0, K)
    behind = -_unproject([[16.0, 16.0], [30.0, 16.0], [16.0, 30.0]], 2.0, K)  # z = -2, projects on-screen
    crossing = _unproject([[16.0, 16.0], [30.0, 16.0], [16.0, 30.0]], 2.0, K)
    crossing[0, 2] = 0.005  # one vertex in front of the near plane
    verts = torch.cat([visible, behind, crossing]).float()[None]
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    out = rasterize_mesh(verts, faces, None, vm, K, W, H, near=0.01)
    ids = out["face_ids"].unique().tolist()
    assert ids == [-1, 0]
    # The soft silhouette skips them too: nothing away from the visible triangle.
    soft = out["soft_mask"][0, 0]
    assert soft[16:, 16:].max() < 1e-6 and soft[:12, :12].max() > 0.99


def test_gradients_flow_to_verts_and_attrs():
    size = 48
    verts, faces, vm, K, _ = _sphere_scene(size, 3.0, n_lat=12, n_lon=24)
    verts = verts.clone().requires_grad_(True)
    attrs = torch.rand(1, verts.shape[1], 4, requires_grad=True)
    # A degenerate face sharing vertices with visible ones must not poison the gradients with NaN.
    faces = torch.cat([faces, torch.tensor([[5, 5, 6]])])
    out = rasterize_mesh(verts, faces, attrs, vm, K, size, size)
    w = torch.rand_like(out["attrs"])
    loss = (out["attrs"] * w).sum() + out["depth"].sum() + (out["normals"] * torch.rand_like(out["normals"])).sum()
    loss.backward()
    for g in (verts.grad, attrs.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0


def test_gradcheck_depth_and_attrs():
    # Analytic gradients of the recomputed barycentrics/depth vs finite differences (face choice fixed).
    W, H = 8, 8
    vm, K = _camera(W, H, 10.0, dtype=torch.float64)
    verts = _unproject([[0.2, 0.1], [7.9, 1.2], [1.1, 7.8]], 2.0, K)
    verts[1, 2] = 2.6
    faces = torch.tensor([[0, 1, 2]])
    attrs = torch.rand(1, 3, 2, dtype=torch.float64)

    def fn(v, a):
        out = rasterize_mesh(v, faces, a, vm, K, W, H)
        return out["attrs"], out["depth"], out["normals"]

    inputs = (verts[None].requires_grad_(True), attrs.requires_grad_(True))
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=True)


def test_batch_equals_single_calls():
    size = 40
    verts, faces, vm, K, _ = _sphere_scene(size, 3.0, n_lat=10, n_lon=20)
    verts2 = torch.cat([verts, verts * 0.8 + torch.tensor([0.1, 0.0, 0.2])])
    vm2 = vm.repeat(2, 1, 1)
    vm2[1, :3, :3] = _rot([0.0, 0.4, 0.1]).float()
    vm2[1, :3, 3] = torch.tensor([0.2, -0.1, 3.5])
    K2 = K.repeat(2, 1, 1)
    K2[1, 0, 0] *= 1.2
    attrs = torch.rand(2, verts.shape[1], 3)
    out = rasterize_mesh(verts2, faces, attrs, vm2, K2, size, size)
    for b in range(2):
        single = rasterize_mesh(verts2[b:b + 1], faces, attrs[b:b + 1], vm2[b:b + 1], K2[b:b + 1], size, size)
        for k in ("attrs", "mask", "depth", "normals", "face_ids", "bary"):
            assert torch.equal(out[k][b:b + 1], single[k]), k
        # Summation order of the soft path depends on the chunks, so only up to rounding.
        assert torch.allclose(out["soft_mask"][b:b + 1], single["soft_mask"], atol=1e-6)


def test_banding_and_chunking_match_default(monkeypatch):
    size = 48
    verts, faces, vm, K, _ = _sphere_scene(size, 2.0, n_lat=8, n_lon=16)
    ref = rasterize_mesh(verts, faces, None, vm, K, size, size)
    monkeypatch.setattr(mesh_mod, "_MAX_BOX", 7)
    monkeypatch.setattr(mesh_mod, "_MAX_FRAGMENTS", 50)
    out = rasterize_mesh(verts, faces, None, vm, K, size, size)
    for k in ("mask", "depth", "face_ids"):
        assert torch.equal(out[k], ref[k]), k
    assert torch.allclose(out["soft_mask"], ref["soft_mask"], atol=1e-6)


def test_empty_faces_and_offscreen_give_background():
    W, H = 12, 10
    vm, K = _camera(W, H, 10.0)
    verts = torch.rand(1, 5, 3) + torch.tensor([0.0, 0.0, 2.0])
    out = rasterize_mesh(verts, torch.zeros(0, 3, dtype=torch.int64), torch.rand(1, 5, 2), vm, K, W, H)
    assert out["attrs"].shape == (1, 2, H, W) and (out["attrs"] == 0).all()
    assert (out["mask"] == 0).all() and (out["face_ids"] == -1).all() and (out["depth"] == 0).all()
    far_left = verts - torch.tensor([100.0, 0.0, 0.0])
    out = rasterize_mesh(far_left, torch.tensor([[0, 1, 2]]), None, vm, K, W, H)
    assert (out["mask"] == 0).all()
    assert out["normals"].shape == (1, 3, H, W) and out["bary"].shape == (1, 3, H, W)


def test_input_validation():
    W, H = 8, 8
    vm, K = _camera(W, H, 10.0)
    verts = torch.rand(1, 3, 3) + torch.tensor([0.0, 0.0, 2.0])
    faces = torch.tensor([[0, 1, 2]])
    bad = verts.clone()
    bad[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="verts"):
        rasterize_mesh(bad, faces, None, vm, K, W, H)
    with pytest.raises(ValueError, match="faces"):
        rasterize_mesh(verts, torch.tensor([[0, 1, 3]]), None, vm, K, W, H)
    with pytest.raises(ValueError, match="faces"):
        rasterize_mesh(verts, faces.float(), None, vm, K, W, H)
    with pytest.raises(ValueError, match="verts"):
        rasterize_mesh(verts[0], faces, None, vm, K, W, H)
    with pytest.raises(ValueError, match="vert_attrs"):
        rasterize_mesh(verts, faces, torch.rand(1, 4, 2), vm, K, W, H)
    with pytest.raises(ValueError, match="viewmats"):
        rasterize_mesh(verts, faces, None, vm[:, :3], K, W, H)
    with pytest.raises(ValueError, match="Ks"):
        rasterize_mesh(verts, faces, None, vm, K.repeat(2, 1, 1), W, H)
    with pytest.raises(ValueError, match="width"):
        rasterize_mesh(verts, faces, None, vm, K, 0, H)
    for sigma in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            rasterize_mesh(verts, faces, None, vm, K, W, H, sigma=sigma)
    # sigma only matters to the soft path.
    assert "soft_mask" not in rasterize_mesh(verts, faces, None, vm, K, W, H, sigma=0.0, soft=False)


# --------------------------------------------------------------------------------------------- soft silhouette


def _dense_soft_mask(verts, faces, K, width, height, sigma, near=0.01):
    """Brute-force float64 reference: 1 - prod over all faces of (1 - erfc(d / sigma) / 2), no windows.

    verts [V, 3] camera space (identity viewmat), K [1, 3, 3]; d is the signed distance (px, negative inside) of
    each pixel centre to the projected triangle. Differentiable by autograd.
    """
    p = verts.double() @ K[0].double().T
    uv = p[:, :2] / p[:, 2:]
    u, v = _pixel_centres(width, height)
    P = torch.stack([u, v], -1)  # [H, W, 2]
    log_empty = torch.zeros(height, width, dtype=torch.float64)
    for f in faces.tolist():
        if (verts[f, 2] <= near).any():
            continue
        t = uv[f]
        area2 = (t[1, 0] - t[0, 0]) * (t[2, 1] - t[0, 1]) - (t[1, 1] - t[0, 1]) * (t[2, 0] - t[0, 0])
        seg, line = [], []
        for i in range(3):
            a, b = t[(i + 1) % 3], t[(i + 2) % 3]
            e = b - a
            s = ((P - a) @ e / (e @ e)).clamp(0, 1)
            seg.append((P - a - s[..., None] * e).norm(dim=-1))
            line.append(torch.sign(area2) * (e[0] * (P[..., 1] - a[1]) - e[1] * (P[..., 0] - a[0])))
        inside = (torch.stack(line) >= 0).all(0)
        dist = torch.stack(seg).amin(0)
        d = torch.where(inside, -dist, dist)
        log_empty = log_empty + torch.log1p(-0.5 * torch.erfc(d / sigma))
    return -torch.expm1(log_empty)


def _iou(a, b):
    a, b = a.bool(), b.bool()
    return ((a & b).sum() / (a | b).sum()).item()


def test_soft_mask_single_triangle_matches_dense_reference():
    W, H = 40, 36
    vm, K = _camera(W, H, 45.0)
    tri_uv = [[4.3, 5.1], [35.7, 10.9], [14.2, 31.6]]
    verts = _unproject(tri_uv, 2.5, K).float()[None]
    faces = torch.tensor([[0, 1, 2]])
    for sigma in (0.7, 1.0, 2.0):
        soft = rasterize_mesh(verts, faces, None, vm, K, W, H, sigma=sigma)["soft_mask"]
        assert soft.shape == (1, 1, H, W)
        soft = soft[0, 0].double()
        ref = _dense_soft_mask(verts[0], faces, K, W, H, sigma)
        # Equal up to float32 rounding and the window cut-off (p < 2.1e-4 beyond 2.5 sigma).
        assert (soft - ref).abs().max() < 3e-4
        dist = _edge_distances(tri_uv, W, H)  # to the edge lines, positive inside
        deep = (dist > 3 * sigma).all(0)
        far = dist.amin(0) < -3 * sigma
        assert deep.sum() > 20 and far.sum() > 200
        assert soft[deep].min() > 0.999 and soft[far].max() < 1e-3 and soft.min() >= 0
        # Within 0.1 px of an edge and far inside the other two (away from the corners) the coverage is ~1/2.
        near_one = (dist.abs() < 0.1).sum(0) == 1
        others_far = (dist > 3 * sigma).sum(0) == 2
        on_edge = near_one & others_far
        assert on_edge.sum() >= 3
        assert ((soft[on_edge] - 0.5).abs() < 0.1 / sigma).all()


def test_soft_mask_approaches_hard_mask_as_sigma_shrinks():
    size = 48
    verts, faces, vm, K, _ = _sphere_scene(size, 3.0, n_lat=12, n_lon=24)
    hard = rasterize_mesh(verts, faces, None, vm, K, size, size, soft=False)["mask"]
    errors = [(rasterize_mesh(verts, faces, None, vm, K, size, size, sigma=s)["soft_mask"] - hard).abs().mean()
              for s in (2.0, 0.5, 0.1, 0.01)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 2e-3
    # At sigma = 0.01 px only pixel centres within a few hundredths of a pixel of the silhouette are uncertain.
    sharp = rasterize_mesh(verts, faces, None, vm, K, size, size, sigma=0.01)["soft_mask"]
    assert ((sharp > 0.5) != (hard > 0.5)).sum() <= 1


def test_soft_mask_gradients_from_both_sides_of_the_edge():
    W, H = 32, 32
    vm, K = _camera(W, H, 40.0)
    verts = _unproject([[5.2, 6.3], [27.1, 9.4], [12.6, 26.8]], 2.0, K).float()[None].requires_grad_(True)
    faces = torch.tensor([[0, 1, 2]])
    out = rasterize_mesh(verts, faces, None, vm, K, W, H, sigma=1.0)
    soft, hard = out["soft_mask"], out["mask"]
    band = (soft > 0.02) & (soft < 0.98)
    for side in (hard > 0, hard == 0):  # just inside and just outside the silhouette
        pick = band & side
        assert pick.sum() > 20
        g, = torch.autograd.grad(soft[pick].sum(), verts, retain_graph=True)
        assert torch.isfinite(g).all()
        # Every vertex and both screen axes move the edge pixels; depth moves them through the projection.
        assert (g.abs() > 1e-3).all()
    # Growing the triangle about its centroid raises the coverage of the band.
    g, = torch.autograd.grad(soft[band].sum(), verts)
    centroid = verts.detach().mean(1, keepdim=True)
    grow = (verts.detach() - centroid) * torch.tensor([1.0, 1.0, 0.0])
    assert (g * grow).sum() > 0


def test_soft_mask_gradcheck():
    # The custom backward of the soft path against finite differences: vertices and intrinsics, two faces that
    # overlap, one with a near-degenerate thin shape.
    W, H = 10, 9
    vm, K = _camera(W, H, 12.0, dtype=torch.float64)
    verts = torch.cat([_unproject([[1.3, 1.1], [8.4, 2.2], [2.5, 7.3]], 2.0, K),
                       _unproject([[4.1, 3.3], [9.2, 7.9], [3.7, 8.1]], 2.6, K)])[None]
    verts[0, 4, 2] = 3.1
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])

    def fn(v, k):
        return rasterize_mesh(v, faces, None, vm, k, W, H, sigma=1.3)["soft_mask"]

    assert torch.autograd.gradcheck(fn, (verts.requires_grad_(True), K.clone().requires_grad_(True)),
                                    eps=1e-6, atol=1e-5)


def test_edge_lines_backward_matches_autograd():
    # The soft path's analytic vector-Jacobian product of the edge-line setup, including a zero-length edge.
    g = torch.Generator().manual_seed(0)
    P = torch.rand(2, 3, 6, generator=g, dtype=torch.float64) * 10
    P[:, 1, 4] = P[:, 2, 4]  # corners 1 and 2 of triangle 4 coincide: edge 0 is a point
    P.requires_grad_(True)
    lines = mesh_mod._edge_lines(P)
    grad = torch.randn(lines.shape, generator=g, dtype=torch.float64)
    expected, = torch.autograd.grad(lines, P, grad)
    assert torch.allclose(mesh_mod._edge_lines_backward(P.detach(), grad), expected, atol=1e-12)


def test_soft_mask_matches_dense_reference_on_a_sphere():
    size = 32
    verts, faces, vm, K, _ = _sphere_scene(size, 3.0, n_lat=6, n_lon=10)
    verts = verts.double().requires_grad_(True)
    soft = rasterize_mesh(verts, faces, None, vm.double(), K.double(), size, size, sigma=1.5)["soft_mask"][0, 0]
    ref = _dense_soft_mask(verts[0] + torch.tensor([0.0, 0.0, 3.0], dtype=torch.float64), faces, K, size, size,
                           1.5)
    assert (soft - ref).abs().max() < 2e-3
    w = torch.rand(size, size, dtype=torch.float64)
    g, = torch.autograd.grad((soft * w).sum(), verts)
    g_ref, = torch.autograd.grad((ref * w).sum(), verts)
    assert torch.isfinite(g).all()
    assert (g - g_ref).norm() < 1e-2 * g_ref.norm()


def test_soft_false_omits_soft_mask_and_keeps_hard_outputs():
    size = 32
    verts, faces, vm, K, _ = _sphere_scene(size, 3.0, n_lat=8, n_lon=16)
    attrs = torch.rand(1, verts.shape[1], 2)
    with_soft = rasterize_mesh(verts, faces, attrs, vm, K, size, size)
    without = rasterize_mesh(verts, faces, attrs, vm, K, size, size, soft=False)
    assert "soft_mask" in with_soft and "soft_mask" not in without
    assert set(with_soft) - set(without) == {"soft_mask"}
    for k, v in without.items():
        assert torch.equal(v, with_soft[k]), k


def test_soft_silhouette_optimisation_fits_target_mask():
    # A sphere, moved in the image plane and scaled by learnable parameters, is fitted to the hard mask of the
    # target pose by an L2 loss on the soft silhouette alone. (Depth and scale are left un-coupled: a perspective
    # silhouette hardly tells them apart.)
    size = 64
    verts, faces, vm, K, _ = _sphere_scene(size, 3.0, n_lat=12, n_lon=24)
    target = rasterize_mesh(verts * 0.8 + torch.tensor([0.35, -0.25, 0.0]), faces, None, vm, K, size, size,
                            soft=False)["mask"]
    shift = torch.tensor([-0.3, 0.3], requires_grad=True)
    log_scale = torch.tensor(math.log(1.1), requires_grad=True)
    opt = torch.optim.Adam([shift, log_scale], lr=0.05)

    def render(soft=True):
        offset = torch.cat([shift, shift.new_zeros(1)])
        return rasterize_mesh(verts * log_scale.exp() + offset, faces, None, vm, K, size, size, sigma=0.7, soft=soft)

    with torch.no_grad():
        iou0 = _iou(render(False)["mask"], target)
    assert iou0 < 0.6
    for _ in range(60):
        opt.zero_grad()
        loss = (render()["soft_mask"] - target).square().mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        iou = _iou(render(False)["mask"], target)
    assert iou > 0.9, (iou0, iou)


def test_soft_mask_empty_and_offscreen():
    W, H = 12, 10
    vm, K = _camera(W, H, 10.0)
    verts = (torch.rand(1, 5, 3) + torch.tensor([0.0, 0.0, 2.0])).requires_grad_(True)
    out = rasterize_mesh(verts, torch.zeros(0, 3, dtype=torch.int64), None, vm, K, W, H)
    assert out["soft_mask"].shape == (1, 1, H, W) and (out["soft_mask"] == 0).all()
    out = rasterize_mesh(verts - torch.tensor([100.0, 0.0, 0.0]), torch.tensor([[0, 1, 2]]), None, vm, K, W, H)
    assert (out["soft_mask"] == 0).all()
    out["soft_mask"].sum().backward()
    assert verts.grad is not None and (verts.grad == 0).all()


@pytest.mark.cuda
def test_cuda_matches_cpu():
    size = 64
    verts, faces, vm, K, _ = _sphere_scene(size, 3.0, n_lat=24, n_lon=48)
    vm = vm.repeat(2, 1, 1)
    vm[1, :3, :3] = _rot([0.1, 0.5, 0.0]).float()
    verts = torch.cat([verts, verts * 0.9])
    K = K.repeat(2, 1, 1)
    attrs = torch.rand(2, verts.shape[1], 3)
    results = []
    for device in ("cpu", "cuda"):
        v = verts.to(device).clone().requires_grad_(True)
        a = attrs.to(device).clone().requires_grad_(True)
        out = rasterize_mesh(v, faces.to(device), a, vm.to(device), K.to(device), size, size)
        w = torch.rand(2, 1, size, size, generator=torch.Generator().manual_seed(0)).to(device)
        loss = (out["soft_mask"] * w).sum() + (out["attrs"] * w).sum() + out["depth"].sum()
        loss.backward()
        results.append({**{k: t.detach().cpu() for k, t in out.items()}, "gv": v.grad.cpu(), "ga": a.grad.cpu()})
    cpu, gpu = results
    # Fused multiply-adds may round differently on the two devices: a pixel centre within rounding of an edge or
    # a depth tie may pick another face, nothing more.
    same = cpu["face_ids"] == gpu["face_ids"]
    assert same.float().mean() > 0.999
    same = same[:, None]
    for k in ("mask", "attrs", "depth", "normals", "bary"):
        diff = (cpu[k] - gpu[k]).abs()
        assert diff.masked_fill(~same, 0).max() < 1e-4, k
    assert (cpu["soft_mask"] - gpu["soft_mask"]).abs().max() < 1e-4
    for k in ("gv", "ga"):
        assert (cpu[k] - gpu[k]).norm() < 1e-3 * cpu[k].norm(), k
