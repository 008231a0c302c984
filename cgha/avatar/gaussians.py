"""`Gaussians`: what an avatar model's `generate()` returns, the input of every renderer, exporter and viewer."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

import torch


@dataclass
class Gaussians:
    """A batch of posed 3D Gaussians in world space (B frames, N Gaussians, C colour channels).

    means [B, N, 3] world positions; quats [B, N, 4] unit wxyz rotations; scales [B, N, 3] positive standard
    deviations in world units; opacities [B, N] in (0, 1); features [B, N, C] colour channels whose first three
    are RGB in [0, 1] (GHA renders 32 and a post-render network turns them into the image); extras: model-specific
    per-Gaussian outputs that losses may use (e.g. GHA's expression deformation `exp_deform` [B, N, 3]).
    """
    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    features: torch.Tensor
    extras: Dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.means.ndim != 3 or self.means.shape[-1] != 3:
            raise ValueError(f"Gaussians.means must be [B, N, 3], got {list(self.means.shape)}")
        batch, count = self.means.shape[:2]
        expected = {"quats": (batch, count, 4), "scales": (batch, count, 3), "opacities": (batch, count)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Gaussians.{name} must be {list(shape)}, got {list(getattr(self, name).shape)}")
        if self.features.ndim != 3 or tuple(self.features.shape[:2]) != (batch, count):
            raise ValueError(f"Gaussians.features must be [{batch}, {count}, C], got {list(self.features.shape)}")

    def as_dict(self) -> Dict[str, torch.Tensor]:
        """Every tensor by name (the five attributes, then the extras)."""
        return {"means": self.means, "quats": self.quats, "scales": self.scales, "opacities": self.opacities,
                "features": self.features, **self.extras}

    @property
    def batch_size(self) -> int:
        return self.means.shape[0]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[1]

    @property
    def channels(self) -> int:
        return self.features.shape[-1]
