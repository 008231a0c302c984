"""Own-capture end to end (issues 17 and 18): a synthetic subject re-tracked by the tracker from its images alone,
then trained exactly as the same subject with its ground-truth parameters; the held-out splits of both compared
over seeds. Multi-view scales (issue 17) track the rig's images and camera file; monocular scales (issue 18) track
an mp4 of the one training camera, as `demo.py --video` does.

    python benchmarks/bench_retracked.py --scale demo --seeds 0 1 2 --device cpu \\
        --out benchmarks/results/bench_retracked_cpu_demo.json
    python benchmarks/bench_retracked.py --scale full --device cuda --parallel 2 --out ...   # the GPU run
    python benchmarks/bench_retracked.py --scale mono_demo --seeds 0 1 2 --device cpu --out ...   # monocular

Steps:
1. the subject of the scale's configs (demo: identity 0, 8 cameras x 20 frames at 256²; full: 16 x 40 at 512²),
   generated when missing;
2. its rig images and calibration exported as track.py's input (`DIR/<frame>/<camera>.jpg` + `cams.json`;
   benchmarks/bench_tracking.py's export) and tracked (MediaPipe + the face model, `--crop full`, the truth's
   held-out cameras and frame fraction, so that both subjects hold out the same images; checked);
3. one mesh head per subject (the scale's mesh-head config, seed 0), then the Gaussian head of both for every seed
   through benchmarks/bench_ablation.py: variants `truth` and `retracked`, identical configs but for the subject
   folder and its mesh head;
4. report: per split, each variant's PSNR / SSIM mean ± half-range over the seeds, the difference, whether it is
   inside the spreads, the issue's goal (held-out cameras within 1 dB of the truth), and the tracking's own accuracy
   against the truth (rotation, translation, reprojection).

Held-out cameras and frames are each subject's own images (the same pixels: the export copies the JPEGs; the masks
differ: the retracked subject's come from MediaPipe's selfie segmentation, the truth's from the renderer), rendered
with each subject's own parameters, as a user evaluates an avatar of their own capture. The retracked subject has no
out-of-rig cameras (a user's rig has only its own).

Monocular scales: the truth is the monocular preset (`generate_monocular_subject`); its camera `cam00` is written as
an mp4 (libx264 at imageio's top quality, `bench_tracking.export_video`) and tracked as a video (`--crop full`, the
truth's field of view, its held-out frame fraction; checked to give the same held-out frames); no mesh head is
trained (the monocular configs start from a sphere). The video codec changes the pixels a little: the report gives
the PSNR of the retracked subject's held-out images against the truth's (`codec_psnr`), the floor of what the two
evaluations can share. Tracking accuracy is relative to the camera (`ground_truth_errors(..., truth_camera="cam00")`).

`--attribute [PART ...]` also trains, like the other two, one hybrid subject per part of the tracking
(benchmarks/retracked_attribution.py: the retracked subject with the truth's masks, or its head pose and scale, or
its expression codes), each with its own mesh head (multi-view); the report's `attribution` gives each hybrid's PSNR
and how much of the gap to the truth it closes. Monocular scales swap the masks and the expression codes only: a
monocular track's head poses are relative to its camera, the truth's to its world.

`--plates` (multi-view) tracks the rig a second time with its background plates (`--backgrounds`: the synthetic
writer's empty scenes, bench_tracking.export_plates), as a rig user who filmed the empty scene would, and trains that
subject too (`retracked_plates`, compared with the truth in `comparison_plates`).

Split over machines (the full scale: tracking is CPU work, the Gaussian heads GPU work): every run writes its tracking
to `WORK/tracking.json`; `--track-only` stops there (no training), `--reuse-tracking` trains from it and the tracked
subjects under WORK (copy the whole WORK folder over; hybrids are rebuilt, their links being local). `--truth-runs`
takes the truth's Gaussian-head rows from earlier bench_ablation-style JSONs (variant `--truth-variant`, no overrides:
the same config and subject; evaluated on a file of the same `compact.store`, checked: pass
`$(python -m cgha.compact.presets lossless)` for rows from before 2026-12-07) instead of training the truth again
(that file's truth has seeds 1 and 2):

    python benchmarks/bench_retracked.py --scale full --device cpu --track-only --work W --out W/track.json
    python benchmarks/bench_retracked.py --scale full --device cuda --reuse-tracking --work W --seeds 1 2 \\
        --parallel 2 --truth-runs benchmarks/results/free_view_ablation_h100_2026-12-06.json --out ... \\
        $(python -m cgha.compact.presets lossless)

A full-scale subject's folder (80 MB) is more than a device call carries; tracking on the GPU host instead needs
MediaPipe there: carry `mediapipe==0.10.14` (cp312 wheel) and `protobuf==4.25.9` with the other wheels (`pip download
--no-deps --python-version 3.12 --platform manylinux2014_x86_64 --only-binary=:all:`); its other dependencies are in
the device image. Take protobuf's binary (`cp37-abi3`) wheel: the pure-Python one has no `google._upb` of its own and
picks up the image's newer one, which fails (`google.protobuf.message` has no `FrozenInstanceError`). Install those
two into a folder of their own and put it on PYTHONPATH for `--track-only` alone: the old protobuf breaks the image's
own imports when training, so train in a second step with `--reuse-tracking` and without that folder. A monocular
scale writes its video with imageio-ffmpeg (a wheel too). The three with gsplat pass a device call's 64 MiB only with
the mediapipe wheel's pose, hand and palm models (`*.tflite` under `mediapipe/modules/{pose,hand,palm}_*` and
`holistic_landmark`, which the tracker never loads) left out of the zip: 18 MB instead of 36. Generation,
tracking, the re-tracked mesh head and two Gaussian heads side by side take about 500 s.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench_ablation import summarise
from bench_tracking import export_plates, export_rig, export_video
from common import json_safe
from retracked_attribution import PARTS, hybrid_subject

ROOT = Path(__file__).resolve().parents[1]

from cgha.compact.config import CompactStoreConfig  # noqa: E402
from cgha.config import TrainConfig, load_config  # noqa: E402
from cgha.recorder.run_files import RunFiles  # noqa: E402
from cgha.synthetic import generate_monocular_subject, generate_subject  # noqa: E402
from cgha.tracking import pipeline as P  # noqa: E402
from cgha.tracking.accuracy import ground_truth_errors  # noqa: E402
from cgha.utils.atomic import write_bytes_atomic  # noqa: E402
from cgha.utils.metrics import psnr  # noqa: E402

SCALES = {  # subject (frames, cameras, resolution), config suffix and subject folder, as the scale's configs say
    "demo": {"frames": 20, "cameras": 8, "resolution": 256, "suffix": "_synthetic_demo",
             "subject": "synthetic_demo/id0", "monocular": False},
    "full": {"frames": 40, "cameras": 16, "resolution": 512, "suffix": "_synthetic", "subject": "synthetic/id0",
             "monocular": False},
    "mono_demo": {"frames": 60, "cameras": 1, "resolution": 256, "suffix": "_monocular_demo",
                  "subject": "synthetic_mono_demo/id0", "monocular": True},
    "mono_full": {"frames": 300, "cameras": 1, "resolution": 512, "suffix": "_monocular",
                  "subject": "synthetic_mono/id0", "monocular": True},
}
MONOCULAR_CAMERA = "cam00"  # the monocular synthetic preset's training camera (the video is written from it)
GOAL_DB = 1.0  # issue 17: held-out-camera PSNR of the retracked subject within 1 dB of the truth's
LOSSLESS_STORE = vars(CompactStoreConfig())  # what every row without `compact_store` was evaluated on
TRACKING_JSON = "tracking.json"  # under WORK: the tracking of the last run, for --reuse-tracking


def gaussianhead_config(scale: dict) -> Path:
    """The scale's Gaussian-head config: what both the truth and the re-tracked subjects train with."""
    return ROOT / "config" / f"train_gaussianhead{scale['suffix']}.yaml"


