"""CPU tests of cgha.render.gaussians (the pure-PyTorch twin) against an independent dense float64 reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import cgha.render.gaussians as gaussians_module
from cgha.render.gaussians import rasterize_gaussians

NEAR = 0.01


# ------------------------------------------------------------------------------------------------------------
# Dense reference: every Gaussian x every pixel, numpy float64, written from gsplat 1.5.3's kernels
# (ProjectionEWA3DGSFused.cu + persp_proj/add_blur, RasterizeToPixels3DGSFwd.cu), sharing no code with cgha/.
# ------------------------------------------------------------------------------------------------------------


def _quat_to_rotmat(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def _reference_project(mean, quat, scale, opacity, viewmat, K, width, height):
    """One Gaussian: (mean2d, conic 2x2, depth, (rx, ry)) or None when gsplat culls it."""
    p = viewmat[:3, :3] @ mean + viewmat[:3, 3]
    x, y, z = p
    if z < NEAR or z > 1e10:
        return None
    rot = _quat_to_rotmat(quat)
    cov = viewmat[:3, :3] @ rot @ np.diag(scale**2) @ rot.T @ viewmat[:3, :3].T
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = z * min((width - cx) / fx + 0.3 * tan_x, max(-(cx / fx + 0.3 * tan_x), x / z))
    ty = z * min((height - cy) / fy + 0.3 * tan_y, max(-(cy / fy + 0.3 * tan_y), y / z))
    J = np.array([[fx / z, 0.0, -fx * tx / z**2], [0.0, fy / z, -fy * ty / z**2]])
    cov2d = J @ cov @ J.T + 0.3 * np.eye(2)
    if np.linalg.det(cov2d) <= 0:
        return None
    if opacity < 1.0 / 255.0:
        return None
    extend = min(3.33, math.sqrt(2.0 * math.log(opacity * 255.0)))
    rx, ry = math.ceil(extend * math.sqrt(cov2d[0, 0])), math.ceil(extend * math.sqrt(cov2d[1, 1]))
    if rx <= 0 and ry <= 0:
        return None
    mean2d = np.array([fx * x / z + cx, fy * y / z + cy])
    if mean2d[0] + rx <= 0 or mean2d[0] - rx >= width or mean2d[1] + ry <= 0 or mean2d[1] - ry >= height:
        return None
    return mean2d, np.linalg.inv(cov2d), z, (rx, ry)


def reference_render(means, quats, scales, opacities, features, viewmats, Ks, width, height, backgrounds=None):
    """Dense float64 render with the kernel's loop: returns dict of numpy arrays and the number of stops."""
    args = [t.detach().double().numpy() for t in (means, quats, scales, opacities, features, viewmats, Ks)]
    means, quats, scales, opacities, features, viewmats, Ks = args
    B, N, C = features.shape
    bgs = np.zeros((B, C)) if backgrounds is None else backgrounds.detach().double().numpy()
    v, u = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    px, py = (u + 0.5).reshape(-1), (v + 0.5).reshape(-1)
    images, alphas, depths, radii, stops = [], [], [], np.zeros((B, N), dtype=np.int64), 0
    for b in range(B):
        projected = []
        for n in range(N):
            out = _reference_project(means[b, n], quats[b, n], scales[b, n], opacities[b, n], viewmats[b], Ks[b],
                                     width, height)
            if out is not None:
                projected.append((out[2], n, out))
                radii[b, n] = max(out[3])
        projected.sort(key=lambda item: (item[0], item[1]))  # front to back, ties by index
        T = np.ones(px.shape)
        done = np.zeros(px.shape, dtype=bool)
        img = np.zeros((px.size, C))
        dep = np.zeros(px.size)
        for _, n, (mean2d, conic, z, _) in projected:
            dx, dy = mean2d[0] - px, mean2d[1] - py
            sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
            alpha = np.minimum(0.999, opacities[b, n] * np.exp(-sigma))
            valid = ~done & (sigma >= 0) & (alpha >= 1.0 / 255.0)
            next_T = T * (1.0 - alpha)
            stop = valid & (next_T <= 1e-4)
            stops += int(stop.sum())
            done |= stop
            use = valid & ~stop
            w = np.where(use, alpha * T, 0.0)
            img += w[:, None] * features[b, n][None, :]
            dep += w * z
            T = np.where(use, next_T, T)
        img += T[:, None] * bgs[b][None, :]
        images.append(img.reshape(height, width, C).transpose(2, 0, 1))
        alphas.append((1.0 - T).reshape(1, height, width))
        depths.append(dep.reshape(1, height, width))
    return {
        "image": np.stack(images),
        "alpha": np.stack(alphas),
        "depth": np.stack(depths),
        "radii": radii,
        "stops": stops,
    }


