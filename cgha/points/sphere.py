"""MonoGaussianAvatar's start: a few points uniformly on a sphere in canonical head space."""
from __future__ import annotations

import torch


def sphere_points(count: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """`count` points uniformly distributed on the sphere of `radius` around the canonical origin: -> [count, 3].

    Directions are normalised standard normal samples (uniform on the sphere, unlike MonoGaussianAvatar's normalised
    cube samples, which crowd toward the cube's corners). `generator` is a CPU generator; the result is on the CPU.
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    directions = torch.randn(count, 3, generator=generator)
    return torch.nn.functional.normalize(directions, dim=1) * radius
