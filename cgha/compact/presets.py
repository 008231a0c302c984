"""Named compressed-file presets: documented `compact.*` overrides (docs/compaction.md has their measured size and
quality). They are plain override lists, so a preset is spelled out on the command line or in YAML, and any key
given after it wins:

    python train_gaussianhead.py --config ... $(python -m cgha.compact.presets x40)
    python benchmarks/bench_compact_size.py --preset x60
"""
from __future__ import annotations

import sys
from typing import Dict, List

from cgha.errors import ConfigError

PRESETS: Dict[str, List[str]] = {
    # No measurable loss on the CPU demo avatar (decoded renders within the 8-bit step of the format-1 file's).
    "x40": [
        "compact.store.positions=grid", "compact.store.position_bits=14", "compact.store.codebooks=fp16",
        "compact.store.network=int8", "compact.store.post_render=int8", "compact.store.entropy=lzma",
    ],
    # The smallest file within 0.5 dB on the CPU demo avatar.
    "x60": [
        "compact.store.positions=grid", "compact.store.position_bits=12", "compact.store.codebooks=int8",
        "compact.store.network=int6", "compact.store.post_render=int6", "compact.store.entropy=lzma",
    ],
}


def preset_overrides(name: str) -> List[str]:
    """The overrides of preset `name`; ConfigError naming the presets otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown compact preset '{name}'; known: {', '.join(PRESETS)}")
    return list(PRESETS[name])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m cgha.compact.presets {{{'|'.join(PRESETS)}}}")
    try:
        print(" ".join(preset_overrides(sys.argv[1])))
    except ConfigError as error:
        sys.exit(f"error: {error}")
