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
    # The format-1 precisions, lossless-coded (the dataclass default; configs that default to `fine` get it back
    # with this preset): decodes to the float16 file's exact output. 21.5-22.0x on GPU-trained GHA-scale avatars.
    "lossless": [
        "compact.store.positions=fp16", "compact.store.position_bits=16", "compact.store.codebooks=fp16",
        "compact.store.network=fp16", "compact.store.post_render=''", "compact.store.entropy=lzma",
    ],
    # The GHA-scale configs' default: 40.2-40.9x on three GPU-trained avatars at -0.09 dB (held-out cameras) and
    # -0.03 dB (frames) in the mean against their lossless files (docs/compaction.md); within 0.012 dB on the CPU
    # demo avatar, where it gives 30.6x (its networks are most of the file).
    "fine": [
        "compact.store.positions=grid", "compact.store.position_bits=12", "compact.store.codebooks=int8",
        "compact.store.network=int6", "compact.store.post_render=int6", "compact.store.entropy=lzma",
    ],
    # >= 40x at GHA scale (42.7x); 4-bit networks move held-out PSNR on the CPU demo by -0.08 to +0.14 dB per split.
    "x40": [
        "compact.store.positions=grid", "compact.store.position_bits=12", "compact.store.codebooks=int8",
        "compact.store.network=int4", "compact.store.post_render=int4", "compact.store.entropy=lzma",
    ],
    # A quarter of GHA's codebook rows and a coarser grid, trained so, the int4 networks trained for it (QAT):
    # 69.9-70.3x on three GPU-trained GHA-scale avatars at -0.37 / -0.11 / -0.24 dB on held-out cameras / frames /
    # out-of-rig in the mean (inside the seed spreads; one seed -0.59 dB on cameras); re-encoding a finished avatar
    # this way instead (512 rows re-clustered, no QAT) cost 1.19 dB.
    "x60": [
        "compact.store.positions=grid", "compact.store.position_bits=10", "compact.store.codebooks=int8",
        "compact.store.network=int4", "compact.store.post_render=int4", "compact.store.entropy=lzma",
        "compact.codebook_size=512", "compact.qat=true",
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
