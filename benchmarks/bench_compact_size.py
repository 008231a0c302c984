"""Compressed vs raw bytes on disk at GHA scale (no GPU needed).

Builds a Gaussian head with GHA's N031 network sizes and 100k + 3000 Gaussians on a head-sized ellipsoid, runs the
configured k-means compaction (defaults: scale_rot and feature codebooks of 2000 rows), writes GHA's raw fp32
`gaussianhead_latest` + `supres_latest` and our compressed file, prints the ratio and the bytes of each part, and
times decoding it on the CPU (the container alone, and the whole load into modules).

The head is untrained (random features, initial network weights), so the bytes of fixed-width encodings are those
of a trained head, while entropy-coded parts are pessimistic: random k-means indices and uniform initial weights
have little redundancy, trained ones more (docs/compaction.md compares both on the CPU demo avatar).

    python benchmarks/bench_compact_size.py [--preset x40|x60] [key=value ...] [--out bench_compact_size.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from common import gha_scale_head  # noqa: E402
from cgha.compact.avatar_file import load_compact_avatar, save_compact_avatar, write_report  # noqa: E402
from cgha.compact.codec import read_compact  # noqa: E402
from cgha.compact.presets import PRESETS, preset_overrides  # noqa: E402
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec  # noqa: E402
from cgha.recorder.run_files import RunFiles  # noqa: E402
from cgha.config import TrainConfig, load_config  # noqa: E402
from cgha.module.super_resolution import SuperResolutionModule  # noqa: E402
from cgha.recorder.checkpoint import save_atomic  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="config overrides after the preset's, e.g. "
                        "compact.codebook_size=4096")
    parser.add_argument("--preset", nargs="+", default=["none"], choices=["none", *sorted(PRESETS)],
                        help="one row per preset (cgha/compact/presets.py); none: the config's defaults")
    parser.add_argument("--variant", nargs="*", default=[], metavar="NAME:KEY=VALUE,...",
                        help="more rows: named override lists, e.g. mlp_int8:compact.store.network=int8")
    parser.add_argument("--gaussians", type=int, default=100_000)
    parser.add_argument("--full-load", action="store_true", help="also time load_compact_avatar (builds the modules)")
    parser.add_argument("--save", type=Path, help="folder to keep every row's compressed file in (NAME.cgha)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    config = ROOT / "config" / "train_gaussianhead_N031.yaml"
    generator = torch.Generator().manual_seed(0)
    cfg = load_config(TrainConfig, config, args.overrides, stage="gaussianhead")
    module = gha_scale_head(cfg, args.gaussians, generator)
    with torch.no_grad():  # trained opacities spread over (0, 1); the initial constant would code to nothing
        module.opacity.copy_(torch.logit(torch.rand(module.opacity.shape, generator=generator).clamp(0.005, 0.995)))
    supres = SuperResolutionModule(cfg.supresmodule)
    attributes = {key: value.detach() for key, value in module.canonical_attributes().items()}
    quantizers = {}  # k-means is the slow part: once per distinct codebook configuration
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        files = RunFiles(Path(folder))
        raw = {"gaussianhead": files.checkpoint("gaussianhead"), "supres": files.checkpoint("supres")}
        save_atomic(module.state_dict(), raw["gaussianhead"])
        save_atomic(supres.state_dict(), raw["supres"])
        variants = [(preset, preset_overrides(preset) if preset != "none" else []) for preset in args.preset]
        variants += [(text.partition(":")[0], text.partition(":")[2].split(",")) for text in args.variant]
        for preset, variant_overrides in variants:
            overrides = variant_overrides + list(args.overrides)
            cfg = load_config(TrainConfig, config, overrides, stage="gaussianhead")
            key = json.dumps([cfg.compact.groups, cfg.compact.codebook_size, cfg.compact.codebook_sizes])
            if key not in quantizers:
                quantizers[key] = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(module))
                quantizers[key].initialise(attributes)
            quantizer = quantizers[key]
            compact = files.compact
            start = time.perf_counter()
            save_compact_avatar(compact, module, supres, quantizer, cfg.compact.store)
            timing = {"write_s": time.perf_counter() - start, "cpu_threads": torch.get_num_threads()}
            decode_s = []
            for _ in range(3):
                start = time.perf_counter()
                read_compact(compact)
                decode_s.append(time.perf_counter() - start)
            timing["decode_s"] = min(decode_s)
            if args.save:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"{preset}.cgha").write_bytes(compact.read_bytes())
            if args.full_load:
                start = time.perf_counter()
                load_compact_avatar(compact, torch.device("cpu"))
                timing["load_s"] = time.perf_counter() - start
            report = write_report(files.compact_report, compact, raw,
                                  {"num_gaussians": module.num_gaussians,
                                   "codebook_sizes": quantizer.codebook_sizes(), "groups": cfg.compact.groups,
                                   "store": vars(cfg.compact.store), "preset": preset, "overrides": overrides,
                                   "device": cpu_name(), **timing})
            rows.append(report)
            print(f"[{preset}] {report['num_gaussians']} Gaussians, groups {report['codebook_sizes']}: raw "
                  f"{report['raw_bytes'] / 1e6:.2f} MB -> compact {report['compact_bytes'] / 1e6:.3f} MB, ratio "
                  f"{report['ratio']:.2f}x")
            print("| part | bytes |\n|---|---|\n" + "\n".join(f"| {k} | {v:,} |" for k, v in report["parts"].items()))
            load = f", whole load {report['load_s']:.2f} s" if "load_s" in report else ""
            print(f"decode {report['decode_s']:.3f} s{load} on {report['device']} ({report['cpu_threads']} threads)",
                  flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows if len(rows) > 1 else rows[0], indent=2) + "\n")


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
