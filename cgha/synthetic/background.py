"""Per-camera studio backgrounds: a smooth gradient, soft blotches and faint wall panels.

Fixed per camera index (not per frame or identity), cool-toned so they stay distinct from skin and hair, and
defined in normalised image coordinates so every resolution shows the same picture.
"""
from __future__ import annotations

import numpy as np
import torch

from .mathutil import gaussian
from .noise import PeriodicNoise

__all__ = ["camera_backgrounds"]


def camera_backgrounds(num_cameras: int, width: int, height: int, device="cpu") -> torch.Tensor:
    """Backgrounds of cameras 0..num_cameras-1.

    Returns:
        [C, 3, H, W] float32 in [0, 1].
    """
    device = torch.device(device)
    noise = PeriodicNoise(seed=7, size=128, sigmas=(10.0, 3.0), device=device)
    vs = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
    us = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
    v, u = torch.meshgrid(vs, us, indexing="ij")
    out = []
    for cam in range(num_cameras):
        rng = np.random.default_rng([cam, 0xBAC6])
        top = torch.tensor(rng.uniform([0.5, 0.56, 0.62], [0.66, 0.7, 0.78]), dtype=torch.float32, device=device)
        bottom = torch.tensor(rng.uniform([0.22, 0.25, 0.3], [0.36, 0.38, 0.44]), dtype=torch.float32, device=device)
        ox, oy = (float(a) for a in rng.uniform(0.0, 1.0, 2))
        n = noise.sample((u * 0.6 + ox).reshape(-1), (v * 0.6 + oy).reshape(-1)).reshape(height, width, -1)
        grad = v + 0.08 * n[..., 0]
        img = top[:, None, None] * (1.0 - grad) + bottom[:, None, None] * grad
        img = img * (1.0 + 0.04 * n[..., 1])
        # Faint vertical panel seams and a horizontal skirting line, a little off-axis per camera.
        panels = 8.0 + 2.0 * float(rng.uniform())
        seam = gaussian(((torch.frac(u * panels + ox) - 0.5) / 0.006) ** 2)
        skirt = gaussian(((v - (0.82 + 0.05 * oy)) / 0.004) ** 2)
        img = img * (1.0 - 0.12 * seam - 0.15 * skirt)
        out.append(img.clamp(0.0, 1.0))
    return torch.stack(out)
