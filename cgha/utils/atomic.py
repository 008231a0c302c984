"""Atomic file output: write to a temporary file in the target's folder, then rename it into place.

Readers (and a resumed run after a crash) never see a half-written file, because a rename within one file system
replaces the old file in a single step.
"""
from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

# atomic_output's temporary files are `.{target name}.{random}.tmp` beside the target.
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on normal exit it is flushed to disk and renamed to `path`, on an
    exception it is removed and `path` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temp_files(folder: str | os.PathLike) -> List[Tuple[Path, int]]:
    """Remove the temporary files of `atomic_output` in `folder` (only those a killed process left: call it when
    no other process can be writing there); returns (path, size in bytes) of each removed file."""
    removed = []
    for path in Path(folder).glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
        if path.is_file() and not path.is_symlink():
            size = path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append((path, size))
    return removed


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)


def _hidden_sibling(directory: Path, tag: str) -> Path:
    """A new hidden folder next to `directory` (same file system, so renames are atomic)."""
    path = directory.parent / f".{directory.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}"
    path.mkdir()
    return path


def write_directory_atomic(directory: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Build a whole folder with `write(tmp_dir)` in a hidden sibling, then swap it in for `directory` (replacing
    an old one). On an exception the partial folder is removed and `directory` is left as it was."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden_sibling(directory, "tmp")
    try:
        write(tmp)
        if directory.exists():
            trash = _hidden_sibling(directory, "old")
            os.replace(directory, trash / "old")
            os.replace(tmp, directory)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory
