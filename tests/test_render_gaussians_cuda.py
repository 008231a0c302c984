"""GPU tests: the gsplat backend of cgha.render.gaussians against the pure-PyTorch twin (float64 on the GPU)."""
from __future__ import annotations

import math

import pytest
import torch

from cgha.render.gaussians import gsplat_available, rasterize_gaussians

pytestmark = pytest.mark.cuda

C = 32
KEYS = ("means", "quats", "scales", "opacities", "features")


def _require_gsplat():
    if not gsplat_available():
        pytest.skip("gsplat does not import")


def head_scene(B, N, width, height, seed):
    """GHA-like Gaussians: a ~0.25-unit head-sized blob about 1 unit in front of B different cameras."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(B, N, 3, generator=g)
    means = 0.12 * means / means.norm(dim=-1, keepdim=True) + 0.01 * torch.randn(B, N, 3, generator=g)
    quats = torch.randn(B, N, 4, generator=g)
    scales = torch.exp(math.log(1e-3) + torch.rand(B, N, 3, generator=g) * math.log(10.0))
    opacities = 0.05 + 0.95 * torch.rand(B, N, generator=g)
    features = torch.rand(B, N, C, generator=g)
    backgrounds = torch.rand(B, C, generator=g)
    viewmats = torch.eye(4).repeat(B, 1, 1)
    for b in range(B):
        angle = 0.6 * (b - (B - 1) / 2)  # cameras on an arc around the head
        c, s = math.cos(angle), math.sin(angle)
        viewmats[b, :3, :3] = torch.tensor([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])
        viewmats[b, 2, 3] = 1.0
    f = 2.5 * width
    Ks = torch.tensor([[f, 0.0, 0.5 * width + 0.3], [0.0, f, 0.5 * height - 0.2], [0.0, 0.0, 1.0]]).repeat(B, 1, 1)
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, features=features,
                viewmats=viewmats, Ks=Ks, backgrounds=backgrounds)


def _run(scene, backend, dtype, width, height, seed):
    """Render, backprop a fixed random linear loss of image/alpha/depth; return outputs and gradients."""
    device = torch.device("cuda")
    t = {k: v.to(device=device, dtype=dtype) for k, v in scene.items()}
    for k in KEYS + ("backgrounds",):
        t[k].requires_grad_(True)
    out = rasterize_gaussians(t["means"], t["quats"], t["scales"], t["opacities"], t["features"], t["viewmats"],
                              t["Ks"], width, height, backgrounds=t["backgrounds"], backend=backend)
    out["means2d"].retain_grad()
    g = torch.Generator().manual_seed(seed)  # same weights for both backends: drawn in float32 on the CPU
    loss = sum(
        (out[k] * torch.rand(out[k].shape, generator=g).to(device=device, dtype=dtype)).sum()
        for k in ("image", "alpha", "depth")
    )
    loss.backward()
    grads = {k: t[k].grad.double() for k in KEYS + ("backgrounds",)}
    grads["means2d"] = out["means2d"].grad.double()
    return {k: v.detach() for k, v in out.items()}, grads


def psnr(a, b, peak=1.0):
    mse = ((a.double() - b.double()) ** 2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(peak**2 / mse)


def cosine(a, b):
    return torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).item()


@pytest.mark.parametrize("B", [1, 4])
def test_gsplat_matches_torch_twin(B):
    _require_gsplat()
    width, height, N = 128, 112, 4000
    scene = head_scene(B, N, width, height, seed=B)
    out_g, grad_g = _run(scene, "gsplat", torch.float32, width, height, seed=0)
    out_t, grad_t = _run(scene, "torch", torch.float64, width, height, seed=0)

    assert out_g["image"].shape == out_t["image"].shape == (B, C, height, width)
    assert psnr(out_g["image"], out_t["image"]) > 60
    assert psnr(out_g["alpha"], out_t["alpha"]) > 60
    assert psnr(out_g["depth"], out_t["depth"], peak=1.2) > 60
    drawn = out_t["radii"] > 0
    assert drawn.float().mean() > 0.9
    assert (out_g["radii"] == out_t["radii"]).float().mean() > 0.999
    torch.testing.assert_close(out_g["means2d"][drawn].double(), out_t["means2d"][drawn], atol=1e-3, rtol=0)
    for key in KEYS + ("backgrounds", "means2d"):
        assert cosine(grad_g[key], grad_t[key]) > 0.99, key


def test_auto_backend_uses_gsplat_on_cuda_float32():
    _require_gsplat()
    scene = head_scene(2, 500, 64, 48, seed=7)
    t = {k: v.cuda() for k, v in scene.items()}
    args = (t["means"], t["quats"], t["scales"], t["opacities"], t["features"], t["viewmats"], t["Ks"], 64, 48)
    auto = rasterize_gaussians(*args, backgrounds=t["backgrounds"])
    direct = rasterize_gaussians(*args, backgrounds=t["backgrounds"], backend="gsplat")
    torch.testing.assert_close(auto["image"], direct["image"], atol=0, rtol=0)


def test_gsplat_any_channel_count_and_no_background():
    _require_gsplat()
    scene = head_scene(2, 500, 64, 48, seed=8)
    for channels in (1, 3, 7):
        t = {k: v.cuda() for k, v in scene.items()}
        t["features"] = t["features"][..., :channels].contiguous()
        args = (t["means"], t["quats"], t["scales"], t["opacities"], t["features"], t["viewmats"], t["Ks"], 64, 48)
        out_g = rasterize_gaussians(*args, backend="gsplat")
        out_t = rasterize_gaussians(*args, backend="torch")
        assert out_g["image"].shape == (2, channels, 48, 64)
        assert psnr(out_g["image"], out_t["image"]) > 60


def test_gsplat_empty_scenes_return_background():
    _require_gsplat()
    scene = head_scene(2, 300, 64, 48, seed=10)
    t = {k: v.cuda() for k, v in scene.items()}
    expected = t["backgrounds"][:, :, None, None].expand(2, C, 48, 64)
    behind = t["viewmats"].clone()
    behind[:, 2, 3] = -5.0  # the head is 5 units behind both cameras
    for n, views in ((300, behind), (0, t["viewmats"])):
        out = rasterize_gaussians(t["means"][:, :n], t["quats"][:, :n], t["scales"][:, :n], t["opacities"][:, :n],
                                  t["features"][:, :n], views, t["Ks"], 64, 48, backgrounds=t["backgrounds"],
                                  backend="gsplat")
        torch.testing.assert_close(out["image"], expected)
        assert (out["alpha"] == 0).all() and (out["radii"] == 0).all() and out["radii"].shape == (2, n)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("name", ["means", "scales", "opacities", "features", "Ks", "backgrounds"])
def test_gsplat_nonfinite_inputs_raise_value_error(name, value):
    _require_gsplat()
    scene = head_scene(1, 100, 32, 32, seed=9)
    t = {k: v.cuda() for k, v in scene.items()}
    t[name].view(-1)[3] = value
    with pytest.raises(ValueError, match=name):
        rasterize_gaussians(t["means"], t["quats"], t["scales"], t["opacities"], t["features"], t["viewmats"],
                            t["Ks"], 32, 32, backgrounds=t["backgrounds"], backend="gsplat")
