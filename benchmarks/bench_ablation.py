"""Ablation of Gaussian-head training options: every variant x every seed, mean ± spread per evaluated split.

Each (variant, seed) trains with `train_gaussianhead.py` from the config's mesh head (identical config, only the
variant's overrides and `train.seed` differ), several at once per GPU, then `evaluate.py` scores its compact file on
the config's held-out splits (held-out cameras, held-out frames, out-of-rig cameras) and, with `--cross-identity`, on
the ground truth of the avatar's identity making another identity's expressions (`cgha.demo.cross_identity_overrides`).
The table gives, per split, each variant's mean PSNR ± spread (half the max-min range over seeds) and its difference
from the first variant, marked "no measurable effect" when the difference is inside the spreads (and left unjudged
while a row has a single seed).

A run found under `--work` is resumed (the trainer's `train.resume`: runs split over calls with a time limit), but
only if it was trained from the same inputs: `WORK/inputs/<run>.sha256` records the config, the run's overrides and
the contents of its mesh head and subject `meta.json`; a run whose inputs changed starts again.

    python benchmarks/bench_ablation.py --config config/train_gaussianhead_synthetic.yaml --seeds 0 1 2 \\
        --variant baseline= --variant free_view=train.crop_scale_range=[0.6,1.6],train.loss_weights.sr_residual=0.1 \\
        --cross-identity data/synthetic/id0_codes_of_id1 --sheet 5 --reenact config/reenactment_synthetic.yaml \\
        --parallel 3 --out benchmarks/results/x.json
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

import torch
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]

from cgha.config import TrainConfig, load_config  # noqa: E402
from cgha.demo import cross_identity_overrides, write_strip  # noqa: E402
from cgha.recorder.metrics_log import training_history  # noqa: E402
from cgha.recorder.run_files import RunFiles  # noqa: E402
from cgha.utils.atomic import write_bytes_atomic  # noqa: E402

CROSS_IDENTITY = "cross_identity"
STRIP_FRAMES = 6  # free-view reenactment frames per strip
# Of the common overrides only these reach reenactment.py: the rest configure training (train.*, dataset.* of the
# training subject), which the reenactment config either rejects or must not take for its driver.
REENACT_SHARED_PREFIXES = ("device=", "render.")


def parse_variant(text: str) -> Tuple[str, List[str]]:
    """`name=key=value,key=value` (or `name=` for the config as is) -> (name, overrides).

    A comma inside brackets belongs to a list value (`train.crop_scale_range=[0.6,1.6]`)."""
    name, _, rest = text.partition("=")
    if not name:
        raise argparse.ArgumentTypeError(f"--variant needs NAME=overrides, got {text!r}")
    overrides, depth, current = [], 0, ""
    for char in rest:
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            overrides.append(current)
            current = ""
        else:
            current += char
    if current:
        overrides.append(current)
    return name, overrides


def _run(script: str, args: Sequence[str], env: Dict[str, str]) -> Optional[str]:
    """Run a repository script; None on success, else the last line of its error output."""
    done = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, capture_output=True, text=True,
                          env=env)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    return lines[-1] if lines else f"{script} exited with {done.returncode}"


def inputs_fingerprint(config: Path, run_args: Sequence[str]) -> str:
    """sha256 of what a run is trained from: the config file, the run's overrides, and the contents of its mesh-head
    checkpoint and of its subject's meta.json (the same paths can hold other files on a rerun)."""
    cfg = load_config(TrainConfig, config, list(run_args), stage="gaussianhead")
    digest = hashlib.sha256(Path(config).read_bytes())
    digest.update("\n".join(run_args).encode())
    for path in (Path(cfg.load_meshhead_checkpoint or ""), Path(cfg.dataset.dataroot) / "meta.json"):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()


def start_fresh_if_inputs_changed(work: Path, run: str, fingerprint: str) -> bool:
    """A run folder under `work` is resumed by the trainer; when it was trained from other inputs (another mesh
    head or subject at the same path), its checkpoints, log and results are removed first, so the run starts again
    instead of reporting the old one. Records `fingerprint`; returns whether an old run was removed."""
    record = work / "inputs" / f"{run}.sha256"
    stale = record.is_file() and record.read_text().strip() != fingerprint
    if stale:
        results = work / "results"
        for path in (work / "checkpoints" / run, work / "log" / run, results / run, *results.glob(f"{run}_*")):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        print(f"{run}: its inputs changed since the run found in {work}: trained again", file=sys.stderr)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(fingerprint + "\n")
    return stale


