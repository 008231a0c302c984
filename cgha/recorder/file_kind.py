"""What a file is, from its first bytes: so a wrong file given as a checkpoint is named for what it is.

Without this, a PNG given as a raw checkpoint gets torch's long advice about `weights_only`, and an empty file
given as a compact avatar is reported as something else altogether. The loaders sniff first and say, e.g.,
"avatar.png is a PNG image, not a Gaussian-head checkpoint".
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

# The compact avatar file's signature (cgha/compact/codec.py writes it); kept here with the other signatures so
# that the codec can use this module without an import cycle.
COMPACT_MAGIC = b"CGHA"
_SNIFF_BYTES = 512
_ZIP_LOCAL_HEADER = b"PK\x03\x04"
_ZIP_EMPTY_ARCHIVE = b"PK\x05\x06"
_ZIP_NAME_OFFSET = 30  # the file name of a zip entry follows its 30-byte local header
_PICKLE_PROTOCOL_2 = b"\x80\x02"  # torch.save's legacy (pre-1.6) format starts with a pickled magic number

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png", "a PNG image"),
    (b"\xff\xd8\xff", "jpeg", "a JPEG image"),
    (b"\x93NUMPY", "npy", "a NumPy .npy array"),
    (b"\x1f\x8b", "gzip", "a gzip-compressed file"),
    (b"%PDF", "pdf", "a PDF document"),
    (b"GIF8", "gif", "a GIF image"),
)


@dataclass(frozen=True)
class FileKind:
    """`name`: a short id (empty, png, jpeg, cgha, torch, torch_truncated, torch_legacy, npz, zip, text, ...);
    `description`: how a message names it ("a PNG image")."""
    name: str
    description: str

    @property
    def is_torch_checkpoint(self) -> bool:
        """Whether torch.load can read it (a complete zip checkpoint or the legacy pickle format)."""
        return self.name in ("torch", "torch_legacy")


def file_kind(path: str | os.PathLike) -> FileKind:
    """Sniff an existing, readable file's kind from its first bytes (and, for a zip, its entry names)."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(_SNIFF_BYTES)
    if not head:
        return FileKind("empty", "an empty file (0 bytes)")
    if head.startswith(COMPACT_MAGIC):
        return FileKind("cgha", "a compressed avatar file (.cgha)")
    for signature, name, description in _SIGNATURES:
        if head.startswith(signature):
            return FileKind(name, description)
    if head.startswith(_ZIP_LOCAL_HEADER) or head.startswith(_ZIP_EMPTY_ARCHIVE):
        return _zip_kind(path, head)
    if head.startswith(_PICKLE_PROTOCOL_2):
        return FileKind("torch_legacy", "a legacy (pickle) PyTorch file")
    return _text_or_binary(head)


def describe_file_kind(path: str | os.PathLike) -> str:
    """How a message names the file: "a PNG image", "an empty file (0 bytes)", "a PyTorch checkpoint", ..."""
    return file_kind(path).description


def _zip_kind(path: Path, head: bytes) -> FileKind:
    """torch.save writes a zip archive whose first entry is `<archive>/data.pkl`; numpy.savez writes `*.npy`."""
    first_entry = _first_zip_entry_name(head)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        # The central directory sits at the end of the file, so a zip cut short has none.
        if first_entry.endswith("/data.pkl") or first_entry == "data.pkl":
            return FileKind("torch_truncated", "a truncated or damaged PyTorch checkpoint (its zip directory at "
                                               "the end of the file is missing or broken)")
        return FileKind("zip_damaged", "a truncated or damaged zip archive")
    if any(name.endswith("data.pkl") for name in names):
        return FileKind("torch", "a PyTorch checkpoint")
    if names and all(name.endswith(".npy") for name in names):
        return FileKind("npz", "a NumPy .npz archive")
    return FileKind("zip", "a zip archive that is not a PyTorch checkpoint")


def _first_zip_entry_name(head: bytes) -> str:
    if not head.startswith(_ZIP_LOCAL_HEADER) or len(head) < _ZIP_NAME_OFFSET:
        return ""
    name_length = int.from_bytes(head[26:28], "little")
    return head[_ZIP_NAME_OFFSET:_ZIP_NAME_OFFSET + name_length].decode("utf-8", errors="replace")


def _text_or_binary(head: bytes) -> FileKind:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        # A multi-byte character cut at the sniff limit still leaves text; a bad byte earlier means binary.
        text = head[:error.start].decode("utf-8") if error.start >= len(head) - 3 else ""
    if text.strip() and all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        first_line = text.strip().splitlines()[0][:40]
        return FileKind("text", f"a text file (starting {first_line!r})")
    return FileKind("unknown", f"not a file type this code reads (first bytes {head[:8].hex(' ')})")
