"""Entropy coders compared on the arrays of a compressed avatar file: bytes and encode / decode time per part.

Reads a file written without entropy coding (`compact.store.entropy=none`; its Gaussians are Morton-sorted and
its indices narrow integers either way), byte-shuffles every array as the writer does, and codes it with the
standard library's zlib (level 9) and lzma (LZMA2 preset 9e, raw) and, where installed, zstandard (levels 19 and
22) and brotli (quality 11): the evidence for which coder the format uses (cgha/compact/entropy.py).

    python benchmarks/bench_compact_coders.py FILE.cgha [--out result.json]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Dict, Tuple

from cgha.compact import entropy
from cgha.compact.codec import _element_size, _parse  # the container's own view of its arrays

Coder = Tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]


def coders() -> Dict[str, Coder]:
    """name -> (encode, decode) of every coder available here."""
    import lzma
    import zlib

    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    found: Dict[str, Coder] = {
        "zlib9": (lambda b: zlib.compress(b, 9), zlib.decompress),
        "lzma9e": (lambda b: lzma.compress(b, format=lzma.FORMAT_RAW, filters=filters),
                   lambda b: lzma.decompress(b, format=lzma.FORMAT_RAW, filters=filters)),
    }
    try:
        import zstandard

        for level in (19, 22):
            found[f"zstd{level}"] = (zstandard.ZstdCompressor(level=level).compress,
                                     zstandard.ZstdDecompressor().decompress)
    except ImportError:
        pass
    try:
        import brotli

        found["brotli11"] = (lambda b: brotli.compress(b, quality=11), brotli.decompress)
    except ImportError:
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    header, payload, version = _parse(args.file)
    available = coders()
    parts: Dict[str, Dict[str, float]] = {}
    totals = {name: {"bytes": 0, "encode_s": 0.0, "decode_s": 0.0} for name in available}
    for entry in header["arrays"]:
        if entry.get("entropy", "none") != "none":
            raise SystemExit(f"error: {args.file} is entropy coded already; write it with compact.store.entropy=none")
        data = entropy.shuffle(payload[entry["offset"]:entry["offset"] + entry["length"]], _element_size(entry))
        part = entry["name"].split(".", 1)[0]
        row = parts.setdefault(part, {"stored": 0, **{name: 0 for name in available}})
        row["stored"] += len(data)
        for name, (encode, decode) in available.items():
            start = time.perf_counter()
            coded = encode(data)
            encoded_s = time.perf_counter() - start
            start = time.perf_counter()
            if decode(coded) != data:
                raise SystemExit(f"error: {name} does not round-trip {entry['name']}")
            totals[name]["decode_s"] += time.perf_counter() - start
            totals[name]["encode_s"] += encoded_s
            totals[name]["bytes"] += min(len(coded), len(data))  # the writer keeps whichever is smaller
            row[name] += min(len(coded), len(data))
    names = list(available)
    print("| part | stored | " + " | ".join(names) + " |\n|---|" + "---|" * (len(names) + 1))
    for part, row in parts.items():
        print(f"| {part} | {row['stored']:,} | " + " | ".join(f"{row[n]:,}" for n in names) + " |")
    print("| **total** | " + f"{sum(r['stored'] for r in parts.values()):,} | "
          + " | ".join(f"**{totals[n]['bytes']:,}**" for n in names) + " |")
    print("| encode / decode s | | " + " | ".join(f"{totals[n]['encode_s']:.2f} / {totals[n]['decode_s']:.3f}"
                                              for n in names) + " |")
    if args.out:
        args.out.write_text(json.dumps({"file": str(args.file), "format_version": version, "parts": parts,
                                        "totals": totals}, indent=2) + "\n")


if __name__ == "__main__":
    main()
