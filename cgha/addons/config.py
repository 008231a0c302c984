"""The `addons` config section (owned by cgha/addons)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from cgha.errors import ConfigError
from cgha.options import option


@dataclass
class AddonsSection:
    """Optional training add-ons (GaussianAvatars refactor); all off by default."""
    region_weights: bool = option(False, "weight the photometric losses up on eyes, mouth and nose (regions around "
                                  "the projected iBUG-68 landmarks)")
    eye_weight: float = option(2.0, "region_weights: weight of the eye regions", min=0.0)
    mouth_weight: float = option(2.0, "region_weights: weight of the mouth region", min=0.0)
    nose_weight: float = option(1.5, "region_weights: weight of the nose region", min=0.0)
    region_margin: float = option(1.3, "region_weights: an ellipse around a region's landmarks, its radii this many "
                                  "times their extent", min=0.0, min_exclusive=True)
    smart_densification: bool = option(False, "rigged model: clone/split thresholds are percentiles of the "
                                       "densification statistic instead of model.options.grad_threshold")
    clone_percentile: float = option(75.0, "smart_densification: percentile of the clone threshold", min=0.0,
                                     max=100.0)
    split_percentile: float = option(90.0, "smart_densification: percentile of the split threshold", min=0.0,
                                     max=100.0)
    progressive_resolution: bool = option(False, "train at lower resolutions first (resolution_scales, switched at "
                                          "resolution_milestones)")
    resolution_scales: List[float] = option([0.5, 0.75, 1.0], "progressive_resolution: fractions of the resolution")
    resolution_milestones: List[float] = option([0.25, 0.5], "progressive_resolution: fractions of the run at which "
                                                "the next scale starts")
    color_calibration: bool = option(False, "learn a per-camera colour correction of the training render (tiny MLP; "
                                     "evaluation renders without it); regulariser train.loss_weights."
                                     "color_calibration")
    calibration_hidden: int = option(16, "color_calibration: hidden width", min=1)
    calibration_code_dim: int = option(4, "color_calibration: learnt code per camera", min=1)
    calibration_lr: float = option(1e-3, "color_calibration: learning rate", min=0.0)
    calibration_zero_mean: bool = option(True, "color_calibration: remove the mean correction over the training "
                                         "cameras, so a colour change all cameras share stays in the avatar "
                                         "(false: the refactor's unconstrained MLP)")
    contrastive: bool = option(False, "cosine consistency between the render and cached renders of adjacent views; "
                               "weight train.loss_weights.contrastive")
    contrastive_cache: int = option(2, "contrastive: renders kept", min=1)
    contrastive_max_angle: float = option(30.0, "contrastive: views within this angle (degrees) are adjacent",
                                          min=0.0)

    def check(self, prefix: str = "addons") -> None:
        if len(self.resolution_scales) != len(self.resolution_milestones) + 1:
            raise ConfigError(f"'{prefix}.resolution_scales' needs one more entry than '{prefix}.resolution_milestones'"
                              f", got {self.resolution_scales} and {self.resolution_milestones}")
        if any(not 0.0 < s <= 1.0 for s in self.resolution_scales):
            raise ConfigError(f"'{prefix}.resolution_scales' must lie in (0, 1], got {self.resolution_scales}")
        if sorted(self.resolution_milestones) != list(self.resolution_milestones) or any(
                not 0.0 < m < 1.0 for m in self.resolution_milestones):
            raise ConfigError(f"'{prefix}.resolution_milestones' must increase within (0, 1), got "
                              f"{self.resolution_milestones}")
        if self.clone_percentile > self.split_percentile:
            raise ConfigError(f"'{prefix}.clone_percentile' ({self.clone_percentile}) is above "
                              f"'{prefix}.split_percentile' ({self.split_percentile})")
