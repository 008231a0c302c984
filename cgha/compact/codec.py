"""The compressed avatar file: a small, pickle-free container of named arrays plus JSON metadata.

Layout (all integers little-endian):

    magic        4 bytes   b"CGHA"
    version      uint16    FORMAT_VERSION
    flags        uint16    0 (reserved)
    header_len   uint32    bytes of the JSON header
    payload_len  uint64    bytes of the array payload
    header       JSON      {"arrays": [{name, dtype, shape, encoding, offset, length, ...}], "metadata": {...}}
    payload      bytes     array encodings, back to back at their offsets
    crc32        uint32    zlib.crc32 of every byte before it

Lengths are in the fixed prefix so a truncated file is recognised before anything else is trusted; the checksum
catches flipped bits; the version lets a newer file fail with a clear message instead of being misread.

Encodings of an array (chosen per array by the writer):
    raw         stored as is; dtype float32, float16, int32, int64, uint8 or int8
    fp16, fp32  floating array cast to that precision; read back as float32
    bitpacked   integers in [0, K) at ceil(log2 K) bits each (K from the options, default max + 1); read as int64
    uint8_unit  values in [0, 1] rounded to k / 255; read back as float32 (error <= 1 / 510)
"""
from __future__ import annotations

import json
import math
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from cgha.errors import CheckpointError
from cgha.recorder.file_kind import COMPACT_MAGIC, describe_file_kind
from cgha.utils.atomic import write_bytes_atomic

MAGIC = COMPACT_MAGIC
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sHHIQ")
_CRC = struct.Struct("<I")
ENCODINGS = ("raw", "fp16", "fp32", "bitpacked", "uint8_unit")
_RAW_DTYPES = ("float32", "float16", "int32", "int64", "uint8", "int8")


# ------------------------------------------------------------------------------------------------ bit packing
def bits_for(num_codes: int) -> int:
    """Bits per index for K codes: ceil(log2 K), at least 1."""
    if num_codes < 1:
        raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    return max(1, math.ceil(math.log2(num_codes)))


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers [N] (each < 2**bits) at `bits` bits each, LSB first; ceil(N * bits / 8) bytes."""
    flat = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)
    planes = ((flat[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)  # [N, bits]
    return np.packbits(planes.reshape(-1), bitorder="little").tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """Inverse of pack_bits: `count` integers of `bits` bits from `data`. Returns [count] int64."""
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), count=count * bits, bitorder="little")
    weights = np.left_shift(np.int64(1), np.arange(bits, dtype=np.int64))
    return planes.reshape(count, bits).astype(np.int64) @ weights


# ------------------------------------------------------------------------------------------------------ encode
def _encode(name: str, array: np.ndarray, encoding: str, options: Mapping[str, Any]) -> Tuple[bytes, Dict]:
    """Payload bytes and header entry (without offset) of one array."""
    array = np.asarray(array)
    entry: Dict[str, Any] = {"name": name, "shape": list(array.shape), "encoding": encoding}
    if encoding == "raw":
        if array.dtype.name not in _RAW_DTYPES:
            raise ValueError(f"array '{name}': raw encoding supports {_RAW_DTYPES}, got {array.dtype}")
        entry["dtype"] = array.dtype.name
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    elif encoding in ("fp16", "fp32"):
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"array '{name}': {encoding} encoding needs a floating array, got {array.dtype}")
        entry["dtype"] = "float32"
        stored = "<f2" if encoding == "fp16" else "<f4"
        with np.errstate(over="ignore"):  # an overflow becomes inf, refused below with the array's name
            data = np.ascontiguousarray(array, dtype=stored).tobytes()
    elif encoding == "bitpacked":
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"array '{name}': bitpacked encoding needs integers, got {array.dtype}")
        if array.size and array.min() < 0:
            raise ValueError(f"array '{name}': bitpacked encoding needs non-negative integers")
        top = int(array.max()) + 1 if array.size else 1
        num_codes = int(options.get("num_codes", top))
        if top > num_codes:
            raise ValueError(f"array '{name}': value {top - 1} does not fit num_codes={num_codes}")
        entry.update(dtype="int64", num_codes=num_codes, bits=bits_for(num_codes))
        data = pack_bits(array, entry["bits"])
    elif encoding == "uint8_unit":
        values = np.asarray(array, dtype=np.float64)
        if not np.all(np.isfinite(values)) or values.min(initial=0.0) < 0.0 or values.max(initial=0.0) > 1.0:
            raise ValueError(f"array '{name}': uint8_unit encoding needs finite values in [0, 1]")
        entry["dtype"] = "float32"
        data = np.ascontiguousarray(np.rint(values * 255.0), dtype=np.uint8).tobytes()
    else:
        raise ValueError(f"array '{name}': unknown encoding '{encoding}', expected one of {ENCODINGS}")
    _check_encoded_finite(name, encoding, entry, data)
    entry["length"] = len(data)
    return data, entry


def _check_encoded_finite(name: str, encoding: str, entry: Mapping[str, Any], data: bytes) -> None:
    """The reader rejects NaN/inf, so the writer must not produce them (e.g. a weight beyond fp16's 65504)."""
    if encoding in ("fp16", "fp32") or (encoding == "raw" and entry["dtype"].startswith("float")):
        stored = {"fp16": "<f2", "fp32": "<f4"}.get(encoding) or np.dtype(entry["dtype"]).newbyteorder("<")
        if not np.all(np.isfinite(np.frombuffer(data, dtype=stored))):
            raise ValueError(f"array '{name}': non-finite values after {encoding} encoding (NaN, inf, or beyond the "
                             f"range of the stored precision)")


def write_compact(path: str | os.PathLike, arrays: Mapping[str, tuple], metadata: Mapping[str, Any]) -> Dict[str, int]:
    """Write a compressed avatar file atomically.

    arrays: name -> (np.ndarray, encoding) or (np.ndarray, encoding, options), e.g. ("bitpacked", {"num_codes": K}).
    metadata: JSON-serialisable (e.g. the model config dict). Returns the payload bytes of every array.
    """
    chunks, entries, offset = [], [], 0
    for name, spec in arrays.items():
        array, encoding, options = (tuple(spec) + ({},))[:3]
        data, entry = _encode(name, array, encoding, options)
        entry["offset"] = offset
        offset += len(data)
        chunks.append(data)
        entries.append(entry)
    header = json.dumps({"arrays": entries, "metadata": dict(metadata)}, separators=(",", ":"),
                        allow_nan=False).encode("utf-8")
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, 0, len(header), offset) + header + b"".join(chunks)
    write_bytes_atomic(path, body + _CRC.pack(zlib.crc32(body)))
    return {entry["name"]: entry["length"] for entry in entries}


