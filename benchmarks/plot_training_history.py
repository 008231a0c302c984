"""Plot held-out PSNR and the Gaussian count over training from bench_ablation.py results (its per-run `history`).

    python benchmarks/plot_training_history.py benchmarks/results/monocular_gpu.json --split test_frames_psnr \\
        --target 28 --out docs/images/monocular_training.png

    python benchmarks/plot_training_history.py --metrics "sphere=runs/ablation_sphere_seed*.metrics.jsonl" ...

`--metrics LABEL=GLOB` reads runs' own training logs instead (metrics.jsonl, one file per seed), for runs whose
bench_ablation JSON was never written (a call cut short). One line per run (colour by variant); left: PSNR against
training seconds, right: the number of Gaussians against the iteration. Prints, per variant, the first training
time at which each run reached `--target` dB (or "never").
Needs matplotlib (installed with the tracking extra's MediaPipe; `pip install matplotlib` otherwise).
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

from cgha.recorder.metrics_log import training_history


def first_time_at(history: List[Dict], split: str, target: float) -> Optional[float]:
    """Training seconds of the first evaluation at or above `target` dB on `split`, or None."""
    for point in history:
        if point.get(split) is not None and point[split] >= target and point.get("train_seconds") is not None:
            return float(point["train_seconds"])
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results", type=Path, nargs="*", help="bench_ablation.py JSON files")
    parser.add_argument("--metrics", action="append", default=[],
                        help="VARIANT=GLOB of runs' metrics.jsonl training logs (one run per file)")
    parser.add_argument("--split", default="test_frames_psnr", help="history key to plot")
    parser.add_argument("--target", type=float, default=28.0, help="PSNR whose first crossing is reported")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: plotting needs matplotlib (pip install matplotlib)")
    runs = [run for path in args.results for run in json.loads(path.read_text())["runs"] if run.get("history")]
    for spec in args.metrics:
        variant, _, pattern = spec.partition("=")
        paths = sorted(glob.glob(pattern))
        if not variant or not paths:
            sys.exit(f"error: --metrics {spec!r}: expected VARIANT=GLOB matching metrics.jsonl files")
        runs += [{"variant": variant, "seed": seed, "history": training_history(Path(path))["history"]}
                 for seed, path in enumerate(paths)]
    if not runs:
        sys.exit(f"error: no run in {[str(p) for p in args.results] + args.metrics} has a training history "
                 f"(train.eval_every)")
    variants = list(dict.fromkeys(run["variant"] for run in runs))
    colours = {variant: f"C{index}" for index, variant in enumerate(variants)}
    figure, (quality, count) = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        history = run["history"]
        label = f"{run['variant']} (seed {run['seed']})"
        seconds = [p["train_seconds"] for p in history if p.get(args.split) is not None]
        quality.plot(seconds, [p[args.split] for p in history if p.get(args.split) is not None], marker="o",
                     color=colours[run["variant"]], alpha=0.8, label=label)
        count.plot([p["iter"] for p in history], [p["num_gaussians"] for p in history], marker="o",
                   color=colours[run["variant"]], alpha=0.8, label=label)
        reached = first_time_at(history, args.split, args.target)
        print(f"{label}: {args.split} >= {args.target} dB " + (f"after {reached:.0f} s" if reached else "never"))
    quality.axhline(args.target, color="grey", linestyle="--", linewidth=1)
    quality.set(xlabel="training seconds", ylabel=f"{args.split.replace('_psnr', '')} PSNR (dB)")
    count.set(xlabel="iteration", ylabel="Gaussians", yscale="log")
    quality.legend(fontsize=7)
    quality.grid(alpha=0.3)
    count.grid(alpha=0.3)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
