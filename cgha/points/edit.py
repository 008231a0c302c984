"""Change which Gaussians a model has — delete some, duplicate others — and keep everything indexed by Gaussian in
step: the model's per-Gaussian parameters, the optimiser's moments of them and the quantiser's code indices.

One edit is a row selection: the edited model's Gaussian i is a copy of the current Gaussian `rows[i]`. Deleting
is leaving a row out; inserting is repeating a parent's row (with a new position). Inserted rows start with zero
optimiser moments, as a new parameter would (Adam's step count is per tensor and carries on).
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn


def edit_gaussians(model, rows: torch.Tensor, first_new: int, new_positions: torch.Tensor,
                   optimizer: Optional[torch.optim.Optimizer] = None, compaction=None) -> None:
    """Replace `model`'s Gaussians by the rows `rows` [M] (int64 indices into the current N) of its per-Gaussian
    parameters; rows[first_new:] are inserted points whose positions are `new_positions` [M - first_new, 3]
    (canonical). The optimiser's per-row state and the compaction strategy's indices follow the same selection
    (inserted points take their parent's codebook rows, since they copy its attributes)."""
    if rows.ndim != 1 or not 0 <= first_new <= rows.numel():
        raise ValueError(f"rows must be [M] with 0 <= first_new <= M, got {list(rows.shape)} and {first_new}")
    if new_positions.shape != (rows.numel() - first_new, 3):
        raise ValueError(f"new_positions must be [{rows.numel() - first_new}, 3], got {list(new_positions.shape)}")
    values: Dict[str, torch.Tensor] = {}
    for name, current in model.canonical_attributes().items():
        value = current.detach().index_select(0, rows)
        if name == model.position_attribute:
            value[first_new:] = new_positions.to(value)
        values[name] = value
    replaced = model.replace_gaussian_parameters(values)
    if optimizer is not None:
        for old, new in replaced.values():
            move_optimizer_rows(optimizer, old, new, rows, first_new)
    if compaction is not None:
        compaction.select_rows(rows)


def move_optimizer_rows(optimizer: torch.optim.Optimizer, old: nn.Parameter, new: nn.Parameter,
                         rows: torch.Tensor, first_new: int) -> None:
    """Put `new` where `old` was in the optimiser's groups, with `old`'s per-row state selected by `rows` (zeros
    from `first_new` on); state that is not per row (Adam's step) is kept."""
    for group in optimizer.param_groups:
        for position, parameter in enumerate(group["params"]):
            if parameter is old:
                group["params"][position] = new
                break
        else:
            continue
        break
    else:
        raise ValueError(f"a parameter of shape {list(old.shape)} is not in the optimiser")
    state = optimizer.state.pop(old, None)
    if state is None:
        return
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.shape == old.shape:
            moved = value.index_select(0, rows.to(value.device))
            moved[first_new:] = 0
            state[key] = moved
    optimizer.state[new] = state
