"""Make the shipped avatar (checkpoints/demo/) from a GPU run's compressed file: copy it and record the training
subject in its metadata (the neutral pose, scale and expression basis that drivers are moved onto; the files
`bench_compact_ptq.py --save` writes lack it, a training run's own `.cgha` has it). No array is re-encoded: only the
header's JSON changes, the payload bytes stay as they are and the checksum is recomputed; the copy is checked to
decode to the same arrays.

    python benchmarks/demo_avatar.py --cgha .dev/gpu_call1_out/cgha/x40.cgha \\
        --subject .dev/gpu_call1_out/gaussianhead_compact.cgha --out checkpoints/demo/avatar.cgha
"""
from __future__ import annotations

import argparse
import json
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cgha.avatar.subject import AvatarSubject  # noqa: E402
from cgha.compact.codec import _CRC, _PREFIX, _parse, read_compact  # noqa: E402  (the one definition of the format)
from cgha.errors import CheckpointError  # noqa: E402
from cgha.utils.atomic import write_bytes_atomic  # noqa: E402


def with_subject(source: Path, subject: AvatarSubject, out: Path) -> Path:
    """Write `source` to `out` with `subject` as its metadata's subject record; returns `out`."""
    header, payload, version = _parse(source)  # validated: length, checksum, header
    magic, _, flags, _, _ = _PREFIX.unpack_from(source.read_bytes())
    header["metadata"]["subject"] = subject.to_dict()
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    body = _PREFIX.pack(magic, version, flags, len(text), len(payload)) + text + payload
    write_bytes_atomic(out, body + _CRC.pack(zlib.crc32(body)))
    before, _ = read_compact(source)
    after, metadata = read_compact(out)
    if before.keys() != after.keys() or not all(np.array_equal(before[k], after[k]) for k in before):
        raise CheckpointError(f"{out}: the arrays changed while rewriting the header")
    if AvatarSubject.from_dict(metadata["subject"], str(out)) != subject:
        raise CheckpointError(f"{out}: the subject record did not round-trip")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cgha", type=Path, required=True, help="the compressed avatar to ship")
    parser.add_argument("--subject", type=Path, required=True,
                        help="the run's avatar_subject.json, or its own .cgha file (whose metadata records it)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.subject.suffix == ".cgha":
        recorded = read_compact(args.subject)[1].get("subject")
        if recorded is None:
            raise SystemExit(f"error: {args.subject} records no subject")
        subject = AvatarSubject.from_dict(recorded, str(args.subject))
    else:
        subject = AvatarSubject.load(args.subject)
        if subject is None:
            raise SystemExit(f"error: {args.subject} does not exist")
    with_subject(args.cgha, subject, args.out)
    print(f"{args.out}: {args.out.stat().st_size} bytes, subject {subject.to_dict()}")


if __name__ == "__main__":
    main()
