"""cgha/kernels/mesh_raster.py: the Triton z-buffer and soft-coverage kernels against their PyTorch twin (mesh.py).

Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), so the CPU tests
use tiny scenes (32 x 24 px, B = 2, <= 200 faces); with one, the same tests run the compiled kernels on CUDA, and
the `cuda` tests add a 20k-face sphere at 128 x 128.
"""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton")

from cgha.kernels import mesh_raster  # noqa: E402
from cgha.render import mesh as mesh_mod  # noqa: E402
from cgha.render.mesh import rasterize_mesh  # noqa: E402
from cgha.utils.primitives import uv_sphere  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
W, H = 32, 24
HARD_KEYS = ("face_ids", "mask", "depth", "normals", "bary", "attrs")


def _rotation(angle, axis):
    c, s = math.cos(angle), math.sin(angle)
    i, j = [k for k in range(3) if k != axis]
    R = torch.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    return R


def _cameras(B, width, height, focal):
    """B world-to-camera matrices (camera b turned by 0.1 b rad about y) and pinhole Ks with an off-centre principal
    point."""
    viewmats = torch.eye(4).repeat(B, 1, 1)
    for b in range(B):
        viewmats[b, :3, :3] = _rotation(0.1 * b, 1)
    K = torch.tensor([[focal, 0.0, width / 2 + 0.3], [0.0, focal * 1.1, height / 2 - 0.2], [0.0, 0.0, 1.0]])
    return viewmats, K.repeat(B, 1, 1)


def soup_scene(seed, B=2, n_tris=60, width=W, height=H, collinear=True):
    """Random triangles with every special case of the face setup, plus a small closed sphere.

    Triangles of all sizes (up to several times the image, so some cover the whole frame), partly and wholly
    off-screen, crossing or behind the near plane, degenerate (repeated corner; collinear corners or, with
    ``collinear=False``, a thin sliver), and a sphere cut by the image border (shared edges, depth order); the
    batch elements differ by a perturbation. Exactly collinear corners project to a triangle whose area and
    winding are rounding noise: both backends draw it the same way in the z-buffer, but its soft-silhouette
    gradient is ill-conditioned, so the gradient tests use the sliver.
    Returns verts [B, V, 3], faces [F, 3], vert_attrs [B, V, 3], viewmats [B, 4, 4], Ks [B, 3, 3].
    """
    g = torch.Generator().manual_seed(seed)
    focal = 0.9 * width
    depth = 1.5 + 3.0 * torch.rand(n_tris, 1, generator=g)
    centre = torch.cat([(torch.rand(n_tris, 2, generator=g) - 0.5) * 1.6, depth], 1)
    size = torch.exp(torch.empty(n_tris, 1, 1).uniform_(math.log(0.03), math.log(3.0), generator=g))
    tris = centre[:, None, :] + size * torch.randn(n_tris, 3, 3, generator=g)
    tris[0, 0, 2] = 0.005  # crosses the near plane (0.01)
    tris[1, :, 2] = -1.0 - torch.rand(3, generator=g)  # behind the camera
    tris[2, 2] = tris[2, 0]  # repeated corner: zero area
    tris[3, 2] = 0.3 * tris[3, 0] + 0.7 * tris[3, 1]  # collinear corners
    if not collinear:
        tris[3, 2] += 0.05 * torch.linalg.cross(tris[3, 1] - tris[3, 0], tris[3, 2])  # a thin sliver
    tris[4, :, 0] += 3.0  # off-screen to the right
    tris[5, :, 0] -= 0.9  # straddles the left border
    sphere_v, sphere_f = uv_sphere(5, 8, 0.6)
    sphere_v = sphere_v + torch.tensor([-0.9, 0.2, 2.5])
    verts = torch.cat([tris.reshape(-1, 3), sphere_v])
    faces = torch.cat([torch.arange(3 * n_tris).view(n_tris, 3), sphere_f + 3 * n_tris])
    verts = verts[None] + 0.02 * torch.randn(B, *verts.shape, generator=g) * torch.arange(B).view(B, 1, 1)
    viewmats, Ks = _cameras(B, width, height, focal)
    # Cameras turned about y see the scene turned the other way: turn the points back so they stay in view.
    for b in range(B):
        verts[b] = verts[b] @ viewmats[b, :3, :3]
    attrs = torch.rand(B, verts.shape[1], 3, generator=g)
    return verts, faces, attrs, viewmats, Ks


