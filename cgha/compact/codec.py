"""The compressed avatar file: a small, pickle-free container of named arrays plus JSON metadata.

Layout (all integers little-endian):

    magic        4 bytes   b"CGHA"
    version      uint16    FORMAT_VERSION (2; version-1 files still load: they use no entropy coding and none of
                           the encodings added in 2)
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
  version 2:
    uint        integers in [0, K) as the narrowest of uint8 / uint16 / uint32 holding K - 1 (for entropy coding,
                which byte-aligned values suit better than bit-packed ones); read as int64
    qint        per-channel symmetric quantisation at `bits` (2-8) bits (cgha.compact.channel_quant) along `axis`:
                scales float32 [C], then the levels + qmax bit-packed at `bits` bits; read back as float32
    grid        rows [N, D] on a grid of 2**bits cells per axis (cgha.compact.morton): origin float32 [D], step
                float32 [D], then the zigzag differences of consecutive Morton codes as uint64 [N] (small when the
                rows are Morton-sorted; any order decodes); read back as float32 (error <= step / 2)
    Any encoding may be entropy coded (`"entropy": "zlib" | "lzma"`, cgha.compact.entropy; the writer keeps the
    coded bytes only where they are shorter): `length` is then the coded length, multi-byte elements are
    byte-shuffled first (element size implied by the encoding: 2 for fp16, 8 for grid, ...), and the decoded bytes
    must have the encoding's exact length.
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

from cgha.compact import channel_quant, entropy, morton
from cgha.errors import CheckpointError
from cgha.recorder.file_kind import COMPACT_MAGIC, describe_file_kind
from cgha.utils.atomic import write_bytes_atomic

MAGIC = COMPACT_MAGIC
FORMAT_VERSION = 2
_PREFIX = struct.Struct("<4sHHIQ")
_CRC = struct.Struct("<I")
ENCODINGS = ("raw", "fp16", "fp32", "bitpacked", "uint8_unit", "uint", "qint", "grid")
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
        num_codes = _num_codes(name, array, options)
        entry.update(dtype="int64", num_codes=num_codes, bits=bits_for(num_codes))
        data = pack_bits(array, entry["bits"])
    elif encoding == "uint8_unit":
        values = np.asarray(array, dtype=np.float64)
        if not np.all(np.isfinite(values)) or values.min(initial=0.0) < 0.0 or values.max(initial=0.0) > 1.0:
            raise ValueError(f"array '{name}': uint8_unit encoding needs finite values in [0, 1]")
        entry["dtype"] = "float32"
        data = np.ascontiguousarray(np.rint(values * 255.0), dtype=np.uint8).tobytes()
    elif encoding == "uint":
        entry.update(dtype="int64", num_codes=_num_codes(name, array, options))
        data = np.ascontiguousarray(array, dtype=_uint_dtype(entry["num_codes"])).tobytes()
    elif encoding == "qint":
        entry.update(dtype="float32", bits=int(options.get("bits", 8)), axis=int(options.get("axis", 0)))
        data = _encode_qint(name, array, entry["bits"], entry["axis"])
    elif encoding == "grid":
        entry.update(dtype="float32", bits=int(options.get("bits", 16)))
        data = _encode_grid(name, array, entry["bits"])
    else:
        raise ValueError(f"array '{name}': unknown encoding '{encoding}', expected one of {ENCODINGS}")
    _check_encoded_finite(name, encoding, entry, data)
    coder = options.get("entropy", "none")
    if coder != "none":
        coded = entropy.compress(entropy.shuffle(data, _element_size(entry)), coder)
        if len(coded) < len(data):  # tiny or incompressible arrays stay as they are
            entry["entropy"] = coder
            data = coded
    entry["length"] = len(data)
    return data, entry


def _num_codes(name: str, array: np.ndarray, options: Mapping[str, Any]) -> int:
    """K of an index array (options' num_codes, default max + 1), checked against its values."""
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"array '{name}': index encodings need integers, got {array.dtype}")
    if array.size and array.min() < 0:
        raise ValueError(f"array '{name}': index encodings need non-negative integers")
    top = int(array.max()) + 1 if array.size else 1
    num_codes = int(options.get("num_codes", top))
    if top > num_codes:
        raise ValueError(f"array '{name}': value {top - 1} does not fit num_codes={num_codes}")
    return num_codes


def _uint_dtype(num_codes: int) -> str:
    for dtype in ("<u1", "<u2", "<u4"):
        if num_codes - 1 <= np.iinfo(dtype).max:
            return dtype
    raise ValueError(f"num_codes={num_codes} does not fit 32 bits")