def run_one(config: Path, variant: str, overrides: List[str], seed: int, common: List[str], work: Path,
            gpu: Optional[int], cross_identity: Optional[Path], sheet: int, reenact: Optional[Path]) -> Dict:
    """Train and evaluate one (variant, seed) in its own run folder; returns its per-split metrics."""
    run = f"ablation_{variant}_seed{seed}"
    run_args = [f"recorder.name={run}", f"recorder.logdir={work / 'log' / run}",
                f"recorder.checkpoint_path={work / 'checkpoints'}", f"recorder.result_path={work / 'results'}",
                f"train.seed={seed}", *common, *overrides]
    env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": str(gpu)} if gpu is not None else {}))
    row: Dict = {"variant": variant, "seed": seed, "overrides": overrides}
    start_fresh_if_inputs_changed(work, run, inputs_fingerprint(config, run_args))
    start = time.perf_counter()
    error = _run("train_gaussianhead.py", ["--config", str(config), *run_args], env)
    row["train_seconds"] = time.perf_counter() - start
    if error:
        return {**row, "error": f"training: {error}"}
    cfg = load_config(TrainConfig, config, run_args, stage="evaluate")
    evaluations = {"held_out": [f"load_gaussianhead_checkpoint={RunFiles.of(cfg).compact}", "load_supres_checkpoint=",
                                f"recorder.name={run}_eval", f"eval.sheet_images={sheet}"]}
    delta = RunFiles.of(cfg).checkpoint("delta_poses")
    evaluations["held_out"].append(f"load_delta_poses_checkpoint={delta if delta.is_file() else ''}")
    if cross_identity is not None:
        evaluations[CROSS_IDENTITY] = cross_identity_overrides(cfg, cross_identity) + [f"eval.sheet_images={sheet}"]
    row["splits"], row["sheets"] = {}, {}
    for name, extra in evaluations.items():
        error = _run("evaluate.py", ["--config", str(config), *run_args, *extra], env)
        if error:
            return {**row, "error": f"evaluation ({name}): {error}"}
        result = json.loads((work / "results" / _last_value(extra, "recorder.name") / "evaluation.json").read_text())
        for split, entry in result["splits"].items():
            if entry.get("num_images"):
                key = CROSS_IDENTITY if name == CROSS_IDENTITY else split
                row["splits"][key] = {"psnr": entry["output"]["psnr"], "ssim": entry["output"]["ssim"],
                                      "psnr_mouth": entry["output"].get("psnr_mouth"), "images": entry["num_images"],
                                      "per_camera": entry.get("per_camera", {})}
                if "sheet" in entry:
                    row["sheets"][key] = entry["sheet"]
    row["compact_mb"] = RunFiles.of(cfg).compact.stat().st_size / 1e6
    row["compact_store"] = vars(cfg.compact.store)  # what the evaluated file stores: rows compare only alike
    row.update(training_history(work / "log" / run / "metrics.jsonl"))
    if reenact is not None:
        name = f"{run}_reenact"
        shared = [item for item in common if item.startswith(REENACT_SHARED_PREFIXES)]
        error = _run("reenactment.py", ["--config", str(reenact), *shared,
                                        f"load_gaussianhead_checkpoint={RunFiles.of(cfg).compact}",
                                        "load_supres_checkpoint=", f"recorder.name={name}",
                                        f"recorder.result_path={work / 'results'}"], env)
        if error:
            return {**row, "error": f"reenactment: {error}"}
        row["reenactment_strip"] = str(write_strip(work / "results" / name / "frames", STRIP_FRAMES,
                                                   work / "results" / f"{name}_strip.jpg"))
    return row


def _last_value(overrides: Sequence[str], key: str) -> str:
    return [item.split("=", 1)[1] for item in overrides if item.startswith(f"{key}=")][-1]


