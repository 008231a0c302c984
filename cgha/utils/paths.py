"""Output folders checked before any work: a tool that cannot write its results says so at once, in one line,
instead of failing with a traceback after minutes of training or after computing every metric."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

from cgha.errors import ConfigError


def ensure_writable_folders(folders: Mapping[str, str | Path]) -> None:
    """Create every folder (with its parents) and prove it accepts a file; `folders` maps the config key(s) a user
    would change to the folder they name. Raises ConfigError naming the folder, the key and the reason."""
    for keys, folder in folders.items():
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # Creating a file is the only reliable test: permissions, read-only mounts, full disks and ACLs all
            # show up here, where os.access would miss some of them.
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            reason = error.strerror or type(error).__name__
            raise ConfigError(f"cannot write to the output folder {folder} ({reason}): choose a writable {keys}"
                              ) from None
