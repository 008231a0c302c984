"""The decoders shared by every identity: an MLP of a per-Gaussian input and a per-sample condition.

Every Gaussian i of sample b gets MLP([point_i, condition_b]). The first layer is split into a point part computed
once per Gaussian and a condition part computed once per sample and broadcast ([N, H] + [B, 1, H]), which is the
same function as concatenating, without materialising a [B, N, point + condition] input.
"""
from __future__ import annotations

import torch
from torch import nn


class ConditionedMLP(nn.Module):
    """[N, P] per-Gaussian inputs and [B, C] per-sample conditions -> [B, N, out].

    The last layer starts at zero, so a fresh decoder outputs exactly its `bias` (the caller's base values)."""

    def __init__(self, point_dim: int, condition_dim: int, hidden: int, layers: int, out_dim: int):
        super().__init__()
        self.point_in = nn.Linear(point_dim, hidden)
        self.condition_in = nn.Linear(condition_dim, hidden, bias=False)
        self.hidden = nn.Sequential(*[module for _ in range(layers - 1)
                                      for module in (nn.Linear(hidden, hidden), nn.ReLU())])
        self.out = nn.Linear(hidden, out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.point_dim, self.condition_dim = point_dim, condition_dim

    def forward(self, points: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        if points.ndim != 2 or points.shape[1] != self.point_dim:
            raise ValueError(f"points must be [N, {self.point_dim}], got {list(points.shape)}")
        if condition.ndim != 2 or condition.shape[1] != self.condition_dim:
            raise ValueError(f"condition must be [B, {self.condition_dim}], got {list(condition.shape)}")
        h = torch.relu(self.point_in(points)[None] + self.condition_in(condition)[:, None])
        return self.out(self.hidden(h))
