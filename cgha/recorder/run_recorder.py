"""Where one training run writes: GHA-named checkpoints, metrics.jsonl, images and the resolved config."""
from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import IO, Any, Dict, Optional

import numpy as np

from cgha.config import RecorderConfig, save_config
from cgha.errors import ConfigError
from cgha.recorder.checkpoint import save_atomic
from cgha.recorder.metrics_log import MetricsLog
from cgha.recorder.run_files import RunFiles
from cgha.utils.atomic import remove_temp_files
from cgha.utils.image_io import write_image
from cgha.utils.paths import ensure_writable_folders

log = logging.getLogger(__name__)


class RunRecorder:
    """Outputs of a run: `{checkpoint_path}/{name}/{kind}_latest` (+ `{kind}_epoch_{E}` copies, as GHA names them),
    `{logdir}/metrics.jsonl`, `{result_path}/{name}/*.jpg` and `{checkpoint_path}/{name}/config.yaml`."""

    def __init__(self, cfg: RecorderConfig, config: Any = None):
        self.cfg = cfg
        self.files = RunFiles(Path(cfg.checkpoint_path) / cfg.name)
        self.checkpoint_dir = self.files.directory
        self.result_dir = Path(cfg.result_path) / cfg.name
        ensure_writable_folders({"recorder.checkpoint_path (or recorder.name)": self.checkpoint_dir,
                                 "recorder.logdir": cfg.logdir,
                                 "recorder.result_path (or recorder.name)": self.result_dir})
        self._lock: Optional[_RunLock] = _RunLock.acquire(self.checkpoint_dir)
        self._remove_stale_temp_files()
        self.metrics = MetricsLog(cfg.logdir)
        if config is not None:
            save_config(config, self.files.config)

    def _remove_stale_temp_files(self) -> None:
        """Delete checkpoint temp files a killed run left behind (SIGKILL skips atomic_output's cleanup). Safe only
        while holding the run lock: no other training can be writing into this folder."""
        removed = remove_temp_files(self.checkpoint_dir)
        if removed:
            log.info("removed %d unfinished checkpoint file(s) (%.1f MB) left by an interrupted run in %s",
                     len(removed), sum(size for _, size in removed) / 1e6, self.checkpoint_dir)

    def checkpoint(self, kind: str, tag: str = "latest") -> Path:
        """Path of a checkpoint file, e.g. checkpoint('meshhead') -> .../meshhead_latest."""
        return self.files.checkpoint(kind, tag)

    def save_checkpoints(self, states: Dict[str, Any], epoch: Optional[int] = None) -> None:
        """Write each `{kind}_latest` atomically, plus GHA's numbered `{kind}_epoch_{epoch}` copy when given."""
        for kind, state in states.items():
            save_atomic(state, self.checkpoint(kind))
            if epoch is not None:
                save_atomic(state, self.checkpoint(kind, f"epoch_{epoch}"))

    def log(self, iteration: int, epoch: int, values: Dict[str, float]) -> None:
        self.metrics.log(iteration, epoch, values)

    def truncate_log_after(self, iteration: int) -> int:
        """Forget the metrics.jsonl records past `iteration` (see MetricsLog.truncate_after); returns their count."""
        return self.metrics.truncate_after(iteration)

    def save_image(self, name: str, image: np.ndarray) -> Path:
        path = self.result_dir / name
        write_image(path, image)
        return path

    def close(self) -> None:
        self.metrics.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None


class _RunLock:
    """An exclusive `fcntl.flock` on `{checkpoint folder}/.lock`, so that a second training into the same folder
    fails at once instead of interleaving its checkpoints and logs with the first one's.

    The kernel drops the lock when its process exits, however it exits (crash, SIGKILL), so a stale lock cannot
    block the next run. Recorders of one process share the lock (counted), since a process that resumes a run it
    is still holding (tests do) is one writer, not two."""

    _held: Dict[Path, "_RunLock"] = {}
    FILE_NAME = ".lock"

    def __init__(self, folder: Path, handle: IO[str]):
        self.folder, self.handle, self.users = folder, handle, 1

    @classmethod
    def acquire(cls, folder: Path) -> "_RunLock":
        key = folder.resolve()
        held = cls._held.get(key)
        if held is not None:
            held.users += 1
            return held
        handle = open(folder / cls.FILE_NAME, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip()
            handle.close()
            raise ConfigError(f"another training is writing to {folder}{f' ({owner})' if owner else ''}: wait for "
                              f"it to finish or choose another recorder.name") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        lock = cls._held[key] = cls(key, handle)
        return lock

    def release(self) -> None:
        """Give the lock up when the last recorder of this process that holds it closes."""
        self.users -= 1
        if self.users == 0:
            self._held.pop(self.folder, None)
            fcntl.flock(self.handle.fileno(), fcntl.LOCK_UN)
            self.handle.close()
