"""Smart densification: clone and split thresholds as percentiles of the densification statistic (clone 75th,
split 90th) over the Gaussians seen since the last densification, instead of one fixed threshold."""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def densify_thresholds(statistic: torch.Tensor, seen: torch.Tensor, fixed: float,
                       percentiles: Optional[Tuple[float, float]]) -> Tuple[float, float]:
    """(clone threshold, split threshold): `fixed` for both without `percentiles`, else the (clone, split)
    percentiles of statistic [N] over the Gaussians `seen` [N] bool (inf when none was seen)."""
    if percentiles is None:
        return fixed, fixed
    values = statistic[seen].float()
    if values.numel() == 0:
        return float("inf"), float("inf")
    clone, split = torch.quantile(values, torch.tensor(percentiles, device=values.device) / 100.0).tolist()
    return clone, split
