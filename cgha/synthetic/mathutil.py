"""Small scalar-field helpers shared by the synthetic head's modules."""
from __future__ import annotations

import torch

__all__ = ["smoothstep", "gaussian"]

# exp(-60) ~ 1e-26 is still a normal float32; larger arguments would produce denormals, which are very slow on
# x86 CPUs, so the exponent is clamped (the values are zero for every purpose here anyway).
_MAX_EXPONENT = 60.0


def smoothstep(x: torch.Tensor, e0: float, e1: float) -> torch.Tensor:
    """Cubic Hermite step from 0 (x <= e0) to 1 (x >= e1)."""
    t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def gaussian(q2: torch.Tensor) -> torch.Tensor:
    """``exp(-q2 / 2)`` for a squared normalised distance ``q2`` (denormal-free)."""
    return torch.exp((-0.5 * q2).clamp(min=-_MAX_EXPONENT))
