"""The avatar a viewer (or any tool given one path) shows: a `.cgha` file, or a raw run folder holding the
checkpoints a training run writes (GHA's `gaussianhead_latest` + `supres_latest`, and its `config.yaml`, which
says the model's kind and sizes). Loading itself is cgha.avatar.inference's `load_avatar`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple

import torch

from cgha.avatar.inference import Avatar, load_avatar
from cgha.avatar.model import model_config
from cgha.compact.codec import is_compact_file
from cgha.config import ReenactConfig, TrainConfig, load_config
from cgha.errors import CheckpointError
from cgha.recorder.file_kind import describe_file_kind, file_kind
from cgha.recorder.run_files import RunFiles

WHAT = "a .cgha file or a raw run folder (gaussianhead_latest, supres_latest, config.yaml)"


def avatar_config(path: str | os.PathLike) -> Tuple[object, RunFiles | None]:
    """The config that loads the avatar at `path` and the run folder it lies in (None for a lone .cgha file)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"avatar not found: {path} ({WHAT})")
    if path.is_dir():
        run = RunFiles(path)
        if not run.config.is_file():
            raise CheckpointError(f"{path} is a folder without {run.config.name}: not a raw run folder ({WHAT})")
        cfg = load_config(TrainConfig, run.config, ["load_gaussianhead_checkpoint=", "load_supres_checkpoint="])
        cls, _ = model_config(cfg)
        head = run.checkpoint(cls.checkpoint_kind)
        if not head.is_file():
            hint = f"; view its compressed file: {run.compact}" if run.compact.is_file() else ""
            raise CheckpointError(f"{path}: no raw checkpoint {head.name} in the folder{hint}")
        cfg.load_gaussianhead_checkpoint = str(head)
        cfg.load_supres_checkpoint = str(run.checkpoint("supres"))
        return cfg, run
    if not is_compact_file(path):
        what = describe_file_kind(path)
        hint = " (a raw checkpoint: give its run folder)" if file_kind(path).is_torch_checkpoint else ""
        raise CheckpointError(f"{path} is {what}{hint}, not an avatar: give {WHAT}")
    return load_config(ReenactConfig, None, [f"load_gaussianhead_checkpoint={path}"]), None


def open_avatar(path: str | os.PathLike, device: torch.device) -> Avatar:
    """The avatar at `path` (see the module docstring), in eval mode on `device`; CheckpointError naming the path
    when it is missing, corrupt or not an avatar."""
    cfg, run = avatar_config(path)
    return load_avatar(cfg, device, run=run)
