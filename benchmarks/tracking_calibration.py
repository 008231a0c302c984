"""Calibrate MediaPipe's iBUG-68 points against the face model's landmark definitions (cgha/tracking/calibration.py)
and write the shipped calibration file.

Renders synthetic identities (``--identities``, default 10-17: none of them the evaluation identities 0-3 of
benchmarks/bench_tracking.py, nor among the face model's PCA samples, which start at 1000) as the synthetic
writer films them, over many head poses and expressions:

- rig views: ``--rig-frames`` frames of the multi-view trajectories (yaw +-20, pitch +-12 degrees, the generator's
  expression trajectory), each seen by ``--rig-views`` cameras drawn from the 16-camera rig (azimuth +-75 degrees);
- monocular views: ``--mono-frames`` frames of the monocular preset (yaw +-40, pitch +-20 degrees, talking), seen
  by its camera and its evaluation camera;

every trajectory with a seed of its own (``--seed`` + identity), detects MediaPipe's face mesh in each view (views
without a face are left out), and estimates the per-landmark canonical offset (``estimate_landmark_offset``).
``--check-identities`` (default 0-3) are rendered the same way and only used to report how well the offsets
carry over to identities they were not estimated on. Writes the calibration (``--out``, default the package's
cgha/tracking/data/mediapipe_calibration.npz) and a JSON report (``--report``):

    python benchmarks/tracking_calibration.py --report benchmarks/results/tracking_calibration_cpu.json

``--views FILE`` keeps the rendered views' detections and truth in an .npz (read back instead of rendering when it
exists), so the estimate can be repeated without rendering again.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cgha.synthetic import (DEFAULT_SCALE, HeadModel, HeadTexture, camera_rig, expression_trajectory,
                            monocular_cameras, monocular_pose_trajectory, pose_trajectory, render_views,
                            talking_expression_trajectory)
from cgha.synthetic.background import camera_backgrounds
from cgha.tracking import FaceModel
from cgha.tracking.calibration import (DEFAULT_CALIBRATION_PATH, CalibrationViews, LandmarkCalibration,
                                       estimate_landmark_offset, estimate_view_coefficients, landmark_errors_px,
                                       save_calibration, scatter_px, view_offsets)
from cgha.tracking.landmarker import IBUG68_FROM_MEDIAPIPE, IBUG68_GROUPS, MEDIAPIPE_VERSION, FaceMeshDetector

TRAJECTORY_FRAMES = 300  # frames of the trajectories the views are picked from (evenly spaced)
RIG_CAMERAS = 16


def _identities(text: str) -> list:
    """``10-17`` or ``0,2,5`` -> a list of ints."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return out


def _plan(identity: int, args) -> list:
    """(exp [16], pose [6], Ks [c, 3, 3], viewmats [c, 4, 4], background indices [c]) per rendered frame."""
    seed = args.seed + identity
    rng = np.random.default_rng([seed, 0xCA1])
    rig = camera_rig(RIG_CAMERAS, args.resolution)
    exp, pose = expression_trajectory(TRAJECTORY_FRAMES, seed), pose_trajectory(TRAJECTORY_FRAMES, seed)
    plan = []
    for f in np.linspace(0, TRAJECTORY_FRAMES - 1, args.rig_frames).round().astype(int):
        cams = np.sort(rng.choice(RIG_CAMERAS, size=args.rig_views, replace=False))
        plan.append((exp[f], pose[f], rig.Ks[cams], rig.viewmats[cams], cams))
    main, held = monocular_cameras(args.resolution)
    Ks, viewmats = torch.cat([main.Ks, held.Ks]), torch.cat([main.viewmats, held.viewmats])
    exp, pose = talking_expression_trajectory(TRAJECTORY_FRAMES, seed), monocular_pose_trajectory(TRAJECTORY_FRAMES,
                                                                                                  seed)
    for f in np.linspace(0, TRAJECTORY_FRAMES - 1, args.mono_frames).round().astype(int):
        plan.append((exp[f], pose[f], Ks, viewmats, np.array([0, 1])))
    return plan


def render_identity(identity: int, args, detector: FaceMeshDetector) -> CalibrationViews:
    """The views of one identity with a detected face: truth and MediaPipe's iBUG-68 points."""
    head = HeadModel(identity)
    texture = HeadTexture(head.params, head.layout)
    backgrounds = camera_backgrounds(RIG_CAMERAS, args.resolution, args.resolution)
    rows = {name: [] for name in ("points", "canonical", "exp", "pose", "scale", "Ks", "viewmats")}
    for exp, pose, Ks, viewmats, bg in _plan(identity, args):
        exp_t, pose_t = torch.from_numpy(exp).float(), torch.from_numpy(pose).float()
        out = render_views(head, texture, exp_t, pose_t, DEFAULT_SCALE, viewmats, Ks, args.resolution,
                           args.resolution, backgrounds[bg])
        canonical = head.landmarks(head.canonical_vertices(exp_t[None]), exp_t[None])[0].double().numpy()
        for c, image in enumerate(out["image"]):
            rgb = (image.permute(1, 2, 0) * 255.0 + 0.5).to(torch.uint8).numpy()
            points, _ = detector.detect(rgb)
            if points is None:
                continue
            for name, value in (("points", points[IBUG68_FROM_MEDIAPIPE]), ("canonical", canonical), ("exp", exp),
                                ("pose", pose), ("scale", DEFAULT_SCALE), ("Ks", Ks[c].numpy()),
                                ("viewmats", viewmats[c].numpy())):
                rows[name].append(np.asarray(value, dtype=np.float64))
    n = len(rows["points"])
    return CalibrationViews(**{k: np.stack(v) if v else np.zeros((0,)) for k, v in rows.items()},
                            image_size=np.full(n, float(args.resolution)), identity=np.full(n, identity))


