"""The names of a run's files: the one place that knows them (GHA's `{kind}_latest` / `{kind}_epoch_{E}`, the
compressed avatar, its report, the resolved config and the avatar's subject record). Looking a file up has no side
effects, so evaluation and reenactment use it too; `RunRecorder` writes through it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

COMPACT_FILE = "gaussianhead_compact.cgha"
COMPACT_REPORT = "compact_report.json"
CONFIG_FILE = "config.yaml"
SUBJECT_FILE = "avatar_subject.json"


class RunFiles:
    """Files of the run in `directory` (= `{recorder.checkpoint_path}/{recorder.name}`)."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @classmethod
    def of(cls, cfg: Any) -> "RunFiles":
        """The run a config (anything with a `recorder` section) writes."""
        return cls(Path(cfg.recorder.checkpoint_path) / cfg.recorder.name)

    def checkpoint(self, kind: str, tag: str = "latest") -> Path:
        """e.g. checkpoint('meshhead') -> {directory}/meshhead_latest; tag 'epoch_3' -> meshhead_epoch_3."""
        return self.directory / f"{kind}_{tag}"

    @property
    def compact(self) -> Path:
        return self.directory / COMPACT_FILE

    @property
    def compact_report(self) -> Path:
        return self.directory / COMPACT_REPORT

    @property
    def config(self) -> Path:
        return self.directory / CONFIG_FILE

    @property
    def subject(self) -> Path:
        """The avatar's record of its training subject (cgha.avatar.subject)."""
        return self.directory / SUBJECT_FILE
