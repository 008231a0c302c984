"""Where one training run writes: GHA-named checkpoints, metrics.jsonl, images and the resolved config."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from cgha.config import RecorderConfig, save_config
from cgha.recorder.checkpoint import save_atomic
from cgha.recorder.metrics_log import MetricsLog
from cgha.utils.image_io import write_image


class RunRecorder:
    """Outputs of a run: `{checkpoint_path}/{name}/{kind}_latest` (+ `{kind}_epoch_{E}` copies, as GHA names them),
    `{logdir}/metrics.jsonl`, `{result_path}/{name}/*.jpg` and `{checkpoint_path}/{name}/config.yaml`."""

    def __init__(self, cfg: RecorderConfig, config: Any = None):
        self.cfg = cfg
        self.checkpoint_dir = Path(cfg.checkpoint_path) / cfg.name
        self.result_dir = Path(cfg.result_path) / cfg.name
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        self.result_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = MetricsLog(cfg.logdir)
        if config is not None:
            save_config(config, self.checkpoint_dir / "config.yaml")

    def checkpoint(self, kind: str, tag: str = "latest") -> Path:
        """Path of a checkpoint file, e.g. checkpoint('meshhead') -> .../meshhead_latest."""
        return self.checkpoint_dir / f"{kind}_{tag}"

    def save_checkpoints(self, states: Dict[str, Any], epoch: Optional[int] = None) -> None:
        """Write each `{kind}_latest` atomically, plus GHA's numbered `{kind}_epoch_{epoch}` copy when given."""
        for kind, state in states.items():
            save_atomic(state, self.checkpoint(kind))
            if epoch is not None:
                save_atomic(state, self.checkpoint(kind, f"epoch_{epoch}"))

    def log(self, iteration: int, epoch: int, values: Dict[str, float]) -> None:
        self.metrics.log(iteration, epoch, values)

    def save_image(self, name: str, image: np.ndarray) -> Path:
        path = self.result_dir / name
        write_image(path, image)
        return path

    def close(self) -> None:
        self.metrics.close()
