"""One viewer frame, rendered server-side by the avatar's own pipeline (generate -> rasterise -> post-render, through
cgha.avatar.inference.render_frame), so what the browser shows is the real output; timed per frame.

    renderer = FrameRenderer(avatar, device, backend="auto")
    frame = renderer.render(expression, pose, scale, camera, height=512, width=768)
    frame.image    # uint8 [512, 768, 3]; frame.seconds: generate + render + post-render, synchronised on CUDA

The posed Gaussians of the last (expression, pose, scale) are kept: a frame that only moves the camera (orbit, zoom,
resize) skips the generate step, which is most of a frame on a CPU (the networks run over every Gaussian). No
avatar model's generate step reads the camera, so the reused Gaussians are exactly what it would produce again.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from cgha.avatar.gaussians import Gaussians
from cgha.avatar.inference import Avatar, render_posed
from cgha.errors import ConfigError
from cgha.utils.device import synchronize

from .camera import ViewCamera


@dataclass(frozen=True)
class RenderedFrame:
    image: np.ndarray  # uint8 [H, W, 3]
    seconds: float  # generate (unless reused) + rasterise + post-render (+ the copy to the host)
    generated: bool  # False when the last frame's posed Gaussians were reused (only the camera changed)


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
        self._posed_inputs: Optional[Tuple[torch.Tensor, ...]] = None
        self._posed: Optional[Gaussians] = None

    def posed_gaussians(self, expression: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor
                        ) -> Tuple[Gaussians, bool]:
        """The avatar's Gaussians for expression [D], pose [6], scale [1] (batch of one) and whether they were
        generated now (False: the same inputs as the last call, reused)."""
        inputs = tuple(value.detach().to("cpu", torch.float32).clone() for value in (expression, pose, scale))
        if self._posed_inputs is not None and all(torch.equal(a, b) for a, b in zip(inputs, self._posed_inputs)):
            return self._posed, False
        batch = [value.to(self.device)[None] for value in inputs]
        self._posed = self.avatar.model.generate(*batch)
        self._posed_inputs = inputs
        return self._posed, True

    @torch.no_grad()
    def render(self, expression: torch.Tensor, pose: torch.Tensor, scale: torch.Tensor, camera: ViewCamera,
               height: int, width: int) -> RenderedFrame:
        """expression [D], pose [6], scale [1] of one frame, seen by `camera`, as a height x width image (both
        multiples of the post-render step's upscale)."""
        synchronize(self.device)
        start = time.perf_counter()
        gaussians, generated = self.posed_gaussians(expression, pose, scale)
        viewmat = camera.viewmat().to(self.device)[None]
        K = camera.intrinsics(height, width).to(self.device)[None]
        frame = render_posed(gaussians, self.avatar.post_render, viewmat, K, height, self.backend, output_width=width)
        image = (frame.image[0].clamp(0.0, 1.0).permute(1, 2, 0) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
        synchronize(self.device)
        return RenderedFrame(image, time.perf_counter() - start, generated)
