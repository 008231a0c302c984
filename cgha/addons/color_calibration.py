"""Colour calibration: a tiny MLP (a learnt code per training camera + the rendered colour -> a colour residual)
that absorbs per-camera colour and exposure differences of a capture, applied to the training render only (the
avatar itself stays camera-independent; evaluation renders without it). The last layer starts at zero, so the
calibration starts as the identity.

Zero-mean (the default): the residual of a camera minus the mean residual over all training cameras at the same
colour. Without it (the refactor's form) the MLP also learns a colour change every camera shares, which the avatar
then compensates and which evaluation, rendering without the calibration, shows as an error (-5.6 dB on the GPU
rows, docs/rigged.md). A shared change belongs to the avatar; only differences between cameras are calibration."""
from __future__ import annotations

import torch
from torch import nn


class ColorCalibration(nn.Module):
    """render [B, C >= 3, H, W], camera ids [B] -> the render with its RGB corrected (other channels unchanged)."""

    def __init__(self, num_cameras: int, hidden: int = 16, code_dim: int = 4, zero_mean: bool = True):
        super().__init__()
        self.zero_mean = zero_mean
        # Codes keep nn.Embedding's N(0, 1) start: zero codes left every camera the same input, and in 6 of 40 seeded
        # trials the cameras never told apart (a darker camera stayed uncorrected). The zero last layer alone
        # makes the start the identity.
        self.codes = nn.Embedding(num_cameras, code_dim)
        self.mlp = nn.Sequential(nn.Linear(3 + code_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 3))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self.last_residual = None

    def forward(self, render: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        rgb = render[:, :3].permute(0, 2, 3, 1)                                     # [B, H, W, 3]
        if self.zero_mean:
            # Every camera's residual at each pixel's colour: [B, H, W, N, 3]; N x the tiny MLP's cost.
            codes = self.codes.weight.expand(*rgb.shape[:3], -1, -1)
            every = self.mlp(torch.cat([rgb[..., None, :].expand(*codes.shape[:4], 3), codes], -1))
            own = every.gather(3, camera[:, None, None, None, None].expand(*rgb.shape[:3], 1, 3))[..., 0, :]
            residual = own - every.mean(3)
        else:
            code = self.codes(camera)[:, None, None, :].expand(*rgb.shape[:3], -1)
            residual = self.mlp(torch.cat([rgb, code], -1))
        self.last_residual = residual
        return torch.cat([(rgb + residual).permute(0, 3, 1, 2), render[:, 3:]], 1)

    def regulariser(self) -> torch.Tensor:
        """Mean squared residual of the last call (keeps the correction small)."""
        return self.last_residual.pow(2).mean()
