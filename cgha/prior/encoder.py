"""The image encoder of a prior trained with `model.options.identity_source: encoder`: one photo of a person ->
their identity latent, in one forward pass (the alternative to the auto-decoder's per-identity codes, which a new
person gets only by inversion).

    encoder = ImageEncoder(latent_dim=32, width=32, resolution=64)
    latent = encoder(images).mean(dim=0)        # images [V, 3, R, R] in [0, 1], on white -> one latent [Z]

Images of any size are resized (area-averaged) to `resolution` first, so a prior trained at 64^2 reads a 512^2
photo as it read its training views. Four stride-2 convolutions (GroupNorm, SiLU) take 64^2 to 4^2; the 4 x 4 map
is flattened, not pooled, because where a feature sits on the face (a crop centred on it) is part of what it says.
The last layer starts at zero, so a fresh encoder gives every identity the zero latent, as a fresh decoder gives
grey Gaussians. Its output is divided by the square root of its fan-in F (4096 at width 32): Adam moves every weight
by about the learning rate per step, which would move a latent by up to lr x F per step; so scaled, the latents
stay on the auto-decoder codes' scale (measured: squared norm 0.09 vs the codes' 0.59 after 30 steps of a tiny
prior, where dividing by F gave 0.003 and not at all 3.4), and inversion starts from them at its usual step size.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STRIDED_LAYERS = 4
FINAL_SIDE = 4  # spatial side of the map the last layer reads (after adaptive pooling for other resolutions)
_MAX_WIDTH_FACTOR = 8
_GROUPS = 8


class ImageEncoder(nn.Module):
    """images [B, 3, H, W] in [0, 1] -> latents [B, latent_dim]."""

    def __init__(self, latent_dim: int, width: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        layers, channels = [], 3
        for index in range(STRIDED_LAYERS):
            out = width * min(2 ** index, _MAX_WIDTH_FACTOR)
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GroupNorm(min(_GROUPS, out), out),
                       nn.SiLU()]
            channels = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(FINAL_SIDE))
        self.out = nn.Linear(channels * FINAL_SIDE * FINAL_SIDE, latent_dim)
        self.output_scale = self.out.in_features ** -0.5
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {list(images.shape)}")
        if images.shape[-2:] != (self.resolution, self.resolution):
            images = F.interpolate(images, size=(self.resolution, self.resolution), mode="area")
        # Centred on 0: white background 1 -> 1, black -> -1.
        return self.output_scale * self.out(self.features(images * 2.0 - 1.0).flatten(1))
