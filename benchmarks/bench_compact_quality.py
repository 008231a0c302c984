"""Compaction against quality: the same Gaussian-head schedule without compaction and with each codebook variant.

Trains one Gaussian head per variant with `train_gaussianhead.py` (identical config, seed and iterations; only
`compact.*` differs), several at once on one GPU, and tabulates held-out-camera / held-out-frame PSNR and SSIM
(the trainer's final evaluation, which renders the quantised attributes) against the compact file's size.
Needs the config's mesh head (`load_meshhead_checkpoint`) to exist.

    python benchmarks/bench_compact_quality.py --config config/train_gaussianhead_synthetic.yaml \\
        --iters 2000 --start 1000 --gpus 4 --parallel 3 --out benchmarks/results/compact_quality.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]

from cgha.recorder.run_files import RunFiles  # noqa: E402
from cgha.config import TrainConfig, load_config  # noqa: E402

# name -> compact.* overrides; "none" is the baseline without compaction.
VARIANTS: Dict[str, List[str]] = {
    "none": ["compact.enable=false"],
    **{f"joint_{k}": ["compact.enable=true", f"compact.codebook_size={k}", "compact.groups=[scale_rot,feature]"]
       for k in (500, 1000, 2000, 4096)},
    **{f"separate_{k}": ["compact.enable=true", f"compact.codebook_size={k}",
                         "compact.groups=[scale,rotation,feature]"] for k in (500, 1000, 2000, 4096)},
}


def train_variant(config: Path, name: str, overrides: List[str], common: List[str], work: Path,
                  gpu: Optional[int]) -> Dict:
    """Train one variant in its own run folder (on GPU `gpu` when given); returns its metrics and sizes."""
    run = f"compact_quality_{name}"
    args = [f"recorder.name={run}", f"recorder.logdir={work / 'log' / run}",
            f"recorder.checkpoint_path={work / 'checkpoints'}", f"recorder.result_path={work / 'results'}",
            *common, *overrides]
    start = time.perf_counter()
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}))
    done = subprocess.run([sys.executable, str(ROOT / "train_gaussianhead.py"), "--config", str(config), *args],
                          cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        return {"name": name, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    metrics = json.loads((work / "results" / run / "gaussianhead_eval.json").read_text())
    report_path = RunFiles(work / "checkpoints" / run).compact_report
    report: Optional[Dict] = json.loads(report_path.read_text()) if report_path.is_file() else None
    return {"name": name, "overrides": overrides, "seconds": seconds, "metrics": metrics,
            "compact_mb": report["compact_bytes"] / 1e6 if report else None,
            "raw_mb": report["raw_bytes"] / 1e6 if report else None,
            "ratio": report["ratio"] if report else None}


def table(rows: List[Dict]) -> str:
    baseline = next((r for r in rows if r["name"] == "none" and "metrics" in r), None)
    lines = ["| variant | size (MB) | ratio | held-out cams PSNR / SSIM | held-out frames PSNR / SSIM | "
             "Δ PSNR cams / frames |", "|---|---|---|---|---|---|"]
    for row in rows:
        if "metrics" not in row:
            lines.append(f"| {row['name']} | failed: {row['error']} | | | | |")
            continue
        m = row["metrics"]
        size = f"{row['compact_mb']:.2f}" if row["compact_mb"] is not None else "-"
        ratio = f"{row['ratio']:.1f}x" if row["ratio"] is not None else "-"
        delta = "-"
        if baseline is not None and row is not baseline:
            b = baseline["metrics"]
            delta = (f"{m['test_cameras_psnr'] - b['test_cameras_psnr']:+.2f} / "
                     f"{m['test_frames_psnr'] - b['test_frames_psnr']:+.2f}")
        lines.append(f"| {row['name']} | {size} | {ratio} | {m['test_cameras_psnr']:.2f} / "
                     f"{m['test_cameras_ssim']:.4f} | {m['test_frames_psnr']:.2f} / {m['test_frames_ssim']:.4f} | "
                     f"{delta} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "train_gaussianhead_synthetic.yaml")
    parser.add_argument("--iters", type=int, default=3000, help="training iterations of every variant")
    parser.add_argument("--start", type=int, default=1500, help="compact.start_iter of the compacted variants")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--parallel", type=int, default=3, help="variants trained at once on each GPU")
    parser.add_argument("--gpus", type=int, default=0, help="spread the variants over this many GPUs (0: as is)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_compact_quality_runs")
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every variant (e.g. device=cuda)")
    args = parser.parse_args()
    cfg = load_config(TrainConfig, args.config, args.overrides, stage="gaussianhead")
    if not Path(cfg.load_meshhead_checkpoint).is_file():
        sys.exit(f"error: the mesh head {cfg.load_meshhead_checkpoint} does not exist; train it first "
                 f"(train_meshhead.py) or pass load_meshhead_checkpoint=...")
    common = [f"train.max_iters={args.iters}", f"compact.start_iter={args.start}", "train.eval_every=0",
              f"recorder.save_freq={args.iters}", f"recorder.show_freq={args.iters}", *args.overrides]
    names = list(args.variants)

    def run(index: int) -> Dict:
        gpu = index % args.gpus if args.gpus else None
        return train_variant(args.config, names[index], VARIANTS[names[index]], common, args.work, gpu)

    with ThreadPoolExecutor(max_workers=args.parallel * max(args.gpus, 1)) as pool:
        rows = list(pool.map(run, range(len(names))))
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"date": datetime.date.today().isoformat(), "device": device, "config": str(args.config),
              "iters": args.iters,
              "compact_start_iter": args.start, "parallel_per_gpu": args.parallel, "gpus": args.gpus,
              "variants": rows}
    text = table(rows)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
