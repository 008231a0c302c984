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
    # No measurable loss on the CPU demo avatar: decoded renders 52.7 dB from the format-1 file's (below the 8-bit
    # step of the images), held-out PSNR within 0.012 dB of it. 35.4x at GHA scale.
    "fine": [
        "compact.store.positions=grid", "compact.store.position_bits=12", "compact.store.codebooks=int8",
        "compact.store.network=int6", "compact.store.post_render=int6", "compact.store.entropy=lzma",
    ],
    # >= 40x at GHA scale (42.7x); 4-bit networks move held-out PSNR on the CPU demo by -0.08 to +0.14 dB per split.
    "x40": [
        "compact.store.positions=grid", "compact.store.position_bits=12", "compact.store.codebooks=int8",
        "compact.store.network=int4", "compact.store.post_render=int4", "compact.store.entropy=lzma",
    ],
    # A quarter of GHA's codebook rows (trained so) and a coarser grid: 53.2x at GHA scale with its 103k Gaussians,
    # -0.18 to -0.41 dB on the CPU demo (codebooks re-clustered after training there); 60x needs fewer Gaussians.
    "x60": [
        "compact.store.positions=grid", "compact.store.position_bits=10", "compact.store.codebooks=int8",
        "compact.store.network=int4", "compact.store.post_render=int4", "compact.store.entropy=lzma",
        "compact.codebook_size=512",
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