# ------------------------------------------------------------------------------------------------------------
# Scenes
# ------------------------------------------------------------------------------------------------------------


def _look_at(eye, target, generator):
    """World-to-camera (OpenCV) matrix of a camera at ``eye`` looking at ``target`` with a random roll."""
    forward = target - eye
    forward = forward / forward.norm()
    up = torch.randn(3, generator=generator, dtype=torch.float64)
    right = torch.linalg.cross(forward, up)
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    R = torch.stack([right, down, forward])  # rows: camera axes in world coordinates
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = R
    view[:3, 3] = -R @ eye
    return view


def random_scene(B, N, C, width=24, height=20, seed=0, dtype=torch.float64):
    """Random Gaussians in camera-relative positions that cover the hard cases.

    Per batch element: a cluster in front of the camera, Gaussians behind it, some straddling the near plane,
    huge ones (covering the image), tiny ones, ones far outside the field of view (Jacobian clamp), near-opaque
    ones (alpha clamp and early stop) and ones below the 1/255 opacity cut-off.
    """
    g = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    means, quats, scales, opacities, viewmats, Ks = [], [], [], [], [], []
    for _ in range(B):
        eye = torch.randn(3, generator=g, dtype=torch.float64)
        eye = 2.0 * eye / eye.norm()
        view = _look_at(eye, torch.zeros(3, dtype=torch.float64), g)
        kind = torch.arange(N) % 8
        # Camera-space positions, then mapped to world with the inverse view.
        cam = torch.empty(N, 3, dtype=torch.float64)
        cam[:, :2] = (rand(N, 2) - 0.5) * 0.8
        cam[:, 2] = 1.5 + rand(N)
        scale = torch.exp(math.log(0.01) + rand(N, 3) * math.log(10.0))  # 0.01 .. 0.1
        opac = 0.05 + 0.9 * rand(N)
        behind = kind == 1
        cam[behind, 2] = -0.5 - rand(int(behind.sum()))
        straddle = kind == 2
        cam[straddle, 2] = 0.002 + 0.03 * rand(int(straddle.sum()))
        scale[straddle] = 0.02
        huge = kind == 3
        scale[huge] = 0.6 + rand(int(huge.sum()), 3)
        opac[huge] = 0.3
        tiny = kind == 4
        scale[tiny] = 1e-5
        outside = kind == 5
        cam[outside, 0] = 2.5 * torch.sign(rand(int(outside.sum())) - 0.5) * cam[outside, 2]
        scale[outside] = 0.3
        opaque = kind == 6
        opac[opaque] = 0.9995
        scale[opaque] = 0.15
        faint = kind == 7
        opac[faint[:]] = torch.where(torch.arange(int(faint.sum())) % 2 == 0, 0.003, 0.02).double()
        R = view[:3, :3]
        world = (cam - view[:3, 3]) @ R  # R^T (cam - t)
        means.append(world)
        quats.append(torch.randn(N, 4, generator=g, dtype=torch.float64))
        scales.append(scale)
        opacities.append(opac)
        viewmats.append(view)
        f = 1.2 * width * (0.8 + 0.4 * rand(1)).item()
        Ks.append(torch.tensor([[f, 0.0, 0.45 * width], [0.0, 1.1 * f, 0.55 * height], [0.0, 0.0, 1.0]],
                               dtype=torch.float64))
    features = rand(B, N, C)
    backgrounds = rand(B, C)
    tensors = [torch.stack(means), torch.stack(quats), torch.stack(scales), torch.stack(opacities), features,
               torch.stack(viewmats), torch.stack(Ks)]
    tensors = [t.to(dtype) for t in tensors]
    return tensors, backgrounds.to(dtype)


def _render(tensors, width, height, backgrounds=None, **kwargs):
    return rasterize_gaussians(*tensors, width, height, backgrounds=backgrounds, backend="torch", **kwargs)


