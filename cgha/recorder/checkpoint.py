"""Checkpoint files: GHA-named state dicts written atomically, read without pickle.

Files are `torch.save` archives that hold only tensors, numbers, strings, lists and dicts, so they load with
`torch.load(..., weights_only=True)`; GHA's own `*_latest` files (plain state dicts) load the same way. Every
problem a user can cause — a missing, truncated, corrupt or foreign file, or one for another model — becomes a
`CheckpointError` naming the file.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping

import torch
from torch import nn

from cgha.errors import CheckpointError
from cgha.utils.atomic import atomic_output

_MAX_KEYS_LISTED = 5


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to a temp file in the same folder, then rename: a crash never leaves a half-written file."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def load_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """Load a checkpoint on the CPU with `weights_only=True`; CheckpointError for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: refusing to load a {what} that needs arbitrary pickled objects "
                              f"({first_line})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        first_line = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable {what} (truncated, corrupt or another format: "
                              f"{first_line})") from None


def load_state_dict_into(module: nn.Module, state: Mapping[str, Any], path: str | os.PathLike,
                         what: str = "checkpoint") -> None:
    """`module.load_state_dict(state)` with errors that name the file and the mismatching keys/shapes."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise CheckpointError(f"{path}: the {what} is not a state dict (got {type(state).__name__})")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_listed(missing)}")
        if unexpected:
            parts.append(f"unexpected {_listed(unexpected)}")
        raise CheckpointError(f"{path}: this {what} does not belong to a {type(module).__name__} "
                              f"with this config ({'; '.join(parts)})")
    for key, value in expected.items():
        stored = state[key]
        if not isinstance(stored, torch.Tensor) or stored.shape != value.shape:
            shape = list(stored.shape) if isinstance(stored, torch.Tensor) else type(stored).__name__
            raise CheckpointError(f"{path}: '{key}' has shape {shape} but the model built from the config has "
                                  f"{list(value.shape)}; the config's module sizes do not match this {what}")
    module.load_state_dict(state)


def _listed(keys: list) -> str:
    shown = ", ".join(keys[:_MAX_KEYS_LISTED])
    return f"{shown}" + (f" and {len(keys) - _MAX_KEYS_LISTED} more" if len(keys) > _MAX_KEYS_LISTED else "")


def training_state(optimizer: torch.optim.Optimizer, iteration: int, epoch: int,
                   extra: Dict[str, Any] | None = None) -> Dict[str, Any]:
    """What resuming needs besides the model weights: optimizer state, iteration, epoch, RNG state."""
    state = {"optimizer": optimizer.state_dict(), "iter": int(iteration), "epoch": int(epoch),
             "torch_rng": torch.get_rng_state()}
    if extra:
        state.update(extra)
    return state