def sphere_scene(B, size, n_lat, n_lon, seed=0):
    """A fine UV sphere (radius 0.5) 2 units in front of B cameras, covering ~70 % of the image width."""
    verts, faces = uv_sphere(n_lat, n_lon, 0.5)
    g = torch.Generator().manual_seed(seed)
    viewmats, Ks = _cameras(B, size, size, 2.8 * size)
    viewmats[:, 2, 3] = 2.0
    verts = verts[None].repeat(B, 1, 1) + 0.002 * torch.randn(B, *verts.shape, generator=g)
    return verts, faces, torch.rand(B, verts.shape[1], 3, generator=g), viewmats, Ks


def _to(scene, device):
    return [t.to(device) for t in scene]


def normalized_torch_keys(uvz, B, F, width, height):
    """The twin's z-buffer keys with the face as b * F + f in the low word and every uncovered pixel empty."""
    boxes = mesh_mod._face_boxes(uvz, B, F, width, height, 0.01, (0.0,))[0]
    keys, gid = mesh_mod._zbuffer(uvz, boxes, B, width, height)
    covered = keys < mesh_mod._KEY_COVERED_MAX
    mapped = (keys & ~0xFFFFFFFF) | gid.index_select(0, torch.where(covered, keys & 0xFFFFFFFF, 0))
    return torch.where(covered, mapped, mesh_mod._KEY_EMPTY)


def kernel_keys(uvz, B, F, width, height):
    win = mesh_mod._face_windows(uvz, B, F, width, height, 0.01, (0.0,))[0]
    return mesh_mod._zbuffer_triton(uvz, win, B, F, width, height)


def _corner_uvz(verts, faces, viewmats, Ks):
    return mesh_mod._corner_uvz(mesh_mod._to_camera(verts, viewmats), faces, Ks)


def run_both(scene, width, height, sigma, device=DEVICE):
    """Outputs and gradients (verts, attrs, viewmats, Ks) of one hard+soft forward+backward for each backend."""
    verts, faces, attrs, viewmats, Ks = _to(scene, device)
    B = verts.shape[0]
    g = torch.Generator().manual_seed(1)
    w_soft = torch.rand(B, 1, height, width, generator=g).to(device) - 0.3  # both signs upstream
    w_attrs = torch.rand(B, attrs.shape[-1], height, width, generator=g).to(device)
    results = {}
    for backend in ("torch", "triton"):
        inputs = [t.detach().clone().requires_grad_(True) for t in (verts, attrs, viewmats, Ks)]
        out = rasterize_mesh(inputs[0], faces, inputs[1], inputs[2], inputs[3], width, height, sigma=sigma,
                             backend=backend)
        loss = (out["soft_mask"] * w_soft).sum() + (out["attrs"] * w_attrs).sum() + out["depth"].sum()
        loss.backward()
        results[backend] = ({k: v.detach() for k, v in out.items()}, [t.grad for t in inputs])
    return results["torch"], results["triton"]


def assert_grads_close(ref, got, names=("verts", "attrs", "viewmats", "Ks"), abs_tol=1e-6):
    """``abs_tol`` is relative to the largest entry: camera gradients sum over every pixel, and on a GPU both
    paths sum in an arbitrary (atomic) order, so their rounding grows with the pixel count."""
    for name, r, k in zip(names, ref, got):
        scale = r.abs().max()
        assert scale > 0, name
        err = (k - r).abs()
        assert (err <= 1e-4 * r.abs() + abs_tol * scale).all(), (name, float(err.max()), float(scale))


def assert_same_outputs(ref, got):
    for k in HARD_KEYS:
        assert torch.equal(ref[k], got[k]), k
    assert (ref["soft_mask"] - got["soft_mask"]).abs().max() <= 1e-5


def test_log_half_erfc_accuracy():
    z = torch.linspace(-9.0, 9.0, 36001, device=DEVICE)
    log_q, ratio = (t.double().cpu() for t in mesh_raster.log_half_erfc(z))
    z = z.double().cpu()
    erfc = torch.special.erfc(z)
    ref_log_q = torch.log(erfc / 2)
    ref_ratio = torch.exp(-z * z) / erfc
    # Relative error of erfc itself (~1.2e-7 for the fit, plus float32 rounding) and of exp(-z^2) / erfc(z).
    assert ((log_q - ref_log_q).abs() <= 1e-6 * ref_log_q.abs() + 5e-7).all()
    assert ((ratio - ref_ratio).abs() <= 1e-5 * ref_ratio).all()
    # Deep inside a face erfc underflows float32 long before the clamp at 9; the log form stays finite.
    assert torch.isfinite(log_q).all() and log_q.min() < -80


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zbuffer_keys_bit_identical(seed):
    verts, faces, _, viewmats, Ks = _to(soup_scene(seed), DEVICE)
    B, F = verts.shape[0], faces.shape[0]
    uvz = _corner_uvz(verts, faces, viewmats, Ks)
    ref = normalized_torch_keys(uvz, B, F, W, H)
    got = kernel_keys(uvz, B, F, W, H)
    covered = ref != mesh_mod._KEY_EMPTY
    assert covered.float().mean() > 0.3 and (~covered).any()
    assert torch.equal(got, ref)