# ------------------------------------------------------------------------------------------------------------
# Tests
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("B,C,seed", [(1, 1, 0), (1, 3, 1), (3, 32, 2), (3, 3, 3), (1, 32, 4)])
def test_twin_matches_dense_reference(B, C, seed):
    width, height = 24, 20
    tensors, bgs = random_scene(B, 48, C, width, height, seed=seed)
    out = _render(tensors, width, height, backgrounds=bgs)
    ref = reference_render(*tensors, width, height, backgrounds=bgs)
    assert out["image"].shape == (B, C, height, width)
    assert out["alpha"].shape == (B, 1, height, width)
    assert out["depth"].shape == (B, 1, height, width)
    assert out["radii"].shape == (B, 48) and out["radii"].dtype == torch.int32
    assert out["means2d"].shape == (B, 48, 2)
    np.testing.assert_array_equal(out["radii"].numpy(), ref["radii"])
    for key in ("image", "alpha", "depth"):
        np.testing.assert_allclose(out[key].detach().numpy(), ref[key], atol=1e-9, rtol=0, err_msg=key)
    # The scene must exercise what it is meant to: culled and drawn Gaussians, the early stop.
    assert (ref["radii"] == 0).any() and (ref["radii"] > 0).any()


def test_scenes_exercise_the_stop_rule_and_the_alpha_clamp():
    tensors, bgs = random_scene(3, 48, 3, seed=2)
    ref = reference_render(*tensors, 24, 20, backgrounds=bgs)
    assert ref["stops"] > 0
    assert (ref["alpha"] > 1 - 1e-3).any()


def test_twin_float32_matches_reference():
    width, height = 24, 20
    tensors, bgs = random_scene(2, 48, 4, width, height, seed=5)
    out = _render([t.float() for t in tensors], width, height, backgrounds=bgs.float())
    ref = reference_render(*tensors, width, height, backgrounds=bgs)
    for key in ("image", "alpha"):
        np.testing.assert_allclose(out[key].detach().double().numpy(), ref[key], atol=2e-4, rtol=0, err_msg=key)


def test_chunked_enumeration_gives_the_same_image(monkeypatch):
    tensors, bgs = random_scene(2, 48, 3, seed=6)
    full = _render(tensors, 24, 20, backgrounds=bgs)
    monkeypatch.setattr(gaussians_module, "_MAX_CANDIDATES", 37)  # splits boxes across chunks
    chunked = _render(tensors, 24, 20, backgrounds=bgs)
    for key in ("image", "alpha", "depth"):
        torch.testing.assert_close(chunked[key], full[key], atol=1e-12, rtol=0)


