"""Free-view training of the super-resolution net (issue 16 item 3): a configurable zoom range of the training crop
and a prior on what the net adds beyond plain upsampling."""
import random

import pytest
import torch
import torch.nn.functional as F

from cgha.config import TrainConfig, load_config
from cgha.errors import ConfigError
from cgha.trainer.augment import random_scale_crop
from cgha.trainer.gaussian_head_trainer import sr_residual_loss

CONFIG = "config/train_gaussianhead_synthetic_demo.yaml"


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_zoom_range_sets_the_zoom_and_keeps_both_images_aligned(factor):
    coarse, ratio = 16, 4
    # A horizontal ramp (0.2 -> 0.8, away from the white padding): its slope after the zoom tells the factor used.
    ramp = 0.2 + 0.6 * (torch.arange(coarse * ratio).float() + 0.5) / (coarse * ratio)
    image = ramp.expand(1, 3, coarse * ratio, coarse * ratio).contiguous()
    render = F.avg_pool2d(image, ratio)
    visible = torch.ones(1, 1, coarse * ratio, coarse * ratio)
    out_render, out_image, out_visible = random_scale_crop(render, image, visible, random.Random(0), (factor, factor))
    assert out_render.shape == render.shape and out_image.shape == image.shape and out_visible.shape == visible.shape
    inside = out_image[0, 0] < 0.99  # zoom-out pads with white
    row = out_image[0, 0][inside.any(1)][0]
    values = row[row < 0.99]
    slope = float((values[-3] - values[2]) / (len(values) - 5))
    assert slope == pytest.approx(0.6 / (coarse * ratio * factor), rel=0.1)
    # Aligned: the fine crop, pooled to the coarse size, is the coarse crop.
    assert torch.allclose(F.avg_pool2d(out_image, ratio), out_render, atol=0.03)


def test_residual_prior_is_zero_for_plain_upsampling_and_grows_with_added_detail():
    torch.manual_seed(0)
    render = torch.rand(2, 32, 8, 8)
    upsampled = F.interpolate(render[:, :3], scale_factor=4, mode="bilinear", align_corners=False)
    assert float(sr_residual_loss(upsampled, render)) < 1e-6
    speckle = (torch.rand_like(upsampled) - 0.5) * 0.2
    output = (upsampled + speckle).requires_grad_(True)
    loss = sr_residual_loss(output, render)
    assert 0.02 < loss.item() < 0.06  # mean |U(-0.1, 0.1)| = 0.05
    loss.backward()
    assert output.grad is not None and float(output.grad.abs().sum()) > 0


def test_zoom_range_is_validated():
    cfg = load_config(TrainConfig, CONFIG, ["train.crop_scale_range=[0.6,1.6]"], stage="gaussianhead")
    assert cfg.train.crop_scale_range == [0.6, 1.6]
    for bad in ("[1.6,0.6]", "[0,1]", "[0.8]"):
        with pytest.raises(ConfigError, match="crop_scale_range"):
            load_config(TrainConfig, CONFIG, [f"train.crop_scale_range={bad}"], stage="gaussianhead")
