"""Errors a user can cause and fix: bad paths, keys, values, data or files.

Entry scripts catch `UserError` and print its message as one line with a non-zero exit status instead of a
traceback; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, NoReturn

from cgha.utils.host_memory import keep_freed_memory_in_process


class UserError(Exception):
    """Base class of errors caused by the user's input; the message names the file, key or value."""


class ConfigError(UserError):
    """An unknown key, a wrong type or an out-of-range value in a YAML config or a command-line override."""


class DataError(UserError):
    """Missing, unreadable or inconsistent files in a subject folder."""


class CheckpointError(UserError):
    """A missing, truncated, corrupt, foreign or incompatible checkpoint file."""


class TrainingDiverged(UserError):
    """A loss term or a parameter became NaN/inf (usually a learning rate too high); the last checkpoint is kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training after its state was saved; the message says where and how to resume."""


def exit_on_user_error(main: Callable[[], object]) -> None:
    """Run `main` as a command-line program: with freed host memory kept in the process (cgha.utils.host_memory:
    nearly twice as fast on a CPU), and a `UserError` as `error: <message>` on stderr and exit status 2."""
    keep_freed_memory_in_process()
    try:
        main()
    except UserError as error:
        _fail(str(error))
    except KeyboardInterrupt as interrupt:
        _fail(str(interrupt) or "interrupted", status=130)


def _fail(message: str, status: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(status)