def run(command: list, log: Path) -> None:
    """Run a step, its output in `log`; stop with its log's tail on failure."""
    with open(log, "w") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    if code:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"{' '.join(map(str, command[:3]))} ... failed ({code}); {log}:\n{tail}")


def splits(subject: Path) -> dict:
    meta = json.loads((subject / "meta.json").read_text())["splits"]
    return {"eval_camera_ids": meta["eval_camera_ids"], "eval_frame_ids": meta["eval_frame_ids"]}


def write_json(path: Path, data: dict) -> None:
    """Write `data` to `path` atomically: a run stopped mid-write leaves the previous file whole."""
    write_bytes_atomic(path, (json.dumps(json_safe(data), indent=2) + "\n").encode())


def reused_tracking(work: Path, scale: str, plates: bool) -> tuple:
    """The tracking written under `work` by an earlier run (`--reuse-tracking`) -> ({variant: tracked subject
    folder}, the tracking.json record). Stops with one line naming the path when the record or a subject is missing,
    was tracked at another scale or without plates, or holds out other images than the truth did."""
    path = work / TRACKING_JSON
    if not path.is_file():
        raise SystemExit(f"{path} is missing: track first (--track-only, or a run without --reuse-tracking)")
    record = json.loads(path.read_text())
    if record.get("scale") != scale:
        raise SystemExit(f"{path}: tracked at scale {record.get('scale')}, not {scale}")
    names = ["retracked", *(["retracked_plates"] if plates else [])]
    subjects = {}
    for name in names:
        if name not in record.get("subjects", {}):
            raise SystemExit(f"{path} has no {name} subject (tracked without --plates?)")
        subject = work / record["subjects"][name]
        if not (subject / "meta.json").is_file():
            raise SystemExit(f"{subject} (from {path}) is missing or has no meta.json")
        if splits(subject) != record["truth_splits"]:
            raise SystemExit(f"{subject}: held-out split {splits(subject)} differs from the truth's "
                             f"{record['truth_splits']} recorded in {path}")
        subjects[name] = subject
    return subjects, record


