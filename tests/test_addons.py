"""The five add-ons (cgha/addons): each changes what it should and nothing else."""
import math

import pytest
import torch

from cgha.addons.color_calibration import ColorCalibration
from cgha.addons.config import AddonsSection
from cgha.addons.contrastive import AdjacentViewCache
from cgha.addons.hooks import TrainingAddons
from cgha.addons.progressive import downsampled_batch, resolution_scale
from cgha.addons.region_weights import project, region_weight_map, weighted_batch
from cgha.addons.smart_densification import densify_thresholds
from cgha.errors import ConfigError


def _batch(size=64):
    gen = torch.Generator().manual_seed(0)
    viewmat = torch.eye(4)[None]
    viewmat[0, 2, 3] = 3.0  # camera 3 units in front of the origin, looking along +z
    K = torch.tensor([[[100.0, 0, size / 2], [0, 100.0, size / 2], [0, 0, 1]]])
    Kc = K.clone()
    Kc[:, :2] /= 4
    landmarks = torch.zeros(1, 80, 3)
    landmarks[0, :68, :2] = torch.rand(68, 2, generator=gen) * 0.2 - 0.1  # far apart from the eye cluster below
    landmarks[0, 36:42, :2] = torch.tensor([0.3, 0.3]) + 0.01 * torch.randn(6, 2, generator=gen)
    return {"images": torch.rand(1, 3, size, size, generator=gen), "masks": torch.ones(1, 1, size, size),
            "visibles": torch.ones(1, 1, size, size), "images_coarse": torch.rand(1, 3, size // 4, size // 4),
            "masks_coarse": torch.ones(1, 1, size // 4, size // 4),
            "visibles_coarse": torch.ones(1, 1, size // 4, size // 4), "intrinsics": K, "intrinsics_coarse": Kc,
            "viewmat": viewmat, "landmarks_3d": landmarks, "view_id": torch.tensor([1]),
            "exp_coeff": torch.rand(1, 16)}


def test_all_off_changes_nothing():
    addons = TrainingAddons(AddonsSection(), num_cameras=4, device=torch.device("cpu"))
    batch = _batch()
    assert addons.prepare_batch(batch, 0, 100) is batch
    assert addons.calibration(batch) is None and addons.parameters() == []
    assert addons.losses({"render": batch["images"]}, batch) == {} and addons.state_dict() == {}


def test_region_weights_touch_only_visibles_inside_regions():
    batch = _batch()
    weights = {"eye": 2.0, "mouth": 2.0, "nose": 1.5}
    out = weighted_batch(batch, weights, 1.3)
    assert set(out) == set(batch)
    for key in batch:
        if not key.startswith("visibles"):
            assert out[key] is batch[key], key
    values = set(out["visibles"].unique().tolist())
    assert values <= {1.0, 1.5, 2.0} and 2.0 in values and 1.0 in values
    eye = project(batch["landmarks_3d"][:, 36:42].mean(1, keepdim=True), batch["viewmat"], batch["intrinsics"])[0, 0]
    assert out["visibles"][0, 0, int(eye[1]), int(eye[0])] == 2.0
    assert out["visibles"][0, 0, 0, 0] == 1.0  # a corner, far from every landmark
    coarse = region_weight_map(batch["landmarks_3d"], batch["viewmat"], batch["intrinsics_coarse"], 16, weights, 1.3)
    assert torch.equal(out["visibles_coarse"], coarse)


def test_progressive_resolution_schedule_and_batch():
    scales, milestones = [0.5, 0.75, 1.0], [0.25, 0.5]
    assert [resolution_scale(i, 100, scales, milestones) for i in (0, 24, 25, 49, 50, 99)] == \
        [0.5, 0.5, 0.75, 0.75, 1.0, 1.0]
    batch = _batch()
    assert downsampled_batch(batch, 1.0) is batch
    half = downsampled_batch(batch, 0.5)
    assert half["images"].shape[-1] == 32 and half["images_coarse"].shape[-1] == 8
    assert torch.allclose(half["intrinsics"][0, :2], batch["intrinsics"][0, :2] / 2)
    assert torch.equal(half["intrinsics"][0, 2], batch["intrinsics"][0, 2])
    assert torch.allclose(half["images"].mean(), batch["images"].mean(), atol=1e-6)  # area averaging
    for key in ("viewmat", "landmarks_3d", "exp_coeff", "view_id"):
        assert half[key] is batch[key]


def test_color_calibration_starts_as_identity_and_changes_only_rgb():
    torch.manual_seed(0)
    calibration = ColorCalibration(num_cameras=4)
    assert sum(p.numel() for p in calibration.parameters()) < 10_000
    render = torch.rand(2, 5, 8, 8)
    camera = torch.tensor([0, 3])
    assert torch.equal(calibration(render, camera), render)
    optimizer = torch.optim.Adam(calibration.parameters(), lr=0.05)
    target = render.clone()
    target[1, :3] *= 0.7  # camera 3 is darker
    for _ in range(30):
        optimizer.zero_grad()
        loss = (calibration(render, camera) - target).abs().mean() + 1e-4 * calibration.regulariser()
        loss.backward()
        optimizer.step()
    out = calibration(render, camera)
    assert torch.equal(out[:, 3:], render[:, 3:])
    assert (out[1, :3] - target[1, :3]).abs().mean() < 0.5 * (render[1, :3] - target[1, :3]).abs().mean()


def _fit_calibration(calibration: ColorCalibration, render, camera, target, steps: int = 60) -> torch.Tensor:
    optimizer = torch.optim.Adam(calibration.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad()
        (calibration(render, camera) - target).abs().mean().backward()
        optimizer.step()
    return calibration(render, camera).detach()


@pytest.mark.parametrize("zero_mean", [True, False])
def test_color_calibration_zero_mean_leaves_a_shared_colour_change_to_the_avatar(zero_mean):
    """Every training camera sees the render 30% darker: a change they share, which the avatar must learn (evaluation
    renders without the calibration). The zero-mean form cannot absorb it; the refactor's unconstrained form does."""
    torch.manual_seed(0)
    calibration = ColorCalibration(num_cameras=2, zero_mean=zero_mean)
    render = torch.rand(1, 3, 8, 8).expand(2, -1, -1, -1)  # the same avatar colours seen by both cameras
    camera = torch.tensor([0, 1])
    out = _fit_calibration(calibration, render, camera, render * 0.7)
    before = (render - render * 0.7).abs().mean()
    if zero_mean:
        assert torch.allclose(out.mean(0), render[0], atol=1e-5)  # the two cameras' corrections cancel
        assert (out - render * 0.7).abs().mean() > 0.9 * before
    else:
        assert (out - render * 0.7).abs().mean() < 0.3 * before


def test_color_calibration_zero_mean_learns_a_difference_between_cameras():
    torch.manual_seed(0)
    calibration = ColorCalibration(num_cameras=2)
    render = torch.rand(2, 3, 8, 8)
    camera = torch.tensor([0, 1])
    target = torch.stack([render[0] * 1.15, render[1] * 0.85])  # one brighter, one darker, around the avatar
    out = _fit_calibration(calibration, render, camera, target)
    assert (out - target).abs().mean() < 0.3 * (render - target).abs().mean()


def test_contrastive_needs_an_adjacent_cached_view():
    cache = AdjacentViewCache(size=2, max_angle_deg=30.0)
    render = torch.rand(1, 3, 32, 32, requires_grad=True)
    front = torch.eye(4)[None]
    assert cache.loss(render, front, torch.tensor([0])) is None  # empty cache
    assert cache.loss(render, front, torch.tensor([0])) is None  # same camera is not an adjacent view
    side = torch.eye(4)[None]
    angle = math.radians(20)
    side[0, :3, :3] = torch.tensor([[math.cos(angle), 0, -math.sin(angle)], [0, 1, 0],
                                    [math.sin(angle), 0, math.cos(angle)]])
    other = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss = cache.loss(other, side, torch.tensor([1]))
    assert loss is not None and 0 < float(loss.detach()) < 2
    loss.backward()
    assert render.grad is None and other.grad is not None  # the cache is detached
    far = torch.eye(4)[None]
    far[0, :3, :3] = torch.tensor([[0.0, 0, -1], [0, 1, 0], [1, 0, 0]])  # 90 degrees away
    assert cache.loss(other, far, torch.tensor([2])) is None
    assert len(cache.entries) == 2


def test_smart_thresholds_are_percentiles():
    statistic = torch.arange(101, dtype=torch.float32)
    seen = torch.ones(101, dtype=torch.bool)
    assert densify_thresholds(statistic, seen, 7.0, None) == (7.0, 7.0)
    clone, split = densify_thresholds(statistic, seen, 7.0, (75.0, 90.0))
    assert clone == pytest.approx(75.0) and split == pytest.approx(90.0)
    seen[50:] = False
    assert densify_thresholds(statistic, seen, 7.0, (75.0, 90.0))[1] == pytest.approx(0.9 * 49)  # seen only


def test_config_checks():
    with pytest.raises(ConfigError, match="resolution_scales"):
        AddonsSection(resolution_scales=[0.5, 1.0]).check()
    with pytest.raises(ConfigError, match="clone_percentile"):
        AddonsSection(clone_percentile=95.0).check()
