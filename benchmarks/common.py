"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import math

import torch

from cgha.config import TrainConfig
from cgha.module.gaussian_head import GaussianHeadModule, mouth_points


def markdown_table(title, columns, rows) -> str:
    """Markdown table; `columns` are (header, key, format) triples, `rows` dicts."""
    lines = [title, "| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for _, key, fmt in columns) + " |")
    return "\n".join(lines)


def head_gaussians(count: int, generator: torch.Generator):
    """Canonical positions on a head-like ellipsoid (radius ~1, face toward +z) and 68+ landmarks on its front."""
    direction = torch.randn(count, 3, generator=generator)
    direction = direction / direction.norm(dim=-1, keepdim=True)
    xyz = direction * torch.tensor([0.9, 1.15, 1.0]) * (1 + 0.02 * torch.randn(count, 1, generator=generator))
    front = direction[direction[:, 2] > 0.6][:120] * torch.tensor([0.9, 1.15, 1.0])
    return xyz, front


def gha_scale_head(cfg: TrainConfig, count: int, generator: torch.Generator) -> GaussianHeadModule:
    """An untrained Gaussian head of `count` + the config's mouth points on a head-sized ellipsoid (CPU)."""
    xyz, landmarks = head_gaussians(count, generator)
    xyz = torch.cat([xyz, mouth_points(landmarks, cfg.gaussianheadmodule.num_add_mouth_points, generator)])
    feature = 0.5 * torch.randn(xyz.shape[0], 128, generator=generator)
    return GaussianHeadModule(cfg.gaussianheadmodule, xyz, feature, landmarks)


def json_safe(value):
    """Non-finite floats -> None (strict JSON has no NaN or Infinity), recursively through dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value