def collect(identities: list, args, cache: Path | None) -> CalibrationViews:
    """Render (or read back from ``cache``) the views of ``identities``."""
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            views = CalibrationViews(**{k: data[k] for k in data.files})
        if sorted(set(views.identity.tolist())) == sorted(identities):
            return views
        print(f"{cache}: other identities; rendering again", file=sys.stderr)
    parts = []
    with FaceMeshDetector() as detector:
        for identity in identities:
            start = time.perf_counter()
            parts.append(render_identity(identity, args, detector))
            print(f"identity {identity}: {len(parts[-1])} views with a face in {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
    views = CalibrationViews.concatenate(parts)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **views.arrays())
    return views


def group_stats(errors: np.ndarray) -> dict:
    """Mean and median px (at 512) per iBUG group, and the median over all landmarks, of errors [N, 68]."""
    out = {group: {"mean": round(float(errors[:, idx].mean()), 3), "median": round(float(np.median(errors[:, idx])), 3)}
           for group, idx in IBUG68_GROUPS.items()}
    out["all"] = {"mean": round(float(errors.mean()), 3), "median": round(float(np.median(errors)), 3)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--identities", type=_identities, default=list(range(10, 18)),
                        help="identities the offsets are estimated on (default 10-17)")
    parser.add_argument("--check-identities", type=_identities, default=list(range(0, 4)),
                        help="identities only used to report the offsets' effect (default 0-3)")
    parser.add_argument("--resolution", type=int, default=512, help="image side (default 512)")
    parser.add_argument("--rig-frames", type=int, default=12, help="rig frames per identity (default 12)")
    parser.add_argument("--rig-views", type=int, default=6, help="rig cameras per frame (default 6)")
    parser.add_argument("--mono-frames", type=int, default=12,
                        help="monocular-preset frames per identity, two views each (default 12)")
    parser.add_argument("--seed", type=int, default=7000, help="trajectory seed base, plus the identity (default 7000)")
    parser.add_argument("--huber-px", type=float, default=3.0, help="Huber transition of the estimate, px at 512")
    parser.add_argument("--views", type=Path, default=None, help="cache of the rendered views' detections (.npz)")
    parser.add_argument("--check-views", type=Path, default=None, help="the same for --check-identities")
    parser.add_argument("--out", type=Path, default=DEFAULT_CALIBRATION_PATH, help="calibration file to write")
    parser.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args()
    if set(args.identities) & set(args.check_identities):
        parser.error("--identities and --check-identities must not overlap (the check must be on held-out heads)")
    torch.set_num_threads(max(1, min(torch.get_num_threads(), len(os.sched_getaffinity(0)))))
    start = time.perf_counter()

    model = FaceModel(num_samples=6, num_components=5)  # only its landmark expression deformation is used
    views = collect(args.identities, args, args.views)
    offset = estimate_landmark_offset(model, views, huber_px=args.huber_px)
    view = estimate_view_coefficients(model, views, huber_px=args.huber_px)

    def errors(group: CalibrationViews) -> dict:
        return {"raw": group_stats(landmark_errors_px(model, group)),
                "calibrated": group_stats(landmark_errors_px(model, group, offset)),
                "view_dependent": group_stats(landmark_errors_px(model, group, view_offsets(group, view)))}

    report = {"calibration": {**errors(views), "views": len(views)}}
    if args.check_identities:
        check = collect(args.check_identities, args, args.check_views)
        report["held_out"] = {"identities": args.check_identities, "views": len(check), **errors(check)}
    per_landmark = landmark_errors_px(model, views, offset)
    info = {
        "command": "python " + " ".join(sys.argv),
        "date": datetime.date.today().isoformat(),
        "resolution": args.resolution, "views": len(views), "seed": args.seed,
        "rig_frames": args.rig_frames, "rig_views": args.rig_views, "mono_frames": args.mono_frames,
        "huber_px": args.huber_px,
        "median_error_px_at_512": {"raw": np.median(landmark_errors_px(model, views), axis=0).round(3).tolist(),
                                   "calibrated": np.median(per_landmark, axis=0).round(3).tolist()},
    }
    calibration = LandmarkCalibration(
        offset=offset.astype(np.float32), sigma_px=scatter_px(per_landmark).astype(np.float32),
        landmarker=f"mediapipe=={MEDIAPIPE_VERSION} face_mesh (refined)",
        mapping=IBUG68_FROM_MEDIAPIPE, face_model=model.name, identities=np.array(args.identities), info=info,
        view_coefficients=view.astype(np.float32))
    save_calibration(calibration, args.out)
    report.update({
        "benchmark": "tracking_calibration", "date": info["date"], "command": info["command"],
        "device": f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "identities": args.identities, "out": os.path.relpath(args.out),
        "views_cache": None if args.views is None else str(args.views),
        "seconds": round(time.perf_counter() - start, 1),
        "offset_norm_canonical": {g: round(float(np.linalg.norm(offset[idx], axis=-1).mean()), 4)
                                  for g, idx in IBUG68_GROUPS.items()},
        "sigma_px": {g: round(float(calibration.sigma_px[idx].mean()), 3) for g, idx in IBUG68_GROUPS.items()},
        "weight": {g: round(float(calibration.weights()[idx].mean()), 3) for g, idx in IBUG68_GROUPS.items()},
    })
    text = json.dumps(report, indent=1)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