def summarise(rows: List[Dict], variants: List[str]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """variant -> split -> {mean, spread (half the max-min range), n, ssim_mean} over the seeds that finished."""
    summary: Dict[str, Dict[str, Dict[str, float]]] = {}
    for variant in variants:
        per_split: Dict[str, List[Tuple[float, float]]] = {}
        for row in rows:
            if row["variant"] == variant and "error" not in row:
                for split, values in row["splits"].items():
                    per_split.setdefault(split, []).append((values["psnr"], values["ssim"]))
        summary[variant] = {
            split: {"mean": sum(p for p, _ in values) / len(values),
                    "spread": (max(p for p, _ in values) - min(p for p, _ in values)) / 2.0, "n": len(values),
                    "ssim_mean": sum(s for _, s in values) / len(values)}
            for split, values in per_split.items()}
    return summary


def table(summary: Dict[str, Dict[str, Dict[str, float]]], variants: List[str]) -> str:
    splits = sorted({split for entries in summary.values() for split in entries})
    lines = ["| variant | " + " | ".join(f"{split} PSNR (SSIM)" for split in splits) + " |",
             "|---" * (len(splits) + 1) + "|"]
    reference = summary[variants[0]]
    for variant in variants:
        cells = []
        for split in splits:
            entry = summary[variant].get(split)
            if entry is None:
                cells.append("-")
                continue
            cell = f"{entry['mean']:.2f} ± {entry['spread']:.2f} ({entry['ssim_mean']:.4f}, n={entry['n']})"
            base = reference.get(split)
            if variant != variants[0] and base is not None:
                delta = entry["mean"] - base["mean"]
                if min(entry["n"], base["n"]) < 2:
                    verdict = "one seed: no spread to judge by"
                else:
                    verdict = ("no measurable effect" if abs(delta) <= entry["spread"] + base["spread"]
                               else "measurable")
                cell += f" {delta:+.2f} ({verdict})"
            cells.append(cell)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "train_gaussianhead_synthetic.yaml")
    parser.add_argument("--variant", dest="variants", action="append", type=parse_variant, required=True,
                        help="NAME=key=value,key=value (repeat; the first is the reference)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cross-identity", type=Path, help="subject: the avatar's identity making another's codes")
    parser.add_argument("--sheet", type=int, default=0, help="views per split in each run's contact sheet")
    parser.add_argument("--reenact", type=Path, help="reenactment config: also render each run's free-view video and "
                                                     "a strip of its frames")
    parser.add_argument("--reenact-seeds", type=int, nargs="*",
                        help="seeds whose runs render the free-view video (default: the first seed)")
    parser.add_argument("--runs", nargs="*", help="only these runs, as NAME:SEED (default: every variant x seed)")
    parser.add_argument("--deadline", type=float, default=0.0,
                        help="seconds after the start past which no further run starts (0: none); for runs "
                             "split over calls with a time limit")
    parser.add_argument("--parallel", type=int, default=3, help="runs trained at once on each GPU")
    parser.add_argument("--gpus", type=int, default=0, help="spread the runs over this many GPUs (0: as is)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_ablation_runs")
    parser.add_argument("--out", type=Path)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every run (e.g. device=cuda)")
    args = parser.parse_args()
    names = [name for name, _ in args.variants]
    if len(set(names)) != len(names):
        parser.error(f"variant names must differ, got {names}")
    # Each variant's own config: a variant may name its own subject and mesh head.
    for name, variant_overrides in args.variants:
        cfg = load_config(TrainConfig, args.config, [*args.overrides, *variant_overrides], stage="gaussianhead")
        if cfg.points.init == "model" and not Path(cfg.load_meshhead_checkpoint).is_file():
            sys.exit(f"error: variant {name}: the mesh head {cfg.load_meshhead_checkpoint} does not exist; train "
                     f"it first (train_meshhead.py) or pass load_meshhead_checkpoint=...")
    # Seed-major: a run cut short (--deadline, a time limit) leaves every variant with the same seeds done.
    jobs = [(name, overrides, seed) for seed in args.seeds for name, overrides in args.variants
            if args.runs is None or f"{name}:{seed}" in args.runs]
    if not jobs:
        parser.error(f"--runs {args.runs} names no variant:seed of {names} x {args.seeds}")
    reenact_seeds = args.seeds[:1] if args.reenact_seeds is None else args.reenact_seeds

    def run(index: int) -> Optional[Dict]:
        name, overrides, seed = jobs[index]
        if args.deadline and time.perf_counter() - start > args.deadline:
            return None
        gpu = index % args.gpus if args.gpus else None
        return run_one(args.config, name, overrides, seed, list(args.overrides), args.work, gpu, args.cross_identity,
                       args.sheet, args.reenact if seed in reenact_seeds else None)

    start = time.perf_counter()
    rows: List[Dict] = []

    def report() -> Dict:
        """The result so far; written after every finished run, so a run cut short keeps what was measured."""
        result = {"date": datetime.date.today().isoformat(),
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                  "config": str(args.config), "seeds": args.seeds, "parallel_per_gpu": args.parallel,
                  "gpus": args.gpus, "wall_seconds": time.perf_counter() - start, "common_overrides": args.overrides,
                  "runs_planned": [f"{name}:{seed}" for name, _, seed in jobs], "runs": rows,
                  "summary": summarise(rows, names)}
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(args.out, (json.dumps(result, indent=2) + "\n").encode())
        return result

    with ThreadPoolExecutor(max_workers=args.parallel * max(args.gpus, 1)) as pool:
        for done in as_completed([pool.submit(run, index) for index in range(len(jobs))]):
            row = done.result()
            if row is None:  # not started: past --deadline
                continue
            rows.append(row)
            rows.sort(key=lambda row: (names.index(row["variant"]), row["seed"]))
            report()
    result = report()
    for row in rows:
        if "error" in row:
            print(f"{row['variant']} seed {row['seed']}: {row['error']}", file=sys.stderr)
    print(table(result["summary"], names))


if __name__ == "__main__":
    main()
