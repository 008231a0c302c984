"""End-to-end accuracy and speed of preprocess/track.py (MediaPipe landmarks + the face-model fit) on synthetic
subjects with ground truth, with and without the landmark calibration (cgha/tracking/calibration.py).

For each identity (``--identities``, default 0-3; the calibration is estimated on 10-17, the face model's PCA on
1000+, so all of them are held out of both):

- multi-view: a ``make_synthetic.py`` subject (``--cameras`` 16 rig cameras x ``--frames`` 10 frames at 512^2),
  whose rig images and calibration are exported as ``DIR/<frame>/<camera>.jpg`` + ``cams.json`` and tracked with
  ``track_images`` (``--crop full``, as a rig is tracked);
- monocular: a ``make_synthetic.py --monocular`` subject (``--mono-frames`` 60 frames: yaw +-40, pitch +-20
  degrees, talking), its camera's frames written to an mp4 (libx264, high quality) and tracked with ``track_video``
  at that camera's field of view;

each tracked once per variant (``--variants``) on ``--device`` (default the CPU; landmarks always run on the CPU).
Compared with the truth by ``cgha.tracking.accuracy.ground_truth_errors`` (monocular: in the camera's frame, the
only observable one) and reported per run and over all frames of all identities:

- head rotation error (degrees): median, p90, p95, and the mean signed error per axis in the head's frame
  (x = pitch, y = yaw, z = roll: a bias shows there);
- head position error: world units and mm (the true head's outer eye corners, iBUG 36-45, taken as 88 mm);
- landmark reprojection (the tracker's own, px at 512: fitted landmarks vs MediaPipe's);
- per-coefficient expression correlation and its mean over the coefficients that vary;
- detection rate (images with a face / images) and frames per second (landmarks, fit, whole run).

The issue's goals (median rotation error <= 0.5 deg multi-view, <= 1.5 deg monocular, median reprojection <= 2 px)
are checked on the pooled frames.

    python benchmarks/bench_tracking.py --out benchmarks/results/tracking_end_to_end_cpu.json

Generated subjects are kept in ``--work`` (default data/bench_tracking) and reused by later runs.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from cgha.synthetic import generate_monocular_subject, generate_subject
from cgha.synthetic.background import camera_backgrounds
from cgha.synthetic.expression import EXPRESSION_NAMES
from cgha.tracking import pipeline as P
from cgha.tracking.accuracy import ground_truth_errors, rotation_about_mean
from cgha.tracking.photometric import PhotometricConfig
from cgha.utils.atomic import write_bytes_atomic
from common import json_safe

EYE_CORNERS_MM = 88.0  # adult exocanthion-exocanthion distance: converts world units to an mm equivalent
GOALS = {"multiview_rotation_median_deg": 0.5, "monocular_rotation_median_deg": 1.5, "reprojection_median_px": 2.0}
# Variant -> the TrackOptions it changes: `calibrated` and `uncalibrated` as tracker 1.1.0 (fixed calibration or
# none), `oblique` as 1.3.0 (views weighted by their angle from frontal), `default` today's tracker (1.4.0: also the
# view-dependent calibration on monocular input), `view_always` that correction on rig input too, `photometric`
# the default followed by the photometric refinement (cgha/tracking/photometric.py), `photometric_crop192` that
# refinement comparing each view at a 192-pixel face crop instead of 128.
VARIANTS = {"calibrated": {"calibration": "default", "oblique_view_deg": 0.0, "view_calibration": "off"},
            "uncalibrated": {"calibration": None, "oblique_view_deg": 0.0, "view_calibration": "off"},
            "oblique": {"calibration": "default", "oblique_view_deg": 35.0, "view_calibration": "off"},
            "default": {}, "view_always": {"view_calibration": "always"}, "photometric": {"photometric": True},
            "photometric_crop192": {"photometric": True, "photometric_config": PhotometricConfig(crop_px=192)},
            "photometric_expression": {"photometric": True,
                                       "photometric_config": PhotometricConfig(refine_expression=True)}}


# ------------------------------------------------------------------------------------------------------------
# Inputs
# ------------------------------------------------------------------------------------------------------------

def subjects(identity: int, args) -> tuple:
    """(multi-view subject, monocular subject) folders of ``identity``, generated once into ``args.work``."""
    quiet = not args.progress
    rig = generate_subject(args.work / f"id{identity}_rig", identity=identity, frames=args.frames,
                           cameras=args.cameras, resolution=args.resolution, seed=args.seed, progress=not quiet)
    mono = generate_monocular_subject(args.work / f"id{identity}_mono", identity=identity, frames=args.mono_frames,
                                      resolution=args.resolution, seed=args.seed, progress=not quiet)
    return rig, mono


def export_rig(subject: Path, out: Path) -> tuple:
    """The subject's rig cameras as track.py's calibrated input: ``out/images/<frame>/<camera>.jpg`` and
    ``out/cams.json`` (the evaluation-only out-of-rig cameras are left out)."""
    meta = json.loads((subject / "meta.json").read_text())
    cameras = [c for c in meta["camera_ids"] if c not in meta["splits"].get("out_of_rig_camera_ids", [])]
    if out.exists():
        shutil.rmtree(out)
    for frame in meta["frame_names"]:
        (out / "images" / frame).mkdir(parents=True)
        for camera in cameras:
            shutil.copy(subject / "images" / frame / f"image_{camera}.jpg", out / "images" / frame / f"{camera}.jpg")
    entries = {}
    side = meta["original_resolution"]
    for camera in cameras:
        with np.load(subject / "cameras" / meta["frame_names"][0] / f"camera_{camera}.npz") as arrays:
            viewmat = np.eye(4)
            viewmat[:3] = arrays["extrinsic"]
            entries[camera] = {"K": arrays["intrinsic"].tolist(), "world_to_camera": viewmat.tolist(),
                               "image_size": [side, side]}
    (out / "cams.json").write_text(json.dumps({"cameras": entries}, indent=1))
    return out / "images", out / "cams.json"


def export_plates(subject: Path, out: Path) -> Path:
    """The empty scene behind each of the subject's rig cameras, as track.py's ``--backgrounds`` folder
    (``out/<camera>.png`` at the images' size): the synthetic writer's backgrounds, which it draws per camera in the
    order of ``meta.json``'s ``camera_ids``."""
    meta = json.loads((subject / "meta.json").read_text())
    side = meta["original_resolution"]
    plates = camera_backgrounds(len(meta["camera_ids"]), side, side)
    out.mkdir(parents=True, exist_ok=True)
    for camera, plate in zip(meta["camera_ids"], plates):
        if camera not in meta["splits"].get("out_of_rig_camera_ids", []):
            image = (plate.clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
            cv2.imwrite(str(out / f"{camera}.png"), image[..., ::-1])
    return out


def export_video(subject: Path, path: Path, camera: str = "cam00") -> float:
    """The subject's frames of ``camera`` as an mp4 (libx264, near-lossless); returns its field of view in degrees
    across the (square) frame."""
    import imageio.v3 as iio

    meta = json.loads((subject / "meta.json").read_text())
    frames = [iio.imread(subject / "images" / f / f"image_{camera}.jpg") for f in meta["frame_names"]]
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), fps=25, codec="libx264", quality=10)
    with np.load(subject / "cameras" / meta["frame_names"][0] / f"camera_{camera}.npz") as arrays:
        K = arrays["intrinsic"]
    return float(np.degrees(2.0 * np.arctan(0.5 * meta["original_resolution"] / K[0, 0])))


