"""Issue 19's measurements: the rigged avatar (GaussianAvatars) baseline, each add-on alone, all five, and the GHA
model on the same synthetic subject, several seeds per row; cross-identity PSNR; rigged render FPS at 512^2.

    python benchmarks/bench_rigged.py prepare --root R [--resolution 256 --cameras 12 --frames 32]
    python benchmarks/bench_rigged.py run --root R --row baseline --seed 0 [--iters 1000]
    python benchmarks/bench_rigged.py fps --root R [--size 512]
    python benchmarks/bench_rigged.py table --root R --out results.json
    python benchmarks/bench_rigged.py plot --results results.json --out rows.png   # or a file of several calls

`prepare` generates identity 0 (the avatar), identity 0 making the codes of seed 1 (cross-identity ground truth, as
cgha/demo.py does), builds the face model cache and trains one short mesh head for the GHA row. `run` trains one
(row, seed) with config/train_rigged_synthetic.yaml (or the GHA config for row `gha`), evaluates its compressed
avatar on held-out cameras and frames and on the cross-identity ground truth, and writes runs/{row}_s{seed}.json.
`table` prints mean +- spread (half the max-min range) over seeds and marks a difference from the baseline
that is inside the spreads as "no measurable effect".
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Dict, List

import torch

from cgha.apps.evaluation import evaluate_avatar
from cgha.config import TrainConfig, load_config
from cgha.demo import cross_identity_overrides, evaluation_overrides, split_summary
from cgha.recorder.run_files import RunFiles
from cgha.synthetic import generate_subject
from cgha.trainer.stages import train_gaussian_head, train_mesh_head

ROOT = Path(__file__).resolve().parents[1]

ADDONS = {"region_weights": ["addons.region_weights=true"],
          "smart_densification": ["addons.smart_densification=true"],
          "progressive_resolution": ["addons.progressive_resolution=true"],
          "color_calibration": ["addons.color_calibration=true"],
          "contrastive": ["addons.contrastive=true"]}
ROWS = {"baseline": [], **ADDONS, "all_five": [o for v in ADDONS.values() for o in v], "gha": [],
        # The refactor's calibration as described (no zero-mean constraint), to measure what the constraint changes.
        "color_calibration_free": ADDONS["color_calibration"] + ["addons.calibration_zero_mean=false"]}
RIGGED_CONFIG = ROOT / "config" / "train_rigged_synthetic.yaml"
GHA_CONFIG = ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml"
MESH_CONFIG = ROOT / "config" / "train_meshhead_synthetic_demo.yaml"
SPLITS = ("test_cameras", "test_frames")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def subject_paths(root: Path) -> Dict[str, Path]:
    return {"avatar": root / "data" / "id0", "cross": root / "data" / "id0_codes_of_id1"}


def common_overrides(root: Path, device: str, resolution: int, name: str) -> List[str]:
    return [f"device={device}", f"dataset.dataroot={subject_paths(root)['avatar']}",
            f"dataset.original_resolution={resolution}", f"dataset.resolution={resolution}",
            f"recorder.checkpoint_path={root}/ck", f"recorder.logdir={root}/log/{name}",
            f"recorder.result_path={root}/res", f"recorder.name={name}", "recorder.show_freq=100000",
            "recorder.save_freq=100000", "train.resume=false"]


def prepare(args) -> None:
    root, device = Path(args.root), torch.device(args.device)
    paths = subject_paths(root)
    for identity, seed, path in () if args.skip_subjects else ((0, 0, paths["avatar"]), (0, 1, paths["cross"])):
        generate_subject(path, identity=identity, frames=args.frames, cameras=args.cameras,
                         resolution=args.resolution, seed=seed, progress=False, device=device)
    if not args.skip_face_model:
        from cgha.tracking.face_model import FaceModel
        FaceModel()  # builds the cache once, before the runs load it in parallel
    if not args.skip_mesh_head:
        overrides = common_overrides(root, args.device, args.resolution, "meshhead") + [
            f"train.epochs={args.mesh_epochs}", "train.max_iters=0", f"train.pretrain_sphere_iters={args.mesh_sphere}"]
        cfg = load_config(TrainConfig, MESH_CONFIG, overrides, stage="meshhead")
        start = time.perf_counter()
        train_mesh_head(cfg, device)
        (root / "meshhead_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")


def run_overrides(args, name: str) -> List[str]:
    root = Path(args.root)
    overrides = common_overrides(root, args.device, args.resolution, name) + [
        f"train.seed={args.seed}", f"train.max_iters={args.iters}", "train.epochs=0",
        f"compact.start_iter={int(args.iters * 0.75)}", f"eval.max_images={args.eval_images}"]
    if args.row == "gha":
        return overrides + [f"load_meshhead_checkpoint={root}/ck/meshhead/meshhead_latest"]
    step = max(1, args.iters // 10)  # densify every tenth of the run until 60 % of it
    return overrides + [f"model.options.densify_from={step}", f"model.options.densify_every={step}",
                        f"model.options.densify_until={int(args.iters * 0.6)}"] + ROWS[args.row]


def run(args) -> None:
    root, device = Path(args.root), torch.device(args.device)
    name = f"{args.row}_s{args.seed}"
    config = GHA_CONFIG if args.row == "gha" else RIGGED_CONFIG
    overrides = run_overrides(args, name) + list(args.extra)
    cfg = load_config(TrainConfig, config, overrides, stage="gaussianhead")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    training_eval = train_gaussian_head(cfg, device)
    seconds = time.perf_counter() - start
    report = json.loads(RunFiles.of(cfg).compact_report.read_text())
    out = root / "runs" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written now and completed below: a run stopped during the longer evaluation still leaves its training numbers.
    partial = {"row": args.row, "seed": args.seed, "iters": args.iters, "train_seconds": seconds,
               "num_gaussians": report["num_gaussians"], "compact_mb": report["compact_bytes"] / 1e6,
               "training_eval": training_eval, "device": device_name(device), "overrides": overrides}
    out.with_suffix(".partial.json").write_text(json.dumps(partial, indent=2))
    evaluation = evaluate_avatar(load_config(TrainConfig, config, overrides + evaluation_overrides(cfg) +
                                             [f"eval.splits=[{','.join(SPLITS)}]"], stage="evaluate"), device)
    cross = evaluate_avatar(load_config(TrainConfig, config, overrides + cross_identity_overrides(
        cfg, subject_paths(root)["cross"]), stage="evaluate"), device)
    result = {**partial, "held_out": {split: split_summary(evaluation["splits"][split]) for split in SPLITS},
              "cross_identity": split_summary(cross["splits"]["all"])}
    out.write_text(json.dumps(result, indent=2))
    out.with_suffix(".partial.json").unlink()
    print(json.dumps({k: result[k] for k in ("row", "seed", "train_seconds", "num_gaussians", "compact_mb")}))


@torch.no_grad()
def fps(args) -> None:
    """Rigged render (generate + rasterise, no super-resolution) at size^2 of the baseline seed-0 avatar."""
    from cgha.avatar.inference import load_avatar, render_frame
    from cgha.dataset import GaussianDataset

    root, device = Path(args.root), torch.device(args.device)
    name = "baseline_s0"
    overrides = common_overrides(root, args.device, args.resolution, name) + list(args.extra)
    cfg = load_config(TrainConfig, RIGGED_CONFIG, overrides, stage="evaluate")
    avatar = load_avatar(cfg, device, RunFiles.of(cfg))
    item = GaussianDataset(cfg.dataset, split="test_frames", views="all")[0]
    batch = {key: value[None].to(device) for key, value in item.items()}
    K = batch["intrinsics"] * (args.size / args.resolution)
    K[:, 2, 2] = 1.0

    def frame():
        return render_frame(avatar.model, avatar.post_render, batch["exp_coeff"], batch["pose"], batch["scale"],
                            batch["viewmat"], K, args.size, cfg.render.backend)

    for _ in range(10):
        frame()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(args.frames_timed):
        frame()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / args.frames_timed
    result = {"size": args.size, "ms_per_frame": seconds * 1e3, "fps": 1.0 / seconds,
              "num_gaussians": avatar.model.num_gaussians, "device": device_name(device)}
    (root / "fps.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


def _mean_spread(values: List[float]) -> Dict[str, float]:
    return {"mean": sum(values) / len(values), "spread": (max(values) - min(values)) / 2, "n": len(values)}


def table(args) -> None:
    root = Path(args.root)
    runs = [json.loads(p.read_text()) for p in sorted((root / "runs").glob("*.json")) if ".partial" not in p.name]
    columns = {
        "cam_psnr": lambda r: r["held_out"]["test_cameras"]["psnr"],
        "cam_ssim": lambda r: r["held_out"]["test_cameras"]["ssim"],
        "cam_psnr_masked": lambda r: r["held_out"]["test_cameras"]["psnr_masked"],
        "frame_psnr": lambda r: r["held_out"]["test_frames"]["psnr"],
        "frame_ssim": lambda r: r["held_out"]["test_frames"]["ssim"],
        "frame_psnr_masked": lambda r: r["held_out"]["test_frames"]["psnr_masked"],
        "cross_psnr": lambda r: r["cross_identity"]["psnr"],
        "train_seconds": lambda r: r["train_seconds"],
        "num_gaussians": lambda r: r["num_gaussians"],
        "compact_mb": lambda r: r["compact_mb"],
    }
    rows = {}
    for row in ROWS:
        mine = [r for r in runs if r["row"] == row]
        if mine:
            rows[row] = {"seeds": sorted(r["seed"] for r in mine),
                         **{col: _mean_spread([get(r) for r in mine]) for col, get in columns.items()}}
    base = rows.get("baseline")
    for row, entry in rows.items():
        if base is None or row == "baseline":
            continue
        entry["vs_baseline"] = {}
        for col in columns:
            diff = entry[col]["mean"] - base[col]["mean"]
            inside = abs(diff) <= max(entry[col]["spread"], base[col]["spread"])
            entry["vs_baseline"][col] = {"difference": diff, "measurable": not inside}
    extra = {name: json.loads((root / f"{name}.json").read_text()) for name in ("fps",)
             if (root / f"{name}.json").is_file()}
    summary = {"rows": rows, **extra, "device": runs[0]["device"] if runs else None,
               "iters": runs[0]["iters"] if runs else None}
    Path(args.out).write_text(json.dumps(summary, indent=2))
    header = ["row", "cam PSNR", "cam SSIM", "cam PSNR-m", "frm PSNR", "frm SSIM", "frm PSNR-m", "cross PSNR",
              "train s", "Gaussians", "MB"]
    print(" | ".join(header))
    for row, entry in rows.items():
        cells = [row] + [f"{entry[c]['mean']:.{3 if 'ssim' in c else 2}f} ± {entry[c]['spread']:.{3 if 'ssim' in c else 2}f}"
                         for c in columns]
        print(" | ".join(cells))
    if extra.get("fps"):
        print(f"rigged render {extra['fps']['size']}^2: {extra['fps']['fps']:.1f} FPS ({extra['fps']['ms_per_frame']:.2f} ms)")


PLOTTED = {"cam_psnr": "held-out cameras", "frame_psnr": "held-out frames", "cam_psnr_masked": "cameras, masked",
           "cross_psnr": "cross-identity"}


def _tables(path: Path) -> List[dict]:
    """`table`'s JSON, or a file of several device calls' (`{"calls": {name: {"table": ...}}}`) -> the tables."""
    data = json.loads(path.read_text())
    tables = [call["table"] for call in data["calls"].values()] if "calls" in data else [data]
    if not all("baseline" in table.get("rows", {}) for table in tables):
        raise SystemExit(f"{path}: every table needs its own baseline row (each add-on is drawn against it)")
    return tables


def plot(args) -> None:
    """Each add-on row against the baseline of its own table: PSNR differences with the band inside which a
    difference is "no measurable effect" (the larger of the two spreads), and training time and Gaussians as ratios."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = []
    for table in _tables(Path(args.results)):
        base = table["rows"]["baseline"]
        entries += [(row, entry, base) for row, entry in table["rows"].items() if row in ADDONS or row == "all_five"]
    if not entries:
        raise SystemExit(f"{args.results}: no add-on rows ({', '.join([*ADDONS, 'all_five'])}) to draw")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.55 * len(entries) + 1.8), gridspec_kw={"width_ratios": [3, 2]})
    height = 0.8 / len(PLOTTED)
    for k, (column, label) in enumerate(PLOTTED.items()):
        y = [i + (k - (len(PLOTTED) - 1) / 2) * height for i in range(len(entries))]
        diff = [entry[column]["mean"] - base[column]["mean"] for _, entry, base in entries]
        band = [max(entry[column]["spread"], base[column]["spread"]) for _, entry, base in entries]
        left.barh(y, diff, height, xerr=band, capsize=2, label=label)
    left.axvline(0, color="black", linewidth=0.8)
    left.set_xlabel("PSNR difference to the baseline (dB); whiskers: the larger spread (inside = no measurable effect)")
    for k, (column, label) in enumerate((("train_seconds", "training time"), ("num_gaussians", "Gaussians"))):
        y = [i + (k - 0.5) * 0.4 for i in range(len(entries))]
        right.barh(y, [entry[column]["mean"] / base[column]["mean"] for _, entry, base in entries], 0.4, label=label)
    right.axvline(1, color="black", linewidth=0.8)
    right.set_xlabel("ratio to the baseline")
    for axis, corner in ((left, "lower right"), (right, "upper right")):
        axis.set_yticks(range(len(entries)), [row.replace("_", " ") for row, _, _ in entries])
        axis.invert_yaxis()
        axis.legend(fontsize=8, loc=corner)
    right.set_yticklabels([])
    fig.suptitle(f"rigged avatar add-ons, {len(entries[0][1]['seeds'])} seeds per row", fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    plotp = sub.add_parser("plot")
    plotp.add_argument("--results", required=True, help="table's --out, or a results file with several calls' tables")
    plotp.add_argument("--out", required=True, help="PNG")
    for name in ("prepare", "run", "fps", "table"):
        p = sub.add_parser(name)
        p.add_argument("--root", required=True)
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--resolution", type=int, default=256)
    prep = sub.choices["prepare"]
    prep.add_argument("--cameras", type=int, default=12)
    prep.add_argument("--frames", type=int, default=32)
    prep.add_argument("--mesh-epochs", type=int, default=6)
    prep.add_argument("--mesh-sphere", type=int, default=300)
    prep.add_argument("--skip-mesh-head", action="store_true")
    prep.add_argument("--skip-face-model", action="store_true")
    prep.add_argument("--skip-subjects", action="store_true")
    runp = sub.choices["run"]
    runp.add_argument("--row", choices=list(ROWS), required=True)
    runp.add_argument("--seed", type=int, default=0)
    runp.add_argument("--iters", type=int, default=1000)
    runp.add_argument("--eval-images", type=int, default=48)
    runp.add_argument("extra", nargs="*", help="more config overrides")
    fpsp = sub.choices["fps"]
    fpsp.add_argument("--size", type=int, default=512)
    fpsp.add_argument("--frames-timed", type=int, default=100)
    fpsp.add_argument("extra", nargs="*", help="more config overrides")
    sub.choices["table"].add_argument("--out", required=True)
    logging.basicConfig(level=logging.WARNING)
    args = parser.parse_args()
    {"prepare": prepare, "run": run, "fps": fps, "table": table, "plot": plot}[args.command](args)


if __name__ == "__main__":
    main()
