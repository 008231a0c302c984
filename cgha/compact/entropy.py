"""Lossless entropy coding of one array's encoded bytes in the compressed avatar file.

Only the standard library's coders: on the arrays of this file (Morton-sorted positions, indices, opacity,
codebooks, int8 weights) zstandard (levels 19 and 22) and brotli (11) came within 3% of lzma in bytes
(benchmarks/bench_compact_coders.py, docs/compaction.md), so neither earned a dependency.

Before coding, multi-byte elements can be byte-shuffled (byte 0 of every element, then byte 1, ...): the high bytes
of small integers and the exponents of floats then form long runs.
"""
from __future__ import annotations

import lzma
import zlib

import numpy as np

CODERS = ("none", "zlib", "lzma")
# Raw LZMA2 without the xz container: its ~60 bytes of framing per array would add up over a network's many small
# tensors; LZMA2's own end marker still tells a complete stream from a cut one.
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def shuffle(data: bytes, itemsize: int) -> bytes:
    """Bytes regrouped by position inside `itemsize`-byte elements; len(data) must be a multiple of itemsize."""
    if itemsize <= 1:
        return data
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, itemsize).T.tobytes()


def unshuffle(data: bytes, itemsize: int) -> bytes:
    """Inverse of shuffle. ValueError when the length is not a multiple of itemsize."""
    if itemsize <= 1:
        return data
    if len(data) % itemsize:
        raise ValueError(f"{len(data)} bytes are not whole {itemsize}-byte elements")
    return np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1).T.tobytes()


def compress(data: bytes, coder: str) -> bytes:
    if coder == "zlib":
        return zlib.compress(data, 9)
    if coder == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    if coder == "none":
        return data
    raise ValueError(f"unknown entropy coder '{coder}', expected one of {CODERS}")


def decompress(data: bytes, coder: str, expected_length: int) -> bytes:
    """Decoded bytes, which must be exactly `expected_length` long. Never produces more than expected_length + 1
    bytes, so a damaged stream cannot exhaust memory; every failure is a ValueError."""
    try:
        if coder == "zlib":
            decoder = zlib.decompressobj()
            out = decoder.decompress(data, expected_length + 1)
            complete = decoder.eof and not decoder.unused_data
        elif coder == "lzma":
            decoder = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
            out = decoder.decompress(data, expected_length + 1)
            complete = decoder.eof and not decoder.unused_data
        elif coder == "none":
            out, complete = data, True
        else:
            raise ValueError(f"unknown entropy coder '{coder}'")
    except (zlib.error, lzma.LZMAError, EOFError) as error:
        raise ValueError(f"{coder} stream is damaged ({error})") from None
    if not complete or len(out) != expected_length:
        raise ValueError(f"{coder} stream decodes to {len(out)}{'+' if not complete else ''} bytes, "
                         f"expected {expected_length}")
    return out
