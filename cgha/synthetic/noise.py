"""Tileable band-limited 2D noise, sampled bilinearly with wrap-around.

The procedural texture needs many noise lookups per pixel; a 2D ``grid_sample`` on a small periodic image is an
order of magnitude cheaper on CPU than hashing a 3D lattice. Lookups take coordinates in *periods*: the image
repeats every 1.0 in u and v, so mapping the head's azimuth to an integer number of periods is seamless.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PeriodicNoise"]


class PeriodicNoise:
    """A few channels of periodic Gaussian-filtered white noise, each normalised to zero mean, unit std.

    Args:
        seed: generator seed (deterministic images).
        size: image side in pixels.
        sigmas: blur per channel in pixels (larger = smoother); one channel each.
        device: torch device of the image.
    """

    def __init__(self, seed: int, size: int = 256, sigmas=(6.0, 2.5, 1.2, 1.2), device="cpu"):
        rng = np.random.default_rng([seed, 0xA015E])
        freq = np.fft.fftfreq(size)
        f2 = freq[:, None] ** 2 + freq[None, :] ** 2
        chans = []
        for sigma in sigmas:
            white = rng.standard_normal((size, size))
            # Gaussian blur in the frequency domain = periodic convolution (the image tiles seamlessly).
            spec = np.fft.fft2(white) * np.exp(-2.0 * (np.pi * sigma) ** 2 * f2)
            img = np.real(np.fft.ifft2(spec))
            img = (img - img.mean()) / max(img.std(), 1e-12)
            chans.append(img)
        img = torch.from_numpy(np.stack(chans).astype(np.float32))[None]  # [1, C, S, S]
        self.image = F.pad(img, (1, 1, 1, 1), mode="circular").to(device)  # one wrapped pixel each side
        self.size = size
        self.channels = len(sigmas)

    def sample(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Noise at coordinates ``u``, ``v`` [N] (in periods, any real value).

        Returns:
            [N, C] values (roughly standard normal).
        """
        S = self.size
        pu = (u - torch.floor(u)) * S + 1.0
        pv = (v - torch.floor(v)) * S + 1.0
        grid = torch.stack([pu, pv], dim=-1).mul_(2.0 / (S + 1)).sub_(1.0)
        out = F.grid_sample(self.image, grid[None, None].to(self.image.dtype), mode="bilinear",
                            padding_mode="border", align_corners=True)
        return out[0, :, 0].t()