def _encode_qint(name: str, array: np.ndarray, bits: int, axis: int) -> bytes:
    if not np.issubdtype(array.dtype, np.floating) or array.ndim < 1 or not 0 <= axis < array.ndim:
        raise ValueError(f"array '{name}': qint encoding needs a floating array with axis {axis}, got "
                         f"{array.dtype} {list(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"array '{name}': qint encoding needs finite values")
    levels, scales = channel_quant.quantise(array, bits, axis)
    return scales.astype("<f4").tobytes() + pack_bits(levels + channel_quant.qmax(bits), bits)


def _encode_grid(name: str, array: np.ndarray, bits: int) -> bytes:
    if not np.issubdtype(array.dtype, np.floating) or array.ndim != 2 or not np.all(np.isfinite(array)):
        raise ValueError(f"array '{name}': grid encoding needs finite floating rows [N, D], got {array.dtype} "
                         f"{list(array.shape)}")
    morton.check_grid(array.shape[1], bits)
    origin, step = morton.grid_frame(array, bits)
    codes = morton.morton_encode(morton.to_cells(array, origin, step, bits), bits).astype(np.int64)
    deltas = np.diff(codes, prepend=np.int64(0))
    zigzag = (deltas << np.int64(1)) ^ (deltas >> np.int64(63))  # small magnitudes -> small unsigned values
    return origin.astype("<f4").tobytes() + step.astype("<f4").tobytes() + zigzag.astype("<u8").tobytes()


def _element_size(entry: Mapping[str, Any]) -> int:
    """Bytes per element of an encoding's bytes, for the shuffle before entropy coding (1: no shuffle)."""
    encoding = entry["encoding"]
    if encoding == "raw":
        return np.dtype(entry["dtype"]).itemsize
    if encoding in ("fp16", "fp32"):
        return 2 if encoding == "fp16" else 4
    if encoding == "uint":
        return np.dtype(_uint_dtype(int(entry["num_codes"]))).itemsize
    if encoding == "grid":
        return 8
    return 1


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
    if encoding == "uint":
        return count * _element_size(entry)
    if encoding == "qint":
        bits, axis = int(entry["bits"]), int(entry["axis"])
        channel_quant.qmax(bits)
        if not 0 <= axis < len(entry["shape"]):
            raise ValueError(f"axis {axis} outside shape {entry['shape']}")
        return 4 * entry["shape"][axis] + (count * bits + 7) // 8
    if encoding == "grid":
        if len(entry["shape"]) != 2:
            raise ValueError(f"grid encoding needs rows [N, D], got shape {entry['shape']}")
        morton.check_grid(entry["shape"][1], int(entry["bits"]))
        return 8 * entry["shape"][1] + 8 * entry["shape"][0]
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
    if encoding == "uint":
        num_codes = int(entry["num_codes"])
        values = np.frombuffer(data, dtype=_uint_dtype(num_codes)).astype(np.int64)
        if values.size and values.max() >= num_codes:
            raise ValueError(f"index {values.max()} >= num_codes={num_codes}")
        return values.reshape(shape)
    if encoding == "qint":
        bits, axis = int(entry["bits"]), int(entry["axis"])
        channels = shape[axis]
        scales = np.frombuffer(data[:4 * channels], dtype="<f4")
        levels = unpack_bits(data[4 * channels:], math.prod(shape), bits) - channel_quant.qmax(bits)
        with np.errstate(over="ignore", invalid="ignore"):  # a damaged scale: refused as non-finite by the caller
            return channel_quant.dequantise(levels.reshape(shape), scales, axis)
    if encoding == "grid":
        count, dims = shape
        bits = int(entry["bits"])
        origin, step = (np.frombuffer(data[i * 4 * dims:(i + 1) * 4 * dims], dtype="<f4") for i in (0, 1))
        zigzag = np.frombuffer(data[8 * dims:], dtype="<u8")
        deltas = (zigzag >> np.uint64(1)).astype(np.int64) ^ -(zigzag & np.uint64(1)).astype(np.int64)
        codes = np.cumsum(deltas, dtype=np.int64).astype(np.uint64)  # wraps harmlessly on damaged data
        with np.errstate(over="ignore", invalid="ignore"):
            return morton.from_cells(morton.morton_decode(codes, dims, bits), origin, step).reshape(shape)
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


def _parse(path: Path) -> Tuple[Dict[str, Any], bytes, int]:
    """Validated (header dict, payload bytes, format version) of a compact file; every failure is a one-line
    CheckpointError."""
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
    return header, body[_PREFIX.size + header_len:], version


def read_compact(path: str | os.PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Read a compressed avatar file. Returns (name -> decoded np.ndarray, metadata dict).

    Raises CheckpointError (one line, naming the file) for a missing, truncated, corrupt, foreign or newer file.
    """
    path = Path(path)
    header, payload, version = _parse(path)
    arrays: Dict[str, np.ndarray] = {}
    for entry in header["arrays"]:
        try:
            name, offset, length = str(entry["name"]), int(entry["offset"]), int(entry["length"])
            if any(not isinstance(d, int) or d < 0 for d in entry["shape"]):
                raise ValueError(f"bad shape {entry['shape']}")
            expected = _expected_length(entry)
            coder = entry.get("entropy", "none")
            if coder == "none" and length != expected or offset < 0 or length < 0 or offset + length > len(payload):
                raise ValueError(f"array '{name}' does not fit the payload")
            data = payload[offset:offset + length]
            if coder != "none":
                if coder not in entropy.CODERS or version < 2:
                    raise ValueError(f"array '{name}' has unknown entropy coder {coder!r}")
                data = entropy.unshuffle(entropy.decompress(data, coder, expected), _element_size(entry))
            arrays[name] = _decode(entry, data)
            _check_finite(name, arrays[name])
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path} has a malformed array entry: {error}") from None
    return arrays, header["metadata"]


def encoded_sizes(path: str | os.PathLike) -> Dict[str, int]:
    """Bytes on disk of every array's payload in a compact file; the rest of the file size is the header."""
    header, _, _ = _parse(Path(path))
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
