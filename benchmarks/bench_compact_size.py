"""Compressed vs raw bytes on disk at GHA scale (no GPU needed).

Builds a Gaussian head with GHA's N031 network sizes and 100k + 3000 Gaussians on a head-sized ellipsoid, runs the
configured k-means compaction (defaults: scale_rot and feature codebooks of 2000 rows), writes GHA's raw fp32
`gaussianhead_latest` + `supres_latest` and our compressed file, and prints the ratio and the bytes of each part.
Sizes do not depend on training (only the entropy of the values would, and nothing is entropy-coded).

    python benchmarks/bench_compact_size.py [key=value ...] [--out bench_compact_size.json]
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from common import gha_scale_head  # noqa: E402
from cgha.compact.avatar_file import save_compact_avatar, write_report  # noqa: E402
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec  # noqa: E402
from cgha.recorder.run_files import RunFiles  # noqa: E402
from cgha.config import TrainConfig, load_config  # noqa: E402
from cgha.module.super_resolution import SuperResolutionModule  # noqa: E402
from cgha.recorder.checkpoint import save_atomic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. compact.codebook_size=4096")
    parser.add_argument("--gaussians", type=int, default=100_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_N031.yaml", args.overrides, stage="gaussianhead")
    generator = torch.Generator().manual_seed(0)
    module = gha_scale_head(cfg, args.gaussians, generator)
    supres = SuperResolutionModule(cfg.supresmodule)
    quantizer = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(module))
    quantizer.initialise({key: value.detach() for key, value in module.canonical_attributes().items()})
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        files = RunFiles(folder)
        raw = {"gaussianhead": files.checkpoint("gaussianhead"), "supres": files.checkpoint("supres")}
        save_atomic(module.state_dict(), raw["gaussianhead"])
        save_atomic(supres.state_dict(), raw["supres"])
        compact = files.compact
        save_compact_avatar(compact, module, supres, quantizer, cfg.compact.store)
        report = write_report(files.compact_report, compact, raw,
                              {"num_gaussians": module.num_gaussians, "codebook_sizes": quantizer.codebook_sizes(),
                               "groups": cfg.compact.groups, "store": vars(cfg.compact.store)})
    print(f"{report['num_gaussians']} Gaussians, groups {report['codebook_sizes']}: raw {report['raw_bytes'] / 1e6:.2f} MB"
          f" -> compact {report['compact_bytes'] / 1e6:.2f} MB, ratio {report['ratio']:.2f}x")
    print("| part | bytes |\n|---|---|\n" + "\n".join(f"| {k} | {v:,} |" for k, v in report["parts"].items()))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