def test_single_isotropic_gaussian_matches_analytic():
    width, height, f, z, s, o = 32, 28, 90.0, 2.0, 0.06, 0.8
    cx, cy = 15.3, 13.9
    means = torch.tensor([[[0.0, 0.0, z]]], dtype=torch.float64)
    quats = torch.tensor([[[0.3, -0.2, 0.5, 0.7]]], dtype=torch.float64)  # irrelevant for isotropic scales
    scales = torch.full((1, 1, 3), s, dtype=torch.float64)
    opac = torch.tensor([[o]], dtype=torch.float64)
    feats = torch.tensor([[[0.25, 1.0]]], dtype=torch.float64)
    view = torch.eye(4, dtype=torch.float64)[None]
    K = torch.tensor([[[f, 0, cx], [0, f, cy], [0, 0, 1]]], dtype=torch.float64)
    bg = torch.tensor([[0.5, 0.1]], dtype=torch.float64)
    out = rasterize_gaussians(means, quats, scales, opac, feats, view, K, width, height, backgrounds=bg,
                              backend="torch")

    var = (f * s / z) ** 2 + 0.3  # EWA: J J^T = (f/z)^2 I on the optical axis, plus the 0.3 px^2 low-pass
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64),
                          indexing="ij")
    d2 = (u + 0.5 - cx) ** 2 + (v + 0.5 - cy) ** 2
    alpha = o * torch.exp(-0.5 * d2 / var)
    alpha = torch.where(alpha >= 1 / 255, alpha, torch.zeros_like(alpha))
    expected = alpha[None] * feats[0, 0, :, None, None] + (1 - alpha[None]) * bg[0, :, None, None]
    torch.testing.assert_close(out["image"][0], expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(out["alpha"][0, 0], alpha, atol=1e-12, rtol=0)
    torch.testing.assert_close(out["depth"][0, 0], z * alpha, atol=1e-12, rtol=0)
    radius = math.ceil(math.sqrt(2 * math.log(255 * o)) * math.sqrt(var))
    assert int(out["radii"][0, 0]) == radius
    torch.testing.assert_close(out["means2d"][0, 0], torch.tensor([cx, cy], dtype=torch.float64))
    assert (alpha == 0).any() and (alpha > 0.5).any()  # both the footprint and the cut-off are visible


def test_alpha_clamp_is_0999_and_cuts_the_gradient():
    means = torch.tensor([[[0.0, 0.0, 1.0]]])
    quats = torch.tensor([[[1.0, 0.0, 0.0, 0.0]]])
    scales = torch.full((1, 1, 3), 2.0)  # ~40 px wide: opacity * exp(-sigma) > 0.999 near the centre
    opac = torch.full((1, 1), 0.99995, requires_grad=True)
    K = torch.tensor([[[20.0, 0, 4], [0, 20.0, 4], [0, 0, 1]]])
    out = rasterize_gaussians(means, quats, scales, opac, torch.ones(1, 1, 1), torch.eye(4)[None], K, 8, 8,
                              backend="torch")
    centre = out["alpha"][..., 3:5, 3:5]
    torch.testing.assert_close(centre, torch.full_like(centre, 0.999), atol=1e-6, rtol=0)
    assert out["alpha"].max().item() == pytest.approx(0.999, abs=1e-6)
    centre.sum().backward()
    assert opac.grad.item() == 0.0


def test_alpha_and_background_weights_sum_to_one():
    width, height = 24, 20
    tensors, _ = random_scene(2, 48, 1, width, height, seed=7)
    means, quats, scales, opac, _, view, K = tensors
    B, N = opac.shape
    ones, zeros = torch.ones(B, N, 1, dtype=torch.float64), torch.zeros(B, N, 1, dtype=torch.float64)
    bg_one, bg_zero = torch.ones(B, 1, dtype=torch.float64), torch.zeros(B, 1, dtype=torch.float64)
    fg = rasterize_gaussians(means, quats, scales, opac, ones, view, K, width, height, bg_zero, backend="torch")
    bg = rasterize_gaussians(means, quats, scales, opac, zeros, view, K, width, height, bg_one, backend="torch")
    torch.testing.assert_close(fg["image"], fg["alpha"], atol=1e-12, rtol=0)
    torch.testing.assert_close(bg["image"], 1 - bg["alpha"], atol=1e-12, rtol=0)
    torch.testing.assert_close(fg["image"] + bg["image"], torch.ones_like(fg["image"]), atol=1e-12, rtol=0)
    assert (fg["alpha"] > 0).any() and (fg["alpha"] < 1).all()
    # Depth is the alpha-weighted camera z: between alpha * z_min and alpha * z_max of the drawn Gaussians.
    assert (fg["depth"] >= 0).all() and (fg["depth"] <= fg["alpha"] * 3.0).all()


def test_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(11)
    B, N, C, size = 1, 3, 2, 8
    means = torch.tensor([[[0.02, 0.01, 1.0], [-0.03, 0.02, 1.1], [0.0, -0.02, 1.05]]], dtype=torch.float64)
    quats = torch.randn(B, N, 4, generator=g, dtype=torch.float64)
    scales = torch.tensor([[[0.03, 0.02, 0.025], [0.02, 0.035, 0.03], [0.025, 0.025, 0.02]]], dtype=torch.float64)
    opac = torch.tensor([[0.7, 0.5, 0.6]], dtype=torch.float64)
    feats = torch.rand(B, N, C, generator=g, dtype=torch.float64)
    bg = torch.rand(B, C, generator=g, dtype=torch.float64)
    view = torch.eye(4, dtype=torch.float64)[None]
    K = torch.tensor([[[40.0, 0, 4.1], [0, 40.0, 3.9], [0, 0, 1]]], dtype=torch.float64)

    def fn(means, quats, scales, opac, feats, bg):
        out = rasterize_gaussians(means, quats, scales, opac, feats, view, K, size, size, bg, backend="torch")
        return out["image"], out["alpha"], out["depth"]

    inputs = tuple(t.clone().requires_grad_(True) for t in (means, quats, scales, opac, feats, bg))
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
    image = fn(*inputs)[0]
    assert image.shape == (1, C, size, size)


def test_means2d_gradient_is_available_for_densification():
    tensors, bgs = random_scene(2, 48, 3, seed=8)
    tensors[0].requires_grad_(True)
    out = _render(tensors, 24, 20, backgrounds=bgs)
    out["means2d"].retain_grad()
    out["image"].sum().backward()
    grad = out["means2d"].grad
    drawn = out["radii"] > 0
    assert grad is not None and grad.shape == (2, 48, 2)
    assert (grad[~drawn] == 0).all()
    assert grad[drawn].abs().sum() > 0


def test_zero_gaussians_return_background():
    B, C, width, height = 2, 5, 7, 6
    bg = torch.rand(B, C, requires_grad=True)
    empty = torch.zeros(B, 0, 3)
    out = rasterize_gaussians(empty, torch.zeros(B, 0, 4), torch.zeros(B, 0, 3), torch.zeros(B, 0),
                              torch.zeros(B, 0, C), torch.eye(4).expand(B, 4, 4), torch.eye(3).expand(B, 3, 3),
                              width, height, backgrounds=bg)
    torch.testing.assert_close(out["image"], bg[:, :, None, None].expand(B, C, height, width))
    assert (out["alpha"] == 0).all() and (out["depth"] == 0).all()
    assert out["radii"].shape == (B, 0) and out["means2d"].shape == (B, 0, 2)
    out["image"].sum().backward()
    torch.testing.assert_close(bg.grad, torch.full((B, C), float(width * height)))


def test_empty_image_when_everything_is_behind_the_camera():
    width, height = 16, 12
    tensors, bgs = random_scene(2, 24, 3, width, height, seed=9)
    means, quats, scales, opac, feats, view, K = tensors
    flipped = view.clone()
    flipped[:, 2, :] *= -1  # z -> -z: everything in front is now behind (and vice versa)
    flipped[:, 2, 3] = flipped[:, 2, 3] - 10.0  # and push the rest behind too
    out = rasterize_gaussians(means, quats, scales, opac, feats, flipped, K, width, height, bgs, backend="torch")
    assert (out["radii"] == 0).all()
    torch.testing.assert_close(out["image"], bgs[:, :, None, None].expand(2, 3, height, width))
    assert (out["alpha"] == 0).all() and (out["depth"] == 0).all()
    off_screen = view.clone()
    off_screen[:, 0, 3] += 100.0  # everything far to the right of the image
    out = rasterize_gaussians(means, quats, scales, opac, feats, off_screen, K, width, height, bgs, backend="torch")
    assert (out["radii"] == 0).all() and (out["alpha"] == 0).all()


NAMES = ["means", "quats", "scales", "opacities", "features", "viewmats", "Ks", "backgrounds"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_inputs_raise_value_error_naming_the_argument(name, bad):
    tensors, bgs = random_scene(1, 8, 3, seed=10)
    args = dict(zip(NAMES, tensors + [bgs]))
    args[name] = args[name].clone()
    args[name].view(-1)[1] = bad
    with pytest.raises(ValueError, match=name):
        rasterize_gaussians(args["means"], args["quats"], args["scales"], args["opacities"], args["features"],
                            args["viewmats"], args["Ks"], 24, 20, backgrounds=args["backgrounds"])


def test_bad_shapes_and_arguments_raise_value_error():
    tensors, bgs = random_scene(2, 8, 3, seed=12)
    means, quats, scales, opac, feats, view, K = tensors
    with pytest.raises(ValueError, match="viewmats"):
        rasterize_gaussians(means, quats, scales, opac, feats, view[:1], K, 24, 20)
    with pytest.raises(ValueError, match="Ks"):
        rasterize_gaussians(means, quats, scales, opac, feats, view, K[:, :2], 24, 20)
    with pytest.raises(ValueError, match="backgrounds"):
        rasterize_gaussians(means, quats, scales, opac, feats, view, K, 24, 20, backgrounds=bgs[:, :2])
    with pytest.raises(ValueError, match="opacities"):
        rasterize_gaussians(means, quats, scales, opac[..., None], feats, view, K, 24, 20)
    with pytest.raises(ValueError, match="quats"):
        rasterize_gaussians(means, quats[:1], scales, opac, feats, view, K, 24, 20)
    with pytest.raises(ValueError, match="C >= 1"):
        rasterize_gaussians(means, quats, scales, opac, feats[..., :0], view, K, 24, 20)
    with pytest.raises(ValueError, match="dtype"):
        rasterize_gaussians(means, quats, scales, opac, feats.float(), view, K, 24, 20)
    with pytest.raises(ValueError, match="width"):
        rasterize_gaussians(means, quats, scales, opac, feats, view, K, 0, 20)
    with pytest.raises(ValueError, match="backend"):
        rasterize_gaussians(means, quats, scales, opac, feats, view, K, 24, 20, backend="cuda")
    with pytest.raises(ValueError, match="CUDA"):
        rasterize_gaussians(means, quats, scales, opac, feats, view, K, 24, 20, backend="gsplat")


def test_auto_backend_uses_torch_on_cpu():
    tensors, bgs = random_scene(1, 16, 3, seed=13)
    auto = rasterize_gaussians(*tensors, 24, 20, backgrounds=bgs)
    twin = _render(tensors, 24, 20, backgrounds=bgs)
    torch.testing.assert_close(auto["image"], twin["image"], atol=0, rtol=0)