def test_zbuffer_edges_through_pixel_centres():
    """A square split along a diagonal through pixel centres, tilted in depth: the inside tolerance covers both
    triangles there (no crack), and the z-test picks the same one as the twin."""
    viewmats, Ks = _cameras(1, W, H, 20.0)
    K = Ks[0].double()
    uv = torch.tensor([[2.0, 2.0], [14.0, 2.0], [14.0, 14.0], [2.0, 14.0]], dtype=torch.float64)
    z = torch.tensor([3.0, 3.4, 2.7, 3.1], dtype=torch.float64)
    xyz = torch.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z], -1)
    verts = xyz.float()[None].to(DEVICE)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]], device=DEVICE)
    uvz = _corner_uvz(verts, faces, viewmats.to(DEVICE), Ks.to(DEVICE))
    ref = normalized_torch_keys(uvz, 1, 2, W, H)
    got = kernel_keys(uvz, 1, 2, W, H)
    assert torch.equal(got, ref)
    covered = (ref != mesh_mod._KEY_EMPTY).view(H, W)
    expected = torch.zeros(H, W, dtype=torch.bool)
    expected[2:14, 2:14] = True
    assert torch.equal(covered.cpu(), expected)


def test_zbuffer_big_faces_without_bands(monkeypatch):
    """The twin splits big boxes into bands with their own float32 plane origin; the kernel does not band. The
    visible faces agree except within float32 rounding of an edge or a depth tie (none in this scene)."""
    verts, faces, _, viewmats, Ks = _to(soup_scene(3), DEVICE)
    B, F = verts.shape[0], faces.shape[0]
    uvz = _corner_uvz(verts, faces, viewmats, Ks)
    got = kernel_keys(uvz, B, F, W, H)
    monkeypatch.setattr(mesh_mod, "_MAX_BOX", 7)
    ref = normalized_torch_keys(uvz, B, F, W, H)
    same_face = (got & 0xFFFFFFFF) == (ref & 0xFFFFFFFF)
    assert same_face.float().mean() >= 0.9999
    assert torch.equal(got >= mesh_mod._KEY_COVERED_MAX, ref >= mesh_mod._KEY_COVERED_MAX)


@pytest.mark.parametrize("sigma", [0.5, 2.0])
@pytest.mark.parametrize("seed", [0, 4])
def test_rasterize_triton_matches_torch(seed, sigma):
    ref, got = run_both(soup_scene(seed, collinear=False), W, H, sigma)
    assert_same_outputs(ref[0], got[0])
    assert ref[0]["soft_mask"].max() > 0.9 and ref[0]["soft_mask"].min() < 0.5
    assert_grads_close(ref[1], got[1])


def test_small_tiles_loop_over_windows(monkeypatch):
    """Tiles smaller than the windows: several programs, and several blocks per window."""
    if DEVICE == "cpu":
        monkeypatch.setattr(mesh_raster, "_INTERPRETER_FACES", 8)
        monkeypatch.setattr(mesh_raster, "_INTERPRETER_BLOCK", 32)
    else:
        monkeypatch.setattr(mesh_raster, "_Z_FACES", 4)
        monkeypatch.setattr(mesh_raster, "_SOFT_FACES", 4)
    ref, got = run_both(sphere_scene(1, 16, 4, 6), 16, 16, 1.0)
    assert_same_outputs(ref[0], got[0])
    assert_grads_close(ref[1], got[1])


def _two_triangles():
    """A ~10 px triangle in the middle of the image and one across its left border, one camera."""
    viewmats, Ks = _cameras(1, W, H, 0.9 * W)
    uv = torch.tensor([[12.3, 8.1], [22.6, 10.4], [15.2, 18.7], [-4.2, 3.3], [6.1, 5.2], [1.4, 15.9]])
    z = torch.tensor([2.0, 2.3, 1.8, 2.5, 2.5, 2.2])
    K = Ks[0]
    xyz = torch.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z, z], -1)
    return xyz[None], torch.tensor([[0, 1, 2], [3, 4, 5]]), viewmats, Ks