# ------------------------------------------------------------------------------------------------------ decode
def _expected_length(entry: Mapping[str, Any]) -> int:
    count = math.prod(entry["shape"])
    encoding = entry["encoding"]
    if encoding == "raw":
        return count * np.dtype(entry["dtype"]).itemsize
    if encoding == "fp16":
        return count * 2
    if encoding == "fp32":
        return count * 4
    if encoding == "bitpacked":
        return (count * entry["bits"] + 7) // 8
    if encoding == "uint8_unit":
        return count
    raise ValueError(f"unknown encoding '{encoding}'")


def _decode(entry: Mapping[str, Any], data: bytes) -> np.ndarray:
    shape, encoding = tuple(entry["shape"]), entry["encoding"]
    if encoding == "raw":
        if entry["dtype"] not in _RAW_DTYPES:
            raise ValueError(f"unsupported dtype '{entry['dtype']}'")
        array = np.frombuffer(data, dtype=np.dtype(entry["dtype"]).newbyteorder("<"))
        return array.astype(entry["dtype"]).reshape(shape)
    if encoding in ("fp16", "fp32"):
        stored = "<f2" if encoding == "fp16" else "<f4"
        return np.frombuffer(data, dtype=stored).astype(np.float32).reshape(shape)
    if encoding == "bitpacked":
        num_codes, bits = int(entry["num_codes"]), int(entry["bits"])
        if bits != bits_for(num_codes):
            raise ValueError(f"{bits} bits do not match num_codes={num_codes}")
        values = unpack_bits(data, math.prod(shape), bits)
        if values.size and values.max() >= num_codes:
            raise ValueError(f"index {values.max()} >= num_codes={num_codes}")
        return values.reshape(shape)
    if encoding == "uint8_unit":
        return (np.frombuffer(data, dtype=np.uint8).astype(np.float32) / np.float32(255.0)).reshape(shape)
    raise ValueError(f"unknown encoding '{encoding}'")


