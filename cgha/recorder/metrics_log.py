"""Training logs a person (and a script) can read: `metrics.jsonl` plus tensorboard when it is installed."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Optional

from cgha.utils.atomic import write_bytes_atomic

try:
    from torch.utils.tensorboard import SummaryWriter
except ImportError:  # tensorboard is optional
    SummaryWriter = None


class MetricsLog:
    """Appends one JSON object per logged step to `{logdir}/metrics.jsonl` (iter, epoch, every loss by name)."""

    def __init__(self, logdir: str | Path, tensorboard: bool = True):
        self.logdir = Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path = self.logdir / "metrics.jsonl"
        self._file = open(self.path, "a", buffering=1)
        self._writer: Optional[object] = None
        if tensorboard and SummaryWriter is not None:
            self._writer = SummaryWriter(str(self.logdir))

    def log(self, iteration: int, epoch: int, values: Dict[str, float]) -> None:
        record = {"iter": int(iteration), "epoch": int(epoch)}
        record.update({name: _plain(value) for name, value in values.items()})
        self._file.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in record.items():
                if name not in ("iter", "epoch") and isinstance(value, float) and math.isfinite(value):
                    self._writer.add_scalar(name, value, iteration)

    def truncate_after(self, iteration: int) -> int:
        """Drop the records past `iteration` (logged by a run that then stopped before its next checkpoint), so a
        resumed run's records follow on without duplicate iterations; returns how many were dropped. A line cut
        short by a killed process is dropped too."""
        self._file.close()
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            record = _parsed(line)
            if record is not None and int(record.get("iter", 0)) <= iteration:
                kept.append(line + "\n")
            elif line.strip():
                dropped += 1
        if dropped:
            write_bytes_atomic(self.path, "".join(kept).encode())
        self._file = open(self.path, "a", buffering=1)
        if dropped and self._writer is not None:
            # Tensorboard hides the earlier event files' steps from purge_step on, as it does for a restarted run.
            self._writer.close()
            self._writer = SummaryWriter(str(self.logdir), purge_step=iteration + 1)
        return dropped

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def _plain(value) -> float:
    value = float(value.detach()) if hasattr(value, "detach") else float(value)
    return value if math.isfinite(value) else str(value)


def _parsed(line: str) -> Optional[dict]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_metrics(path: str | Path) -> list:
    """All records of a metrics.jsonl file."""
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def training_history(metrics_path: str | Path) -> Dict:
    """From a run's metrics.jsonl: its last Gaussian count and peak CUDA memory, and (iteration, seconds, Gaussians,
    held-out PSNRs) at every evaluation during training (train.eval_every), for time-to-quality and count plots."""
    records = read_metrics(metrics_path)
    last: Dict = {}
    history = []
    for record in records:
        last.update({key: record[key] for key in ("num_gaussians", "train_seconds", "cuda_peak_mib") if key in record})
        evaluated = {key[len("eval_"):]: value for key, value in record.items()
                     if key.startswith("eval_") and key.endswith("_psnr")}
        if evaluated:
            history.append({"iter": record["iter"], "train_seconds": last.get("train_seconds"),
                            "num_gaussians": last.get("num_gaussians"), **evaluated})
    return {"final_num_gaussians": last.get("num_gaussians"), "cuda_peak_mib": last.get("cuda_peak_mib"),
            "history": history}