def test_soft_mask_gradient_against_finite_differences():
    """The kernel's backward against central differences of its own forward (float32: coarse step, loose check)."""
    verts, faces, viewmats, Ks = _to(_two_triangles(), DEVICE)
    w = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(2)).to(DEVICE)

    def loss(v):
        out = rasterize_mesh(v, faces, None, viewmats, Ks, W, H, sigma=2.0, backend="triton")
        return (out["soft_mask"] * w).sum()

    v = verts.detach().clone().requires_grad_(True)
    loss(v).backward()
    eps = 1e-3
    for i in (1, 4):
        for c in range(3):
            dv = torch.zeros_like(verts)
            dv[0, i, c] = eps
            with torch.no_grad():
                fd = (loss(verts + dv) - loss(verts - dv)).item() / (2 * eps)
            assert abs(v.grad[0, i, c].item() - fd) <= 1e-2 * abs(fd) + 1e-2, (i, c, v.grad[0, i, c].item(), fd)
        assert v.grad[0, i].abs().max() > 0.1


def test_backend_argument():
    scene = _to(soup_scene(7, B=1, n_tris=10), DEVICE)
    verts, faces, attrs, viewmats, Ks = scene
    with pytest.raises(ValueError):
        rasterize_mesh(verts, faces, attrs, viewmats, Ks, W, H, backend="cuda")
    # float64 inputs: "auto" keeps the exact twin; "triton" computes in float32 and returns float64.
    v64 = verts.double().requires_grad_(True)
    out = rasterize_mesh(v64, faces, attrs.double(), viewmats.double(), Ks.double(), W, H, backend="triton")
    ref = rasterize_mesh(verts.double(), faces, attrs.double(), viewmats.double(), Ks.double(), W, H,
                         backend="torch")
    assert out["soft_mask"].dtype == torch.float64
    assert (out["soft_mask"] - ref["soft_mask"]).abs().max() < 1e-5
    out["soft_mask"].sum().backward()
    assert v64.grad.dtype == torch.float64 and torch.isfinite(v64.grad).all()


def test_no_faces_and_all_offscreen():
    verts, faces, attrs, viewmats, Ks = _to(soup_scene(8, B=2, n_tris=10), DEVICE)
    for f in (faces[:0], faces[4:5]):  # no faces; a face off-screen to the right
        v = verts.detach().clone().requires_grad_(True)
        out = rasterize_mesh(v, f, attrs, viewmats, Ks, W, H, backend="triton")
        assert (out["face_ids"] == -1).all() and (out["soft_mask"] == 0).all()
        if out["soft_mask"].requires_grad:
            out["soft_mask"].sum().backward()
            assert (v.grad == 0).all()


@pytest.mark.cuda
def test_cuda_auto_picks_triton(monkeypatch):
    calls = []
    zbuffer = mesh_raster.zbuffer
    monkeypatch.setattr(mesh_raster, "zbuffer", lambda *a, **k: calls.append(1) or zbuffer(*a, **k))
    verts, faces, attrs, viewmats, Ks = _to(soup_scene(0), "cuda")
    rasterize_mesh(verts, faces, attrs, viewmats, Ks, W, H)
    assert calls


@pytest.mark.cuda
@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_cuda_sphere_matches_torch(sigma):
    """A 20k-face sphere at 128^2, B = 2: keys bit-identical, outputs and gradients as on the small scenes."""
    scene = sphere_scene(2, 128, 101, 100)
    verts, faces, _, viewmats, Ks = _to(scene, "cuda")
    assert faces.shape[0] >= 19_000
    uvz = _corner_uvz(verts, faces, viewmats, Ks)
    ref_keys = normalized_torch_keys(uvz, 2, faces.shape[0], 128, 128)
    assert torch.equal(kernel_keys(uvz, 2, faces.shape[0], 128, 128), ref_keys)
    ref, got = run_both(scene, 128, 128, sigma, device="cuda")
    assert_same_outputs(ref[0], got[0])
    assert_grads_close(ref[1], got[1])


@pytest.mark.cuda
def test_cuda_soup_at_larger_size(monkeypatch):
    """500 random faces of all sizes at 256 x 192; the twin's bands are switched off so the keys are exact."""
    monkeypatch.setattr(mesh_mod, "_MAX_BOX", 1 << 30)
    scene = soup_scene(9, B=2, n_tris=500, width=256, height=192, collinear=False)
    ref, got = run_both(scene, 256, 192, 1.0, device="cuda")
    assert_same_outputs(ref[0], got[0])
    assert_grads_close(ref[1], got[1], abs_tol=1e-5)