def _reject_non_finite_constant(name: str) -> None:
    """json.loads accepts NaN and Infinity, which the writer never emits (allow_nan=False): a damaged header."""
    raise ValueError(f"non-finite number {name} in the header")


def _check_finite(name: str, array: np.ndarray) -> None:
    """Floating arrays must be finite: the writer only stores finite weights, so NaN/inf means a damaged file (a
    checksum recomputed over changed bytes, or a buggy writer), and would otherwise reach the renderer."""
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(f"array '{name}' holds {bad} non-finite value(s)")


def _parse(path: Path) -> Tuple[Dict[str, Any], bytes]:
    """Validated (header dict, payload bytes) of a compact file; every failure is a one-line CheckpointError."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"compact avatar file {path} does not exist") from None
    except OSError as error:
        raise CheckpointError(f"cannot read compact avatar file {path}: {error.strerror or error}") from None
    if len(blob) < len(MAGIC) or blob[:len(MAGIC)] != MAGIC:
        if 0 < len(blob) < len(MAGIC) and MAGIC.startswith(blob):
            raise CheckpointError(f"{path} is truncated ({len(blob)} bytes): not a complete compact avatar file")
        raise CheckpointError(f"{path} is not a compact avatar file: it is {describe_file_kind(path)}")
    if len(blob) < _PREFIX.size + _CRC.size:
        raise CheckpointError(f"{path} is truncated ({len(blob)} bytes, shorter than the fixed header)")
    _, version, flags, header_len, payload_len = _PREFIX.unpack_from(blob)
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has compact format version {version}, newer than this code reads "
                              f"(up to {FORMAT_VERSION}); update the code")
    if version < 1:
        raise CheckpointError(f"{path} has unsupported compact format version {version} (corrupt file?)")
    expected = _PREFIX.size + header_len + payload_len + _CRC.size
    if len(blob) != expected:
        what = "truncated" if len(blob) < expected else "corrupt or has trailing data"
        raise CheckpointError(f"{path} is {what}: {len(blob)} bytes, the header announces {expected}")
    body = blob[:-_CRC.size]
    (stored_crc,) = _CRC.unpack_from(blob, len(body))
    if zlib.crc32(body) != stored_crc:
        raise CheckpointError(f"{path} is corrupt: checksum mismatch")
    if flags != 0:
        raise CheckpointError(f"{path} uses unknown format flags {flags:#x}")
    try:
        header = json.loads(body[_PREFIX.size:_PREFIX.size + header_len].decode("utf-8"),
                            parse_constant=_reject_non_finite_constant)
        if not isinstance(header, dict) or not isinstance(header.get("arrays"), list) \
                or not isinstance(header.get("metadata"), dict):
            raise ValueError("header lacks 'arrays' or 'metadata'")
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"{path} has a malformed header: {error}") from None
    return header, body[_PREFIX.size + header_len:]


def read_compact(path: str | os.PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Read a compressed avatar file. Returns (name -> decoded np.ndarray, metadata dict).

    Raises CheckpointError (one line, naming the file) for a missing, truncated, corrupt, foreign or newer file.
    """
    path = Path(path)
    header, payload = _parse(path)
    arrays: Dict[str, np.ndarray] = {}
    for entry in header["arrays"]:
        try:
            name, offset, length = str(entry["name"]), int(entry["offset"]), int(entry["length"])
            if any(not isinstance(d, int) or d < 0 for d in entry["shape"]):
                raise ValueError(f"bad shape {entry['shape']}")
            if length != _expected_length(entry) or offset < 0 or offset + length > len(payload):
                raise ValueError(f"array '{name}' does not fit the payload")
            arrays[name] = _decode(entry, payload[offset:offset + length])
            _check_finite(name, arrays[name])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path} has a malformed array entry: {error}") from None
    return arrays, header["metadata"]


def encoded_sizes(path: str | os.PathLike) -> Dict[str, int]:
    """Bytes on disk of every array's payload in a compact file; the rest of the file size is the header."""
    header, _ = _parse(Path(path))
    try:
        return {str(entry["name"]): int(entry["length"]) for entry in header["arrays"]}
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path} has a malformed array entry: {error}") from None


def is_compact_file(path: str | os.PathLike) -> bool:
    """Whether `path` starts with the compact magic bytes (to tell compact from raw torch checkpoints)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False