# ------------------------------------------------------------------------------------------------------------
# Measures
# ------------------------------------------------------------------------------------------------------------

def mm_per_world(truth: Path) -> float:
    """mm per world unit, from the true head's outer eye corners (iBUG 36, 45) in the first frame = 88 mm."""
    meta = json.loads((truth / "meta.json").read_text())
    lmk = np.load(truth / "params" / meta["frame_names"][0] / "lmk_3d.npy").astype(np.float64)
    return EYE_CORNERS_MM / float(np.linalg.norm(lmk[36] - lmk[45]))


def run_one(identity: int, setup: str, variant: str, inputs, truth: Path, args) -> dict:
    """Track one input with one variant, compare with the truth; returns the row (per-frame values included)."""
    out = args.work / "tracked" / f"id{identity}_{setup}_{variant}"
    options = P.TrackOptions(resolution=args.resolution, device=args.device, force=True, progress=args.progress,
                             **VARIANTS[variant])
    start = time.perf_counter()
    if setup == "multiview":
        images, cams = inputs
        options.crop = "full"
        result = P.track_images(images, cams, out, options)
        truth_camera = None
    else:
        video, fov = inputs
        options.fov_deg = fov
        result = P.track_video(video, out, options)
        truth_camera = "cam00"
    seconds = time.perf_counter() - start
    errors = ground_truth_errors(out, truth, truth_camera=truth_camera)
    frames = list(errors["rotation_deg"]["per_frame"])
    rot = np.array([errors["rotation_deg"]["per_frame"][f] for f in frames])
    trans = np.array([errors["translation"]["per_frame"][f] for f in frames])
    signed = np.array([errors["rotation_offset_deg"]["per_frame"][f] for f in frames]).reshape(-1, 3)
    report = result.report
    n_images = report["frames"]["input"] * len(result.cameras)
    detected = sum(report["detections_per_camera"].values())
    corr = {k: v for k, v in errors["expression_correlation"].items() if v is not None}
    per_frame_reproj = np.array(list(report["reprojection_px"]["per_frame"].values())) * 512.0 / args.resolution
    return {
        "identity": identity, "setup": setup, "variant": variant,
        "frames": report["frames"], "cameras": len(result.cameras),
        "rotation_deg": rot.tolist(), "translation_world": trans.tolist(),
        "translation_mm": (trans * mm_per_world(truth)).tolist(),
        "signed_rotation_deg_head_frame": signed.tolist(),
        "reprojection_px_at_512_per_frame": per_frame_reproj.tolist(),
        "reprojection_median_px_at_512": report["reprojection_px"]["median_at_512"],
        "landmark_error_vs_truth_px_at_512_per_view": (errors["landmark_error_px"] or {}).get("per_view"),
        "expression_correlation": errors["expression_correlation"],
        "expression_correlation_mean": float(np.mean(list(corr.values()))) if corr else None,
        "detection_rate": detected / max(n_images, 1), "images": n_images, "images_with_face": detected,
        "fps": report["fps"], "seconds": seconds, "frames_per_second_end_to_end": report["frames"]["input"] / seconds,
    }


