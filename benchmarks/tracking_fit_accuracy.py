"""Accuracy and speed of the tracker's landmark fit (cgha/tracking/fitting.py) against synthetic ground truth.

For each synthetic identity (default 0, 1, 2: none of them among the face model's PCA samples, so the model has to
generalise), the true iBUG-68 landmarks of generated frames (``cgha.synthetic``: the same trajectories and cameras
``make_synthetic.py`` writes) are projected into the cameras, Gaussian pixel noise is added (``--noise-px``, default
1.5 px per coordinate at 512^2, scaled with ``--resolution``), and ``fit_landmarks`` fits them with the default face
model and ``FitConfig``. Two setups:

- multi-view: the rig's ``--cameras`` (16) cameras, the multi-view trajectories (yaw +-20, pitch +-12 degrees);
- monocular: the monocular preset (``make_synthetic.py --monocular``): one camera straight ahead, a talking
  expression trajectory and head turns over yaw +-40, pitch +-20 degrees; its evaluation-only second camera (30
  degrees to the side, 10 above) is only used to measure how well the fitted 3D landmarks hold up in another view.

Reported per run and as mean / min / max over the identities:
- head rotation error (degrees, geodesic): median and 95th percentile over frames;
- translation error: in head-scale units (|dt| / scale) and in mm, taking the true head's outer-eye-corner distance
  (iBUG 36-45) as 88 mm (an adult average); monocular also split into depth (along the camera axis) and lateral;
- landmark reprojection (px at the images' resolution, median over all landmarks): against the noisy observations
  the fit saw, and against the noise-free true landmarks (the fit's own 2D accuracy); monocular also in the
  held-out camera;
- per-coefficient Pearson correlation of fitted and true expression coefficients (named), and their mean;
- fit time (one ``fit_landmarks`` call, after a small warm-up fit) and frames per second on ``--device``.
The issue's goals (median rotation error <= 1.5 deg monocular / <= 0.5 deg multi-view, median reprojection <= 2 px
at 512^2) are checked on the mean over identities.

    python benchmarks/tracking_fit_accuracy.py --device cpu --frames 100 --out benchmarks/results/x.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cgha.synthetic import (DEFAULT_SCALE, EXPRESSION_NAMES, HeadModel, camera_rig, expression_trajectory,
                            monocular_cameras, monocular_pose_trajectory, pose_trajectory,
                            talking_expression_trajectory)
from cgha.tracking import FaceModel, FitConfig, fit_landmarks, project_landmarks, rotation_error_deg
from cgha.utils.cameras import project_points
from common import json_safe

EYE_CORNERS_MM = 88.0  # adult exocanthion-exocanthion distance: converts head units to an mm equivalent
GOALS = {"monocular_rotation_median_deg": 1.5, "multiview_rotation_median_deg": 0.5, "reprojection_median_px": 2.0}
REFERENCE_RESOLUTION = 512


def ground_truth(identity: int, setup: str, frames: int, cameras: int, resolution: int, seed: int):
    """True pose [F, 6], expression [F, 16], world landmarks [F, 68, 3], the fitted cameras (Ks, viewmats) and
    the held-out ones (None for multi-view), as the synthetic writer films them."""
    if setup == "monocular":
        rig, held_out = monocular_cameras(resolution)
        exp, pose = talking_expression_trajectory(frames, seed), monocular_pose_trajectory(frames, seed)
    else:
        rig, held_out = camera_rig(cameras, resolution), None
        exp, pose = expression_trajectory(frames, seed), pose_trajectory(frames, seed)
    head = HeadModel(identity, dtype=torch.float64)
    exp_t, pose_t = torch.from_numpy(exp).double(), torch.from_numpy(pose).double()
    verts = head.posed_vertices(exp_t, pose_t, torch.full((frames,), DEFAULT_SCALE, dtype=torch.float64))
    world = head.landmarks(verts, exp_t)
    neutral = head.landmarks(head.canonical_vertices(torch.zeros(1, 16, dtype=torch.float64)),
                             torch.zeros(1, 16, dtype=torch.float64))[0]
    eye_corners = float((neutral[36] - neutral[45]).norm()) * DEFAULT_SCALE  # world units
    cams = (rig.Ks.double(), rig.viewmats.double())
    held = None if held_out is None else (held_out.Ks.double(), held_out.viewmats.double())
    return pose_t, exp_t, world, cams, held, eye_corners


def _project(world, cams):
    Ks, viewmats = cams
    T, C = world.shape[0], Ks.shape[0]
    uv, _ = project_points(world[:, None].expand(T, C, 68, 3), viewmats[None], Ks[None])
    return uv  # [T, C, 68, 2]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-9 or b.std() < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def run_one(model: FaceModel, identity: int, setup: str, args, device) -> dict:
    pose, exp, world, cams, held, eye_corners = ground_truth(identity, setup, args.frames, args.cameras,
                                                             args.resolution, args.seed)
    clean = _project(world, cams)
    g = torch.Generator().manual_seed(args.seed * 1000 + identity)
    noise = args.noise_px * args.resolution / REFERENCE_RESOLUTION
    observed = clean + noise * torch.randn(clean.shape, generator=g, dtype=clean.dtype)
    conf = torch.ones(observed.shape[:3])
    Ks, viewmats = cams
    size = (args.resolution, args.resolution)

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fit_landmarks(model, observed, conf, Ks, viewmats, size, config=FitConfig(), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start

    fit_pose, fit_exp = result.pose.cpu().double(), result.exp.cpu().double()
    fit_world = result.landmarks_3d.cpu().double()
    rot = rotation_error_deg(fit_pose[:, :3], pose[:, :3]).numpy()
    dt = fit_pose[:, 3:] - pose[:, 3:]
    trans_units = (dt.norm(dim=-1) / DEFAULT_SCALE).numpy()
    mm_per_world = EYE_CORNERS_MM / eye_corners
    fitted_uv = project_landmarks(fit_world, Ks, viewmats)
    reproj_obs = (fitted_uv - observed).norm(dim=-1).numpy()
    reproj_true = (fitted_uv - clean).norm(dim=-1).numpy()
    corr = {name: _pearson(fit_exp[:, i].numpy(), exp[:, i].numpy()) for i, name in enumerate(EXPRESSION_NAMES)}
    valid = [v for v in corr.values() if not math.isnan(v)]
    row = {
        "setup": setup, "identity": identity, "frames": args.frames, "cameras": int(Ks.shape[0]),
        "rotation_median_deg": float(np.median(rot)), "rotation_p95_deg": float(np.percentile(rot, 95)),
        "translation_median_head_units": float(np.median(trans_units)),
        "translation_p95_head_units": float(np.percentile(trans_units, 95)),
        "translation_median_mm": float(np.median(dt.norm(dim=-1).numpy() * mm_per_world)),
        "reprojection_observed_median_px": float(np.median(reproj_obs)),
        "reprojection_true_median_px": float(np.median(reproj_true)),
        "expression_correlation": corr, "expression_correlation_mean": float(np.mean(valid)),
        "expression_mae": float((fit_exp - exp).abs().mean()),
        "scale_fitted": bool(result.scale_fitted), "scale_error_rel": float(result.scale) / DEFAULT_SCALE - 1.0,
        "fit_seconds": seconds, "frames_per_second": args.frames / seconds,
        "iterations": dict(result.iterations),
    }
    if setup == "monocular":
        # Depth: along the fitted camera's optical axis (its third row); lateral: across it.
        axis = viewmats[0, 2, :3]
        depth = (dt @ axis).abs()
        lateral = (dt - (dt @ axis)[:, None] * axis).norm(dim=-1)
        row["translation_depth_median_mm"] = float(np.median(depth.numpy() * mm_per_world))
        row["translation_lateral_median_mm"] = float(np.median(lateral.numpy() * mm_per_world))
        true_held = _project(world, held)
        row["heldout_camera_reprojection_median_px"] = float(np.median(
            (project_landmarks(fit_world, *held) - true_held).norm(dim=-1).numpy()))
        # One camera cannot tell a smaller head nearer from a larger one farther (the whole scene scaled about the
        # camera centre projects the same): the same numbers after the one scale that best maps the fitted
        # landmarks of the sequence onto the true ones, which is the 3D error beyond that ambiguity.
        centre = -viewmats[0, :3, :3].T @ viewmats[0, :3, 3]
        a, b = (fit_world - centre).reshape(-1, 3), (world - centre).reshape(-1, 3)
        s = float((a * b).sum() / (a * a).sum())
        aligned = centre + s * (fit_world - centre)
        row["monocular_scale_factor"] = s
        row["translation_depth_scale_aligned_median_mm"] = float(np.median(
            ((centre + s * (fit_pose[:, 3:] - centre) - pose[:, 3:]) @ axis).abs().numpy() * mm_per_world))
        row["heldout_camera_reprojection_scale_aligned_median_px"] = float(np.median(
            (project_landmarks(aligned, *held) - true_held).norm(dim=-1).numpy()))
    return row


SUMMARY_KEYS = ("rotation_median_deg", "rotation_p95_deg", "translation_median_head_units",
                "translation_p95_head_units", "translation_median_mm", "translation_depth_median_mm",
                "translation_lateral_median_mm", "reprojection_observed_median_px", "reprojection_true_median_px",
                "translation_depth_scale_aligned_median_mm", "heldout_camera_reprojection_median_px",
                "heldout_camera_reprojection_scale_aligned_median_px", "monocular_scale_factor",
                "expression_correlation_mean", "expression_mae",
                "scale_error_rel", "fit_seconds", "frames_per_second")


def summarise(rows: list) -> dict:
    """Mean, min and max over identities of every number, and of each coefficient's correlation."""
    out = {}
    for key in SUMMARY_KEYS:
        values = [r[key] for r in rows if key in r]
        if values:
            out[key] = {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}
    # Per coefficient: the mean over the identities whose true coefficient varies (NaN where none does).
    out["expression_correlation"] = {}
    for name in EXPRESSION_NAMES:
        values = [r["expression_correlation"][name] for r in rows if not math.isnan(r["expression_correlation"][name])]
        out["expression_correlation"][name] = statistics.fmean(values) if values else float("nan")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--frames", type=int, default=100, help="frames per sequence (default 100)")
    parser.add_argument("--identities", type=int, nargs="+", default=[0, 1, 2],
                        help="synthetic identities, one sequence each (default 0 1 2)")
    parser.add_argument("--cameras", type=int, default=16, help="multi-view rig cameras (default 16)")
    parser.add_argument("--resolution", type=int, default=512, help="image side in pixels (default 512)")
    parser.add_argument("--noise-px", type=float, default=1.5,
                        help="landmark noise, standard deviation per coordinate in px at 512^2 (default 1.5)")
    parser.add_argument("--seed", type=int, default=0, help="trajectory and noise seed (default 0)")
    parser.add_argument("--setups", nargs="+", choices=("multiview", "monocular"), default=["multiview", "monocular"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    if args.frames < 3 or args.cameras < 2 or args.resolution < 16 or args.noise_px < 0:
        parser.error("need --frames >= 3, --cameras >= 2, --resolution >= 16, --noise-px >= 0")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    device = torch.empty(0, device=args.device).device
    load_before = os.getloadavg()
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"

    model = FaceModel(device=device)
    # Warm-up: the first fit pays one-time costs (kernel loading, allocator growth) that are not the fit's speed.
    _, _, world, cams, _, _ = ground_truth(args.identities[0], "multiview", 4, 2, args.resolution, args.seed)
    fit_landmarks(model, _project(world, cams), torch.ones(4, 2, 68), *cams, (args.resolution,) * 2, device=device)

    rows = []
    for setup in args.setups:
        for identity in args.identities:
            row = run_one(model, identity, setup, args, device)
            rows.append(row)
            print(f"{setup:9s} id {identity}: rotation median {row['rotation_median_deg']:.3f} deg, reprojection "
                  f"{row['reprojection_observed_median_px']:.2f} px "
                  f"(vs truth {row['reprojection_true_median_px']:.2f}), exp corr "
                  f"{row['expression_correlation_mean']:.3f}, {row['frames_per_second']:.1f} frames/s",
                  file=sys.stderr, flush=True)
    summary = {setup: summarise([r for r in rows if r["setup"] == setup]) for setup in args.setups}
    goals = {}
    if "monocular" in summary:
        goals["monocular_rotation_median_deg"] = summary["monocular"]["rotation_median_deg"]["mean"]
    if "multiview" in summary:
        goals["multiview_rotation_median_deg"] = summary["multiview"]["rotation_median_deg"]["mean"]
    goals["reprojection_median_px"] = max(s["reprojection_observed_median_px"]["mean"] for s in summary.values())
    result = {
        "benchmark": "tracking_fit_accuracy",
        "date": datetime.date.today().isoformat(),
        "device": device_name,
        "torch": torch.__version__,
        # Other processes on the machine slow a CPU fit down (timings above all): the 1-minute load averages.
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "face_model": model.meta(),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "noise_px_at_resolution": args.noise_px * args.resolution / REFERENCE_RESOLUTION,
        "mm_convention": f"true head's outer eye corners (iBUG 36-45) = {EYE_CORNERS_MM} mm",
        "notes": ["expression_correlation null: the coefficient is constant in that true sequence (no correlation "
                  "defined); per-coefficient summaries average the identities where it varies",
                  "reprojection_observed: fitted vs the noisy landmarks the fit saw (2D Gaussian noise alone has a "
                  "median distance of 1.18 sigma); reprojection_true: fitted vs the noise-free true landmarks",
                  "monocular *_scale_aligned: after the one scale about the camera centre that best maps the fitted "
                  "landmarks of the sequence onto the true ones (head size and depth are one unknown in one view)"],
        "goals": {k: {"measured": v, "goal": GOALS[k], "met": bool(v <= GOALS[k])} for k, v in goals.items()},
        "summary": summary,
        "runs": rows,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(json_safe(result), indent=2) + "\n")
    print(_table(result))


def _table(result: dict) -> str:
    lines = [f"Tracking fit accuracy, {result['device']}, torch {result['torch']}, "
             f"{result['arguments']['frames']} frames, noise {result['arguments']['noise_px']} px at 512^2, "
             f"identities {result['arguments']['identities']} (mean [min, max])", "",
             "| setup | rotation median deg | rotation p95 deg | translation median (head units / mm) | "
             "reprojection median px (obs / true) | exp corr mean | frames/s |", "|---|---|---|---|---|---|---|"]

    def f(s, key, fmt):
        v = s[key]
        return f"{v['mean']:{fmt}} [{v['min']:{fmt}}, {v['max']:{fmt}}]"

    for setup, s in result["summary"].items():
        lines.append(f"| {setup} | {f(s, 'rotation_median_deg', '.3f')} | {f(s, 'rotation_p95_deg', '.3f')} | "
                     f"{s['translation_median_head_units']['mean']:.4f} / {s['translation_median_mm']['mean']:.2f} | "
                     f"{s['reprojection_observed_median_px']['mean']:.2f} / "
                     f"{s['reprojection_true_median_px']['mean']:.2f} | {f(s, 'expression_correlation_mean', '.3f')}"
                     f" | {s['frames_per_second']['mean']:.1f} |")
    lines += ["", "| coefficient | " + " | ".join(result["summary"]) + " |",
              "|---|" + "---|" * len(result["summary"])]
    for name in EXPRESSION_NAMES:
        lines.append(f"| {name} | " + " | ".join(f"{s['expression_correlation'][name]:.3f}"
                                                for s in result["summary"].values()) + " |")
    lines += ["", "Goals: " + ", ".join(f"{k} {v['measured']:.3f} <= {v['goal']} {'met' if v['met'] else 'MISSED'}"
                                       for k, v in result["goals"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
