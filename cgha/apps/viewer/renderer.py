"""One viewer frame, rendered server-side by the avatar's own pipeline (generate -> rasterise -> post-render, through
cgha.avatar.inference.render_frame), so what the browser shows is the real output; timed per frame.

    renderer = FrameRenderer(avatar, device, backend="auto")
    frame = renderer.render(expression, pose, scale, camera, height=512, width=768)
    frame.image    # uint8 [512, 768, 3]; frame.seconds: generate + render + post-render, synchronised on CUDA
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from cgha.avatar.inference import Avatar, render_frame
from cgha.errors import ConfigError
from cgha.utils.device import synchronize

from .camera import ViewCamera


@dataclass(frozen=True)
class RenderedFrame:
    image: np.ndarray  # uint8 [H, W, 3]
    seconds: float  # generate + rasterise + post-render (+ the copy to the host)


def output_shape(height: int, aspect: float, upscale: int) -> tuple:
    """(height, width) of an output `height` pixels high with the window's aspect (width / height), both rounded to
    multiples of the post-render step's `upscale` (its input is 1/upscale of the output)."""
    if height < upscale or height % upscale:
        raise ConfigError(f"the resolution {height} must be a positive multiple of {upscale} (the post-render step "
                          f"upsamples a 1/{upscale} render)")
    width = max(upscale, int(round(height * aspect / upscale)) * upscale)
    return height, width


class FrameRenderer:
    """Renders frames of one avatar on one device; `amp` turns on the post-render step's bf16 path on CUDA (as
    `render.amp` does in reenactment)."""

    def __init__(self, avatar: Avatar, device: torch.device, backend: str = "auto", amp: bool = True):
        self.avatar = avatar
        self.device = device
        self.backend = backend
        avatar.post_render.amp = amp  # only takes effect on CUDA tensors
        self.upscale = avatar.post_render.upscale

    @torch.no_grad()
    def render(self, expression: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor, camera: ViewCamera,
               height: int, width: int) -> RenderedFrame:
        """expression [D], pose [6], scale [1] of one frame, seen by `camera`, as a height x width image (both
        multiples of the post-render step's upscale)."""
        synchronize(self.device)
        start = time.perf_counter()
        inputs = [value.to(self.device, torch.float32)[None] for value in (expression, pose, scale)]
        viewmat = camera.viewmat().to(self.device)[None]
        K = camera.intrinsics(height, width).to(self.device)[None]
        frame = render_frame(self.avatar.model, self.avatar.post_render, *inputs, viewmat, K, height, self.backend,
                             output_width=width)
        image = (frame.image[0].clamp(0.0, 1.0).permute(1, 2, 0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
        synchronize(self.device)
        return RenderedFrame(image, time.perf_counter() - start)