def truth_rows(files: list, variant: str, subject: str | None = None, store: dict | None = None) -> tuple:
    """The truth's Gaussian-head rows from earlier runs (`--truth-runs`): every finished row of the files' `runs`
    whose variant is `variant`, renamed `truth` -> (rows, their seeds). A matching row with overrides is refused (it
    is not the truth's config), but for the truth's own subject (`dataset.dataroot` ending in `subject`) and its own
    mesh head (`load_meshhead_checkpoint`), which this script's truth rows name; a seed found twice is refused too
    (it would count twice in the mean and spread). Given `store` (the `compact.store` the re-tracked runs will
    write), a row evaluated on a file stored otherwise is refused: rows from before bench_ablation recorded
    `compact_store` were all written with the lossless store (the dataclass default; the GHA-scale configs have
    written `fine` since 2026-12-07, about 0.1 dB lower)."""
    rows, found = [], {}
    for file in files:
        if not Path(file).is_file():
            raise SystemExit(f"{file} is missing (--truth-runs)")
        data = json.loads(Path(file).read_text())
        runs = data.get("runs", data.get("ablation", {}).get("runs"))  # bench_ablation's, or this script's report
        if not isinstance(runs, list):
            raise SystemExit(f"{file} has no `runs` list (bench_ablation's --out and this script's --out have one)")
        for row in runs:
            if row.get("variant") != variant:
                continue
            if [item for item in row.get("overrides") or [] if not _truth_own(item, subject)]:
                raise SystemExit(f"{file}: {variant} seed {row.get('seed')} has overrides {row['overrides']}: not "
                                 f"the truth's config")
            if "error" in row:
                continue
            row_store = row.get("compact_store", LOSSLESS_STORE)
            if store is not None and row_store != store:
                differ = {key: (row_store.get(key), value) for key, value in store.items() if row_store.get(key) != value}
                raise SystemExit(f"{file}: {variant} seed {row['seed']} was evaluated on a file stored otherwise "
                                 f"than this run's (compact.store {{key: (its, this run's)}}: {differ}); pass the "
                                 f"same store, e.g. $(python -m cgha.compact.presets lossless)")
            if row["seed"] in found:
                raise SystemExit(f"{file}: {variant} seed {row['seed']} is also in {found[row['seed']]}")
            found[row["seed"]] = file
            rows.append({**row, "variant": "truth", "source": str(file)})
    if not rows:
        raise SystemExit(f"no finished {variant} row without overrides in {', '.join(map(str, files))}")
    return rows, sorted(found)


def _truth_own(override: str, subject: str | None) -> bool:
    """Whether `override` only names the truth's own mesh head or (given `subject`) its own subject folder."""
    key, _, value = override.partition("=")
    return key == "load_meshhead_checkpoint" or (
        key == "dataset.dataroot" and subject is not None and Path(value).parts[-len(Path(subject).parts):]
        == Path(subject).parts)


