"""The step between rasterisation and the image: GHA's super-resolution network, or none."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from cgha.module.super_resolution import SupResModuleConfig, SuperResolutionModule


class NoPostRender(nn.Module):
    """The render's first three channels (RGB) are the image: [B, C >= 3, H, W] -> [B, 3, H, W], no parameters."""

    upscale = 1  # output pixels per render pixel along each axis

    def __init__(self, input_dim: int) -> None:
        super().__init__()
        if input_dim < 3:
            raise ValueError(f"the image is the render's RGB channels: it needs >= 3 channels, got {input_dim}")
        self.input_dim = input_dim
        self.amp = False  # the interface of SuperResolutionModule; nothing to cast here

    def use_cuda_graphs(self, enabled: bool = True) -> "NoPostRender":
        return self

    def forward(self, render: torch.Tensor) -> torch.Tensor:
        if render.ndim != 4 or render.shape[1] != self.input_dim:
            raise ValueError(f"expected a render [B, {self.input_dim}, H, W], got {list(render.shape)}")
        return render[:, :3]


def build_post_render(kind: str, supres_cfg: SupResModuleConfig, color_dim: Optional[int] = None,
                      amp: bool = False) -> nn.Module:
    """The post-render module named by `model.post_render`: GHA's super-resolution net (from `supres_cfg`), or none
    for a model rendering `color_dim` channels."""
    if kind == "super_resolution":
        return SuperResolutionModule(supres_cfg, amp=amp)
    if kind == "none":
        if color_dim is None:
            raise ValueError("post-render 'none' needs the model's colour channels")
        return NoPostRender(color_dim)
    raise ValueError(f"unknown post-render step {kind!r}")


def has_weights(post_render: nn.Module) -> bool:
    """Whether the step has trainable weights (and so a checkpoint of its own)."""
    return any(True for _ in post_render.parameters())


def post_render_kind(module: nn.Module) -> str:
    return "none" if isinstance(module, NoPostRender) else "super_resolution"