def summarise(rows: list) -> dict:
    """Pooled over the rows' frames (rotation, translation, reprojection), means over rows (the rest)."""
    rot = np.concatenate([r["rotation_deg"] for r in rows])
    mm = np.concatenate([r["translation_mm"] for r in rows])
    world = np.concatenate([r["translation_world"] for r in rows])
    per_row = [np.asarray(r["signed_rotation_deg_head_frame"]).reshape(-1, 3) for r in rows]
    signed = np.concatenate(per_row)
    # Each row is one identity's sequence: the offset all its frames share, and each frame's error about it.
    split = [rotation_about_mean(np.radians(offsets)) for offsets in per_row]
    about_mean = np.concatenate([residual for _, residual in split])
    reproj = np.concatenate([r["reprojection_px_at_512_per_frame"] for r in rows])
    truth_px = [r.get("landmark_error_vs_truth_px_at_512_per_view") for r in rows]
    truth_px = np.concatenate(truth_px) if all(v is not None for v in truth_px) else None  # multi-view only
    corr = {}
    for name in EXPRESSION_NAMES:
        values = [r["expression_correlation"][name] for r in rows if r["expression_correlation"].get(name) is not None]
        corr[name] = float(np.mean(values)) if values else None
    return {
        "identities": [r["identity"] for r in rows], "frames": int(rot.size),
        "rotation_median_deg": float(np.median(rot)), "rotation_p90_deg": float(np.percentile(rot, 90)),
        "rotation_p95_deg": float(np.percentile(rot, 95)),
        "rotation_median_deg_per_identity": [float(np.median(r["rotation_deg"])) for r in rows],
        "shared_rotation_offset_deg_per_identity": [offset for offset, _ in split],
        "rotation_about_mean_median_deg": float(np.median(about_mean)),
        "rotation_about_mean_p90_deg": float(np.percentile(about_mean, 90)),
        "signed_rotation_mean_deg": {"pitch_x": float(signed[:, 0].mean()), "yaw_y": float(signed[:, 1].mean()),
                                     "roll_z": float(signed[:, 2].mean())},
        "translation_median_mm": float(np.median(mm)), "translation_p90_mm": float(np.percentile(mm, 90)),
        "translation_median_world": float(np.median(world)),
        "reprojection_median_px_at_512": float(np.median(reproj)),
        "landmark_error_vs_truth_median_px_at_512": float(np.median(truth_px)) if truth_px is not None else None,
        "expression_correlation": corr,
        "expression_correlation_mean": float(np.mean([r["expression_correlation_mean"] for r in rows])),
        "detection_rate": float(sum(r["images_with_face"] for r in rows) / sum(r["images"] for r in rows)),
        "landmarks_images_per_second": float(np.mean([r["fps"]["landmarks_images"] for r in rows])),
        "fit_frames_per_second": float(np.mean([r["fps"]["fit_frames"] for r in rows])),
        "end_to_end_frames_per_second": float(np.mean([r["frames_per_second_end_to_end"] for r in rows])),
        "dropped_frames": int(sum(r["frames"]["dropped"] for r in rows)),
    }