def track(truth: Path, work: Path, scale: dict, device: str, plates: bool = False, photometric: bool = False) -> tuple:
    """Export and track the truth's rig (or, monocular, its camera's video) -> (retracked subject folder, tracking
    report incl. errors vs the truth). `plates`: the rig's background plates are given too (masks by background
    subtraction instead of selfie segmentation), into `retracked_plates`."""
    truth_splits = splits(truth)
    frames = json.loads((truth / "meta.json").read_text())["frame_names"]
    tracked = work / ("retracked_plates" if plates else "retracked")
    monocular = scale["monocular"]
    common = {"resolution": scale["resolution"], "crop": "full", "device": device, "force": True, "progress": True,
              "photometric": photometric,
              "holdout_frames": len(truth_splits["eval_frame_ids"]) / len(frames)}
    if monocular:
        video = work / "export" / f"{MONOCULAR_CAMERA}.mp4"
        fov = export_video(truth, video, MONOCULAR_CAMERA)
        started = time.perf_counter()
        result = P.track_video(video, tracked, P.TrackOptions(fov_deg=fov, holdout_cameras=0, **common))
    else:
        images, cams = export_rig(truth, work / "export")
        started = time.perf_counter()
        backgrounds = export_plates(truth, work / "export" / "plates") if plates else None
        result = P.track_images(images, cams, tracked, P.TrackOptions(
            holdout_cameras=list(truth_splits["eval_camera_ids"]), backgrounds=backgrounds, **common))
    seconds = time.perf_counter() - started
    if splits(tracked) != truth_splits:
        raise SystemExit(f"{tracked}: held-out split {splits(tracked)} differs from the truth's {truth_splits} "
                         f"(frames dropped by the tracker?): the two subjects would not be evaluated alike")
    errors = ground_truth_errors(tracked, truth, truth_camera=MONOCULAR_CAMERA if monocular else None)
    rotation = sorted(errors["rotation_deg"]["per_frame"].values())
    report = {"seconds": seconds, "frames": result.report["frames"], "photometric": result.report["photometric"],
              "detections_per_camera": result.report["detections_per_camera"],
              "reprojection_median_px_at_512": result.report["reprojection_px"]["median_at_512"],
              "rotation_deg_median": rotation[len(rotation) // 2], "rotation_deg_max": rotation[-1],
              "translation_median": errors["translation"]["median"],
              # What a held-out frame's render suffers from: its error about the shared tilt the avatar absorbs.
              "rotation_about_shared_offset_deg_median": errors["rotation_about_mean_deg"]["median"],
              "rotation_shared_offset_deg": errors["rotation_about_mean_deg"]["shared_offset"],
              "held_out_frames_rotation_about_shared_offset_deg_median": float(np.median(
                  [errors["rotation_about_mean_deg"]["per_frame"][f] for f in truth_splits["eval_frame_ids"]])),
              "expression_correlation": errors["expression_correlation"]}
    if monocular:
        report["codec_psnr"] = codec_psnr(truth, tracked, truth_splits["eval_frame_ids"])
    else:
        report["mask_agreement"] = mask_agreement(truth, tracked, truth_splits)
    return tracked, report


def mask_agreement(truth: Path, tracked: Path, truth_splits: dict) -> dict:
    """Per held-out split of a multi-view subject: mean PSNR (dB) between each image composited on white with the
    truth's mask and with the tracker's (the same pixels: the score a perfect avatar of the truth would get against
    the retracked subject's targets), and the mean mask IoU (both thresholded at 0.5)."""
    from cgha.utils.image_io import read_mask, read_rgb

    meta = json.loads((truth / "meta.json").read_text())
    eval_cams, eval_frames = truth_splits["eval_camera_ids"], truth_splits["eval_frame_ids"]
    rig = [c for c in meta["camera_ids"] if c not in meta["splits"].get("out_of_rig_camera_ids", [])]
    views = {"test_cameras": [(f, c) for f in meta["frame_names"] if f not in eval_frames for c in eval_cams],
             "test_frames": [(f, c) for f in eval_frames for c in rig if c not in eval_cams]}
    out = {}
    for split, pairs in views.items():
        values, ious = [], []
        for frame, camera in pairs:
            image = torch.from_numpy(read_rgb(truth / "images" / frame / f"image_{camera}.jpg")).double()
            masks = [torch.from_numpy(read_mask(root / "images" / frame / f"mask_{camera}.jpg")).double()[..., None]
                     for root in (truth, tracked)]
            a, b = (image * m + (1 - m) for m in masks)
            values.append(float(psnr(a, b)))
            inside = [m[..., 0] > 0.5 for m in masks]
            ious.append(float((inside[0] & inside[1]).sum() / max(int((inside[0] | inside[1]).sum()), 1)))
        out[split] = {"composite_psnr": sum(values) / len(values), "mask_iou": sum(ious) / len(ious),
                      "images": len(values)}
    return out


def codec_psnr(truth: Path, tracked: Path, frames: list) -> float:
    """Mean PSNR (dB) of the tracked subject's images of `frames` against the truth's: what the video codec (and the
    tracker's resampling) changed in the held-out targets."""
    import imageio.v3 as iio

    def image(path: Path) -> torch.Tensor:  # [3, H, W] in [0, 1]
        return torch.from_numpy(iio.imread(path)).permute(2, 0, 1).double() / 255.0

    values = []
    for frame in frames:
        a = image(truth / "images" / frame / f"image_{MONOCULAR_CAMERA}.jpg")
        b = image(tracked / "images" / frame / f"image_{P.MONOCULAR_CAMERA}.jpg")
        if a.shape != b.shape:
            raise SystemExit(f"{tracked}: frame {frame} is {tuple(b.shape)} but the truth's is {tuple(a.shape)}")
        values.append(float(psnr(a, b)))
    return sum(values) / len(values)


def mesh_head(subject: Path, name: str, work: Path, suffix: str, device: str, seed: int = 0) -> Path:
    """Train the scale's mesh head on `subject` (`train.seed` = `seed`) -> its checkpoint."""
    config = ROOT / "config" / f"train_meshhead{suffix}.yaml"
    run([sys.executable, str(ROOT / "train_meshhead.py"), "--config", str(config), f"dataset.dataroot={subject}",
         f"recorder.name={name}", f"recorder.checkpoint_path={work / 'checkpoints'}",
         f"recorder.logdir={work / 'log' / name}", f"recorder.result_path={work / 'results'}", f"device={device}",
         "train.resume=false", f"train.seed={seed}"], work / f"{name}.log")
    return RunFiles(work / "checkpoints" / name).checkpoint("meshhead")


def compare(ablation: dict, name: str = "retracked") -> dict:
    """Per split: the `name` row against the truth row (PSNR mean ± spread over the seeds, the difference,
    whether it is inside the spreads), and the issue's goal on the held-out cameras."""
    summary = ablation["summary"]
    truth, tracked = summary["truth"], summary[name]
    out = {}
    for split, a in truth.items():
        b = tracked.get(split)
        if b is None:
            continue
        difference = b["mean"] - a["mean"]
        out[split] = {"truth_psnr": a, "retracked_psnr": b, "difference_db": difference,
                      "inside_spreads": abs(difference) <= a["spread"] + b["spread"]}
    cameras = out.get("test_cameras")
    out["goal_within_1db_on_held_out_cameras"] = None if cameras is None else cameras["difference_db"] >= -GOAL_DB
    return out


def attribution(ablation: dict) -> dict:
    """Per hybrid (`with_truth_<part>`) and split: its PSNR, the change from the retracked row and the share of the
    retracked-to-truth gap it closes."""
    summary = ablation["summary"]
    out = {}
    for part in PARTS:
        rows = summary.get(f"with_truth_{part}")
        if not rows:
            continue
        out[part] = {}
        for split, row in rows.items():
            truth, tracked = summary["truth"].get(split), summary["retracked"].get(split)
            if truth is None or tracked is None:
                continue
            gap = truth["mean"] - tracked["mean"]
            gain = row["mean"] - tracked["mean"]
            out[part][split] = {"psnr": row, "gain_over_retracked_db": gain,
                                "inside_spreads": abs(gain) <= row["spread"] + tracked["spread"],
                                "share_of_gap": gain / gap if gap > 0 else None}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--parallel", type=int, default=1, help="Gaussian-head runs trained at once")
    parser.add_argument("--attribute", nargs="*", choices=PARTS, default=None,
                        help="also train hybrids with one part of the truth: the parts named (no name: all; "
                             "monocular: masks and expression)")
    parser.add_argument("--plates", action="store_true",
                        help="multi-view: also track the rig with its background plates (masks by background "
                             "subtraction) and train that subject as `retracked_plates`")
    parser.add_argument("--photometric", action="store_true",
                        help="track with the photometric refinement (preprocess/track.py --photometric)")
    parser.add_argument("--track-only", action="store_true",
                        help=f"generate and track only (and build the hybrids): WORK/{TRACKING_JSON} and --out hold "
                             f"the tracking; no mesh head or Gaussian head is trained")
    parser.add_argument("--reuse-tracking", action="store_true",
                        help=f"do not track: take WORK/{TRACKING_JSON} and the subjects tracked into WORK by an "
                             f"earlier run (e.g. --track-only on another machine)")
    parser.add_argument("--truth-runs", type=Path, nargs="+", metavar="FILE",
                        help="do not train the truth: take its Gaussian-head rows from these JSONs' `runs` (variant "
                             "--truth-variant, no overrides, every seed found)")
    parser.add_argument("--truth-variant", default="baseline", help="the truth's variant in --truth-runs")
    parser.add_argument("--meshhead-seed", type=int, default=0,
                        help="train.seed of the mesh heads (every Gaussian-head seed of a subject starts from its one "
                             "mesh head: another mesh-head seed shows what the seeds' spread leaves out)")
    parser.add_argument("--work", type=Path, default=ROOT / "bench_retracked_runs")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("overrides", nargs="*", help="extra key=value overrides for every Gaussian-head run "
                        "(e.g. a shorter schedule for a smoke run)")
    args = parser.parse_args()
    scale = SCALES[args.scale]
    if args.plates and scale["monocular"]:
        parser.error("--plates needs a multi-view scale (demo or full)")
    if args.attribute is not None and scale["monocular"] and "pose" in args.attribute:
        parser.error("--attribute pose needs a multi-view scale: a monocular track's poses are camera-relative")
    parts = [] if args.attribute is None else [part for part in (args.attribute or PARTS)
                                               if not (scale["monocular"] and part == "pose")]
    if args.track_only and (args.reuse_tracking or args.truth_runs):
        parser.error("--track-only trains nothing: it takes neither --reuse-tracking nor --truth-runs")
    trained_overrides = [item for item in args.overrides if not item.startswith("compact.store.")]
    if args.truth_runs and trained_overrides:
        parser.error(f"--truth-runs: the truth's rows were trained without the overrides {trained_overrides}; the "
                     f"retracked ones would not have the same config (only compact.store.* may differ, and is "
                     f"checked against the rows)")
    # Read before any tracking or training: a bad file fails in seconds, not after the GPU time.
    truth_runs, truth_seeds = [], []
    if args.truth_runs:  # rows count only if evaluated on files stored as the re-tracked runs' will be
        store = vars(load_config(TrainConfig, gaussianhead_config(scale), args.overrides,
                                 stage="gaussianhead").compact.store)
        truth_runs, truth_seeds = truth_rows(args.truth_runs, args.truth_variant, scale["subject"], store)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    truth = ROOT / "data" / scale["subject"]
    # The truth's images are needed to track it, to train it and to build the hybrids; a reused tracking with the
    # truth's rows given and no hybrids needs none of it.
    need_truth = not (args.reuse_tracking and args.truth_runs and not parts)
    if need_truth:
        if scale["monocular"]:
            generate_monocular_subject(truth, identity=0, frames=scale["frames"], resolution=scale["resolution"],
                                       seed=0, device=torch.device(args.device))
        else:
            generate_subject(truth, identity=0, frames=scale["frames"], cameras=scale["cameras"],
                             resolution=scale["resolution"], seed=0, device=torch.device(args.device))
    if args.reuse_tracking:
        tracked_subjects, record = reused_tracking(work, args.scale, args.plates)
        if need_truth and splits(truth) != record["truth_splits"]:
            raise SystemExit(f"{truth}: held-out split {splits(truth)} differs from the one tracked "
                             f"{record['truth_splits']} ({work / TRACKING_JSON})")
        tracking, tracking_plates = record["tracking"], record.get("tracking_plates")
    else:
        tracked, tracking = track(truth, work, scale, args.device, photometric=args.photometric)
        tracked_subjects = {"retracked": tracked}
        if args.plates:
            tracked_subjects["retracked_plates"], tracking_plates = track(truth, work, scale, args.device, plates=True,
                                                                          photometric=args.photometric)
        write_json(work / TRACKING_JSON, {
            "scale": args.scale, "truth_splits": splits(truth), "tracking": tracking,
            **({"tracking_plates": tracking_plates} if args.plates else {}),
            # Relative to WORK, so that WORK can be copied to another machine and reused there.
            "subjects": {name: str(subject.relative_to(work)) for name, subject in tracked_subjects.items()}})
    print(f"{'reused: ' if args.reuse_tracking else ''}tracked in {tracking['seconds']:.1f} s: rotation error "
          f"median {tracking['rotation_deg_median']:.2f} deg, reprojection median "
          f"{tracking['reprojection_median_px_at_512']:.2f} px at 512", flush=True)
    subjects = {} if args.truth_runs else {"truth": truth}  # the first is bench_ablation's reference
    subjects.update(tracked_subjects)
    subjects.update({f"with_truth_{part}": hybrid_subject(subjects["retracked"], truth, work / f"hybrid_{part}",
                                                          [part]) for part in parts})
    base = {"scale": args.scale, "seeds": args.seeds, "meshhead_seed": args.meshhead_seed, "device": args.device,
            "overrides": args.overrides,
            "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
            "date": time.strftime("%Y-%m-%d"), "tracking": tracking,
            **({"tracking_plates": tracking_plates} if args.plates else {})}
    if args.track_only:
        write_json(args.out, base)
        return
    variants = {name: [f"dataset.dataroot={subject}"] for name, subject in subjects.items()}
    if not scale["monocular"]:  # the multi-view configs start from each subject's own mesh head
        for name, subject in subjects.items():
            head = mesh_head(subject, f"meshhead_{name}", work, scale["suffix"], args.device, args.meshhead_seed)
            variants[name].append(f"load_meshhead_checkpoint={head}")
    ablation_json = work / "ablation.json"
    run([sys.executable, str(ROOT / "benchmarks" / "bench_ablation.py"),
         "--config", str(gaussianhead_config(scale)),
         "--seeds", *map(str, args.seeds), "--parallel", str(args.parallel), "--work", str(work / "ablation"),
         "--out", str(ablation_json),
         *[item for name, overrides in variants.items() for item in ("--variant", f"{name}={','.join(overrides)}")],
         f"device={args.device}", *args.overrides], work / "ablation.log")
    ablation = json.loads(ablation_json.read_text())
    if args.truth_runs:  # the truth's given rows join the trained ones, summarised alike (compare() reads the summary)
        runs = ablation["runs"] + truth_runs
        ablation = {**ablation, "runs": runs, "summary": summarise(runs, ["truth", *variants])}
    report = {**base, "comparison": compare(ablation),
              **({"comparison_plates": compare(ablation, "retracked_plates")} if args.plates else {}),
              **({"truth_source": {"files": [str(file) for file in args.truth_runs], "variant": args.truth_variant,
                                   "seeds": truth_seeds}} if args.truth_runs else {}),
              "attribution": attribution(ablation), "ablation": ablation}
    write_json(args.out, report)
    for key, label in (("comparison", "retracked"), ("comparison_plates", "retracked with plates")):
        for split, row in report.get(key, {}).items():
            if isinstance(row, dict):
                print(f"{split}: truth {row['truth_psnr']['mean']:.2f} ± {row['truth_psnr']['spread']:.2f}, {label} "
                      f"{row['retracked_psnr']['mean']:.2f} ± {row['retracked_psnr']['spread']:.2f} dB "
                      f"({row['difference_db']:+.2f}{', inside the spreads' if row['inside_spreads'] else ''})")
    for part, rows in report["attribution"].items():
        for split, row in rows.items():
            share = "" if row["share_of_gap"] is None else f", {100 * row['share_of_gap']:.0f}% of the gap"
            print(f"retracked with the truth's {part}, {split}: {row['psnr']['mean']:.2f} ± "
                  f"{row['psnr']['spread']:.2f} dB ({row['gain_over_retracked_db']:+.2f} over retracked{share})")
    goal = report["comparison"]["goal_within_1db_on_held_out_cameras"]
    if goal is not None:
        print(f"goal (held-out cameras within {GOAL_DB} dB): {goal}")
    if "codec_psnr" in tracking:
        print(f"the video codec's own PSNR on the held-out frames: {tracking['codec_psnr']:.2f} dB")
    for split, agreement in tracking.get("mask_agreement", {}).items():
        print(f"{split}: images composited with the tracker's masks vs the truth's: "
              f"{agreement['composite_psnr']:.2f} dB, mask IoU {agreement['mask_iou']:.3f}")


if __name__ == "__main__":
    main()
