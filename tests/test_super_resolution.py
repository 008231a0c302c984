"""Super-resolution network: shapes, GHA weight compatibility, learning, the amp flag and input checks."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cgha.config import SupResModuleConfig
from cgha.errors import CheckpointError
from cgha.module.super_resolution import SuperResolutionModule
from cgha.network.upsampler import InstanceNorm2d, Upsampler

GHA_KEYS = [
    "upsampler.inc.double_conv.0.weight",
    "upsampler.inc.double_conv.3.weight",
    "upsampler.up1.conv.double_conv.0.weight",
    "upsampler.up1.conv.double_conv.3.weight",
    "upsampler.up2.conv.double_conv.0.weight",
    "upsampler.up2.conv.double_conv.3.weight",
    "upsampler.outc.conv.weight",
    "upsampler.outc.conv.bias",
]


def _module(capacity=8, amp=False, seed=0):
    torch.manual_seed(seed)
    return SuperResolutionModule(SupResModuleConfig(input_dim=32, output_dim=3, network_capacity=capacity), amp=amp)


def _input(b=1, c=32, h=8, w=8, seed=1):
    return torch.randn(b, c, h, w, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- a reference with GHA's architecture and names


class _GHADoubleConv(nn.Module):
    def __init__(self, cin, cout, cmid=None):
        super().__init__()
        cmid = cmid or cout
        self.double_conv = nn.Sequential(
            nn.Conv2d(cin, cmid, 3, padding=1, bias=False), nn.InstanceNorm2d(cmid), nn.ReLU(),
            nn.Conv2d(cmid, cout, 3, padding=1, bias=False), nn.InstanceNorm2d(cout), nn.ReLU())

    def forward(self, x):
        return self.double_conv(x)


class _GHAUp(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = _GHADoubleConv(cin, cout, cin // 2)

    def forward(self, x):
        return self.conv(self.up(x))


class _GHAOutConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1)
        self.act_fn = nn.Sigmoid()

    def forward(self, x):
        return self.act_fn(self.conv(x))


class _GHAUpsampler(nn.Module):
    def __init__(self, input_dim, output_dim, capacity):
        super().__init__()
        self.inc = _GHADoubleConv(input_dim, capacity * 4)
        self.up1 = _GHAUp(capacity * 4, capacity * 2)
        self.up2 = _GHAUp(capacity * 2, capacity)
        self.outc = _GHAOutConv(capacity, output_dim)

    def forward(self, x):
        return self.outc(self.up2(self.up1(self.inc(x))))


class _GHASuperResolutionModule(nn.Module):
    def __init__(self, input_dim, output_dim, capacity):
        super().__init__()
        self.upsampler = _GHAUpsampler(input_dim, output_dim, capacity)

    def forward(self, x):
        return self.upsampler(x)


# ---------------------------------------------------------------- tests


def test_output_shape_and_range():
    module = _module()
    x = _input(b=2, h=6, w=10)
    y = module(x)
    assert y.shape == (2, 3, 24, 40)
    assert y.dtype == x.dtype
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1
    assert Upsampler(4, 1, 2)(torch.randn(1, 4, 3, 5)).shape == (1, 1, 12, 20)


def test_parameter_names_and_count_match_gha():
    module = _module(capacity=32)
    assert list(module.state_dict()) == GHA_KEYS
    c, i = 32, 32
    convs3x3 = (i * 4 * c + 4 * c * 4 * c) + (4 * c * 2 * c + 2 * c * 2 * c) + (2 * c * c + c * c)
    expected = 9 * convs3x3 + c * 3 + 3
    assert sum(p.numel() for p in module.parameters()) == expected == 322_659


def test_gha_state_dict_loads_and_gives_the_same_output():
    torch.manual_seed(3)
    reference = _GHASuperResolutionModule(32, 3, 8)
    # GHA's init has zero-mean weights everywhere; perturb the bias too so the check covers every tensor.
    with torch.no_grad():
        reference.upsampler.outc.conv.bias.uniform_(-1, 1)
    x = _input(b=2, h=5, w=7)
    expected = reference(x)

    direct = _module(seed=10)
    direct.load_state_dict(reference.state_dict())
    via_supres_latest = _module(seed=11)
    via_supres_latest.load_gha_state_dict(reference.state_dict())
    bare = Upsampler(32, 3, 8)
    bare.load_gha_state_dict(reference.upsampler.state_dict())
    for out in (direct(x), via_supres_latest(x), bare(x)):
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def test_gha_state_dict_mismatch_is_a_clear_error():
    state = _GHASuperResolutionModule(32, 3, 8).state_dict()
    with pytest.raises(CheckpointError, match="network_capacity 16"):
        _module(capacity=16).load_gha_state_dict(state)
    del state["upsampler.outc.conv.bias"]
    with pytest.raises(CheckpointError, match="missing"):
        _module().load_gha_state_dict(state)


@pytest.mark.parametrize("batch", [1, 3])
def test_channels_last_instance_norm_matches_nchw(batch):
    x = torch.randn(batch, 5, 6, 7, generator=torch.Generator().manual_seed(2)) * 3 + 1
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x_ref = x.clone().requires_grad_()
    norm = InstanceNorm2d(5)
    y = norm(x_cl)
    expected = F.instance_norm(x_ref)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn(expected.shape, generator=torch.Generator().manual_seed(4))
    y.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x_cl.grad, x_ref.grad, rtol=1e-4, atol=1e-5)


def test_channels_last_network_matches_nchw():
    module = _module()
    x = _input(b=2)
    torch.testing.assert_close(module.upsampler(x.contiguous(memory_format=torch.channels_last)), module(x),
                               rtol=1e-4, atol=1e-5)


def test_network_learns_a_fixed_pair():
    module = _module(capacity=4)
    x = _input(h=6, w=6)
    # A smooth target (one colour per input pixel, interpolated) is reachable; per-pixel noise would not be.
    coarse = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(5))
    target = F.interpolate(coarse, size=(24, 24), mode="bilinear", align_corners=True)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = F.l1_loss(module(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.75 * losses[0]


def test_amp_flag_changes_nothing_on_cpu():
    plain, fast = _module(amp=False), _module(amp=True)
    fast.load_state_dict(plain.state_dict())
    x = _input(b=2)
    y_plain, y_fast = plain(x), fast(x)
    assert torch.equal(y_plain, y_fast)
    y_plain.sum().backward()
    y_fast.sum().backward()
    for p, q in zip(plain.parameters(), fast.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_bad_input_is_a_value_error():
    module = _module()
    with pytest.raises(ValueError, match=r"\[B, 32, H, W\].*\[1, 16, 8, 8\]"):
        module(torch.zeros(1, 16, 8, 8))
    with pytest.raises(ValueError, match="expects a feature image"):
        module(torch.zeros(32, 8, 8))
    with pytest.raises(ValueError, match="floating-point"):
        module(torch.zeros(1, 32, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="network_capacity"):
        Upsampler(32, 3, 0)


def test_flops_estimate_matches_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    module = _module(capacity=32)
    # Counted on the meta device: shapes only, no arithmetic.
    module_meta = _module(capacity=32).to("meta")
    with FlopCounterMode(display=False) as counter:
        module_meta(torch.empty(1, 32, 16, 24, device="meta"))
    assert counter.get_total_flops() == module.flops(16, 24)
    # DESIGN.md's floor: capacity 32, 512^2 -> 2048^2 is about 0.56 TFLOP forward.
    assert module.flops(512, 512) == pytest.approx(0.5613e12, rel=1e-3)


@pytest.mark.cuda
def test_amp_on_cuda_is_close_to_fp32():
    device = torch.device("cuda")
    module = _module(capacity=8).to(device)
    x = _input(b=2, h=16, w=16).to(device)
    reference = module(x)
    module.amp = True
    y = module(x)
    assert y.dtype == torch.float32 and y.is_contiguous() and y.shape == reference.shape
    assert (y - reference).abs().max() < 0.03
    y.mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


@pytest.mark.cuda
@pytest.mark.parametrize("amp", [False, True])
def test_cuda_graphs_replay_the_eager_network(amp):
    """Training steps from CUDA graphs: the same outputs and gradients as eager (input and weights), after weight
    updates and for a second input shape; evaluation runs eagerly."""
    device = torch.device("cuda")
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False  # the captured and the eager pass pick their convolutions separately
    graphed = _module(capacity=8, amp=amp).to(device).use_cuda_graphs()
    eager = _module(capacity=8, amp=amp).to(device)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (graphed, eager)]
    for step, size in enumerate((16, 16, 24)):
        x = _input(b=1, h=size, w=size).to(device)
        results = []
        for module, optimizer in zip((graphed, eager), optimizers):
            optimizer.zero_grad(set_to_none=True)
            source = x.clone().requires_grad_(True)
            y = module(source * 1.0)  # a non-leaf input, as the trainer's crops are
            (y * torch.linspace(0, 1, y.numel(), device=device).view_as(y)).sum().backward()
            results.append([y.detach().clone(), source.grad.clone(), *(p.grad.clone() for p in module.parameters())])
            optimizer.step()
        tolerance = dict(rtol=2e-2, atol=2e-2) if amp else dict(rtol=1e-4, atol=1e-5)
        for index, (got, expected) in enumerate(zip(*results)):
            scale = float(expected.abs().max())
            torch.testing.assert_close(got, expected, rtol=tolerance["rtol"], atol=tolerance["atol"] * max(scale, 1e-3),
                                       msg=lambda message: f"step {step}, tensor {index}: {message}")
    assert graphed._graphed_forward.captures == 2
    graphed.eval()
    with torch.no_grad():
        graphed(x)
    assert graphed._graphed_forward.captures == 2
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = True


# ------------------------------------------------------------------------------------ residual (ours, not GHA)
def _residual_module(capacity=8, seed=0):
    torch.manual_seed(seed)
    return SuperResolutionModule(SupResModuleConfig(input_dim=32, output_dim=3, network_capacity=capacity,
                                                    residual=True))


def test_residual_network_starts_as_bilinear_upsampling_of_the_colour_channels():
    x = torch.rand(2, 32, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.9 + 0.05
    expected = F.interpolate(x[:, :3], scale_factor=4, mode="bilinear", align_corners=False)
    torch.testing.assert_close(_residual_module()(x), expected, atol=1e-5, rtol=1e-5)
    # White (background) pixels come out within the logit clamp of white.
    white = _residual_module()(torch.ones(1, 32, 4, 4))
    assert (1.0 - white).max() <= Upsampler.SKIP_EPS + 1e-6


def test_residual_network_learns_detail_beyond_the_upsampled_render():
    x = torch.rand(1, 32, 8, 8, generator=torch.Generator().manual_seed(4))
    # A smooth target unrelated to the render's colours (reachable, unlike per-pixel noise).
    coarse = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    target = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=True)
    module = _residual_module()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    start = F.l1_loss(module(x), target).item()
    for _ in range(60):
        optimizer.zero_grad()
        loss = F.l1_loss(module(x), target)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.7 * start


def test_residual_and_plain_checkpoints_do_not_mix(tmp_path):
    from cgha.recorder.checkpoint import save_atomic
    from cgha.module.super_resolution import load_super_resolution

    path = tmp_path / "supres_latest"
    save_atomic(_residual_module().state_dict(), path)
    with pytest.raises(CheckpointError, match="bilinear_skip"):
        load_super_resolution(_module(), path)
    save_atomic(_module().state_dict(), path)
    with pytest.raises(CheckpointError, match="bilinear_skip"):
        load_super_resolution(_residual_module(), path)


def test_residual_needs_at_least_as_many_input_channels_as_output_channels():
    from cgha.config import ConfigError, TrainConfig, load_config

    with pytest.raises(ConfigError, match="supresmodule.output_dim"):
        load_config(TrainConfig, None, ["supresmodule.residual=true", "supresmodule.output_dim=40"],
                    stage="gaussianhead")