def goals(summary: dict) -> dict:
    """The issue's goals on each variant's runs."""
    out = {}
    for variant in sorted({key.split("/")[1] for key in summary}):
        measured = {}
        if f"multiview/{variant}" in summary:
            measured["multiview_rotation_median_deg"] = summary[f"multiview/{variant}"]["rotation_median_deg"]
        if f"monocular/{variant}" in summary:
            measured["monocular_rotation_median_deg"] = summary[f"monocular/{variant}"]["rotation_median_deg"]
        reproj = [s["reprojection_median_px_at_512"] for k, s in summary.items() if k.endswith("/" + variant)]
        if reproj:
            measured["reprojection_median_px"] = max(reproj)
        out[variant] = {k: {"measured": round(v, 3), "goal": GOALS[k], "met": bool(v <= GOALS[k])}
                        for k, v in measured.items()}
    return out


def table(summary: dict) -> str:
    """The markdown rows of docs/tracking.md's end-to-end table."""
    lines = ["| setup | variant | rotation median / p90 (deg) | about the shared offset, median / p90 (deg) | "
             "shared offset per identity (deg) | mean pitch error (deg) | position median (mm) | "
             "reprojection median (px at 512) | expression correlation (mean) | detection | landmarks images/s | "
             "fit frames/s | end to end frames/s |", "|" + " --- |" * 13]
    for key, s in summary.items():
        setup, variant = key.split("/")
        offsets = " / ".join(f"{o:.2f}" for o in s["shared_rotation_offset_deg_per_identity"])
        lines.append(f"| {setup} | {variant} | {s['rotation_median_deg']:.2f} / "
                     f"{s['rotation_p90_deg']:.2f} | {s['rotation_about_mean_median_deg']:.2f} / "
                     f"{s['rotation_about_mean_p90_deg']:.2f} | {offsets} | "
                     f"{s['signed_rotation_mean_deg']['pitch_x']:+.2f} | "
                     f"{s['translation_median_mm']:.1f} | {s['reprojection_median_px_at_512']:.2f} | "
                     f"{s['expression_correlation_mean']:.2f} | {s['detection_rate']:.1%} | "
                     f"{s['landmarks_images_per_second']:.0f} | {s['fit_frames_per_second']:.0f} | "
                     f"{s['end_to_end_frames_per_second']:.1f} |")
    return "\n".join(lines)


def summaries(rows: list) -> dict:
    """{"setup/variant": summarise(its rows)} in the rows' order of first appearance."""
    keys = dict.fromkeys((r["setup"], r["variant"]) for r in rows)
    return {f"{setup}/{variant}": summarise([r for r in rows if r["setup"] == setup and r["variant"] == variant])
            for setup, variant in keys}


