"""Checkpoint files: GHA-named state dicts written atomically, read without pickle, verified by a checksum.

Files are `torch.save` archives that hold only tensors, numbers, strings, lists and dicts, so they load with
`torch.load(..., weights_only=True)`; GHA's own `*_latest` files (plain state dicts) load the same way. Every
problem a user can cause — a missing, truncated, corrupt or foreign file, or one for another model — becomes a
`CheckpointError` naming the file (and saying what the file is when it is not a checkpoint at all).

Checksum. torch.save writes a zip archive; torch does not check the CRC-32 of its entries, so flipped bytes load
as silently changed weights. Our files carry a SHA-256 of every byte before the archive's end-of-central-directory
record, stored as the archive *comment* (a field of that record made for free text, which zip readers, torch
included, skip). The payload therefore stays exactly what torch.save wrote: `torch.load` — ours, GHA's code, any
tool — still gets the plain state dict, and no sidecar file can go missing or stale. A wrapper dict
{"sha256": ..., "state": ...} would have broken GHA's own loaders. Files without the comment (GHA's own, or older
ones of ours) load unverified; every loaded file is checked for NaN/inf values.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Dict, Mapping, Optional

import torch
from torch import nn

from cgha.errors import CheckpointError
from cgha.recorder.file_kind import file_kind
from cgha.utils.atomic import atomic_output

_MAX_KEYS_LISTED = 5
_EOCD_SIGNATURE = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes, then the archive comment
_EOCD_SIZE = 22
_COMMENT_LENGTH_OFFSET = 20  # within that record
_CHECKSUM_PREFIX = b"cgha-sha256:"
_CHECKSUM_RECORD = re.compile(rb"cgha-sha256:([0-9a-f]{64})")
_CHECKSUM_RECORD_SIZE = len(_CHECKSUM_PREFIX) + 64
_HASH_CHUNK = 1 << 20


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to a temp file in the same folder, add the checksum comment, then rename: a crash never leaves
    a half-written file."""
    with atomic_output(path) as tmp:
        torch.save(obj, tmp)
        _append_checksum(tmp)


def load_file(path: str | os.PathLike, what: str = "checkpoint") -> Any:
    """Load a checkpoint on the CPU with `weights_only=True`, verifying its checksum when it has one.

    CheckpointError (one line, naming the file) for a missing file, a file that is not a checkpoint (saying what
    it is), a truncated or corrupt one (suggesting an earlier copy), or one holding NaN/inf values."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    _check_kind(path, what)
    _verify_checksum(path, what)
    value = _torch_load(path, what)
    _check_finite(value, path, what)
    return value


def _recovery_hint(path: Path) -> str:
    stem = path.name[:-len("_latest")] if path.name.endswith("_latest") else path.name
    return (f"restore it, use a numbered copy ({stem}_epoch_N in {path.parent}) or set train.resume=false to "
            f"start the run over")


def _check_kind(path: Path, what: str) -> None:
    try:
        kind = file_kind(path)
    except OSError as error:
        raise CheckpointError(f"cannot read {what} {path}: {error.strerror or error}") from None
    if kind.name in ("torch_truncated", "zip_damaged"):
        # A zip that cannot be opened at all is, among our files, a checkpoint whose writing was cut short.
        raise CheckpointError(f"{path}: not a readable {what}: {kind.description}; {_recovery_hint(path)}")
    if not kind.is_torch_checkpoint:
        raise CheckpointError(f"{path} is {kind.description}, not a {what}")


def _torch_load(path: Path, what: str) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: refusing to load a {what} that needs arbitrary pickled objects "
                              f"({first_line})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
        first_line = str(error).strip().splitlines()[0].split(". ")[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable {what} (truncated or corrupt: {first_line}); "
                              f"{_recovery_hint(path)}") from None


# ------------------------------------------------------------------------------------------------- checksum
def _sha256_of_prefix(handle: BinaryIO, length: int) -> str:
    digest = hashlib.sha256()
    handle.seek(0)
    remaining = length
    while remaining > 0:
        chunk = handle.read(min(_HASH_CHUNK, remaining))
        if not chunk:
            break
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def _append_checksum(path: Path) -> None:
    """Store the SHA-256 of everything before torch.save's end-of-central-directory record as its comment."""
    size = path.stat().st_size
    with open(path, "rb+") as handle:
        handle.seek(size - _EOCD_SIZE)
        record = handle.read(_EOCD_SIZE)
        if not (record.startswith(_EOCD_SIGNATURE) and record[_COMMENT_LENGTH_OFFSET:] == b"\0\0"):
            raise RuntimeError(f"{path}: torch.save did not end the archive with a comment-free zip record")
        checksum = _CHECKSUM_PREFIX + _sha256_of_prefix(handle, size - _EOCD_SIZE).encode()
        handle.seek(size - _EOCD_SIZE + _COMMENT_LENGTH_OFFSET)
        handle.write(struct.pack("<H", len(checksum)) + checksum)


def _stored_checksum(handle: BinaryIO, size: int, path: Path, what: str) -> Optional[str]:
    """The checksum in the archive comment; None for a file without one (GHA's own files)."""
    tail_size = _EOCD_SIZE + _CHECKSUM_RECORD_SIZE
    if size < tail_size:
        return None
    handle.seek(size - tail_size)
    tail = handle.read(tail_size)
    announced = struct.unpack_from("<H", tail, _COMMENT_LENGTH_OFFSET)[0]
    if not tail.startswith(_EOCD_SIGNATURE) or announced != _CHECKSUM_RECORD_SIZE:
        return None
    match = _CHECKSUM_RECORD.fullmatch(tail[_EOCD_SIZE:])
    if match is None:
        raise CheckpointError(f"{path}: the {what}'s checksum record is damaged; {_recovery_hint(path)}")
    return match.group(1).decode()


def _verify_checksum(path: Path, what: str) -> None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        stored = _stored_checksum(handle, size, path, what)
        if stored is None:
            return
        actual = _sha256_of_prefix(handle, size - _EOCD_SIZE - _CHECKSUM_RECORD_SIZE)
    if actual != stored:
        raise CheckpointError(f"{path}: checksum mismatch, the {what} changed after it was written (flipped bytes "
                              f"or a partial overwrite); {_recovery_hint(path)}")


def _check_finite(value: Any, path: Path, what: str, key: str = "") -> None:
    """NaN/inf anywhere in a loaded checkpoint is an error naming the file and the entry."""
    if isinstance(value, torch.Tensor):
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(f"{path}: the {what} holds non-finite values in '{key or '<tensor>'}' ({bad} of "
                                  f"{value.numel()}): corrupt, or saved from a diverged run; {_recovery_hint(path)}")
    elif isinstance(value, Mapping):
        for name, item in value.items():
            _check_finite(item, path, what, f"{key}.{name}" if key else str(name))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_finite(item, path, what, f"{key}[{index}]")


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