def resummarise(path: Path, out: Path | None) -> None:
    """An earlier run's JSON with its summary, goals and table recomputed from its rows (tracked once, measured
    again): the rows and everything else are kept as they were."""
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"error: --resummarise {path}: not a readable JSON file ({error})")
    rows = result.get("runs") if isinstance(result, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise SystemExit(f"error: --resummarise {path}: no 'runs' list of per-frame rows (not a bench_tracking JSON?)")
    try:
        summary = summaries(rows)
    except KeyError as error:  # a row of another benchmark or an older layout: name the key, write nothing
        raise SystemExit(f"error: --resummarise {path}: a row of 'runs' has no {error} (not a bench_tracking JSON, "
                         "or from a version that did not record it)")
    result.update(goals=goals(summary), summary=summary, table=table(summary),
                  resummarised={"date": datetime.date.today().isoformat(), "command": "python " + " ".join(sys.argv)})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(out, (json.dumps(json_safe(result), indent=1) + "\n").encode())
    print(result["table"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--identities", type=int, nargs="+", default=[0, 1, 2, 3], help="default 0 1 2 3")
    parser.add_argument("--setups", nargs="+", choices=("multiview", "monocular"), default=["multiview", "monocular"])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["default", "uncalibrated"],
                        help="tracker settings compared (default: default uncalibrated)")
    parser.add_argument("--frames", type=int, default=10, help="multi-view frames (default 10)")
    parser.add_argument("--cameras", type=int, default=16, help="multi-view rig cameras (default 16)")
    parser.add_argument("--mono-frames", type=int, default=60, help="monocular frames (default 60)")
    parser.add_argument("--resolution", type=int, default=512, help="image side (default 512)")
    parser.add_argument("--seed", type=int, default=0, help="trajectory seed of the subjects (default 0)")
    parser.add_argument("--work", type=Path, default=Path("data/bench_tracking"),
                        help="generated subjects and tracked outputs (default data/bench_tracking)")
    parser.add_argument("--device", default="cpu", help="where the fit and the photometric refinement run (default "
                        "cpu; landmarks always run on the CPU)")
    parser.add_argument("--progress", action="store_true", help="progress bars")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--resummarise", type=Path, default=None, metavar="JSON",
                        help="track nothing: recompute the summary, goals and table of an earlier run's JSON from its "
                        "per-frame rows (for measures added since), written to --out")
    args = parser.parse_args()
    if args.resummarise is not None:
        resummarise(args.resummarise, args.out)
        return
    load_before = os.getloadavg()
    start = time.perf_counter()
    rows = []
    for identity in args.identities:
        rig, mono = subjects(identity, args)
        inputs = {"multiview": (export_rig(rig, args.work / "inputs" / f"id{identity}_rig"), rig),
                  "monocular": (None, mono)}
        if "monocular" in args.setups:
            video = args.work / "inputs" / f"id{identity}_mono.mp4"
            inputs["monocular"] = ((video, export_video(mono, video)), mono)
        for setup in args.setups:
            for variant in args.variants:
                row = run_one(identity, setup, variant, inputs[setup][0], inputs[setup][1], args)
                rows.append(row)
                print(f"id {identity} {setup:9s} {variant:12s}: rotation median {np.median(row['rotation_deg']):.2f} "
                      f"deg, reprojection {row['reprojection_median_px_at_512']:.2f} px, detection "
                      f"{row['detection_rate']:.0%}", file=sys.stderr, flush=True)
    summary = summaries(rows)
    from cgha.tracking.calibration import load_calibration

    calibration = load_calibration()
    result = {
        "benchmark": "bench_tracking (end to end)",
        "date": datetime.date.today().isoformat(),
        "device": (torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu")
        + f" (host {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        # Other processes on the machine slow the runs down (speeds above all): the 1-minute load averages.
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "command": "python " + " ".join(sys.argv),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "calibration": {"landmarker": calibration.landmarker, "identities": calibration.identities.tolist(),
                        "date": calibration.info.get("date")},
        "mm_convention": f"true head's outer eye corners (iBUG 36-45) = {EYE_CORNERS_MM} mm",
        "goals": goals(summary),
        "summary": summary,
        "table": table(summary),
        "seconds": round(time.perf_counter() - start, 1),
        "runs": rows,
    }
    text = json.dumps(json_safe(result), indent=1)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(result["table"])
    print(json.dumps(json_safe({"goals": result["goals"]}), indent=1))


if __name__ == "__main__":
    main()
