"""Issue 17's monocular goal on the issue's own preset, and where the photometric refinement's error comes from.

For each identity (``--identities``): ``make_synthetic.py --monocular`` (``--frames`` 300 at 512^2, seed 0), its
camera's frames written to an mp4 (``bench_tracking.export_video``) and tracked by ``track.py --video`` at that
camera's field of view, once per arm (``--arms``), every ``--stride``-th frame:

- ``landmarks``: the landmark fit alone (the tracker's defaults);
- ``photometric``: with ``--photometric``; ``photometric:KEY=VALUE,...`` with those ``PhotometricConfig`` fields
  changed (e.g. ``photometric:refine_identity=true,refine_expression=true,lr_identity=0.05``);
- ``from_true_rotation``: the photometric refinement started from the true head rotations (the landmark fit's
  translation, expressions and identity): does the refinement stay at the truth, or is its minimum elsewhere?
- ``true_geometry``: started from the true rotation and translation with the true expressions and the true rest
  shape (the face model's mean replaced by the identity's rest vertices, identity code 0): what the refinement's
  appearance model (albedo, light, colour, the face region) leaves when the geometry is right;
  ``true_pose``: the true rotation and translation, the landmark fit's shape and expressions; ``true_pose_shape``
  and ``true_pose_expressions``: the true pose with the rest shape, or the expressions, true as well: which of the
  two moves the refinement off the truth.

The two diagnostic arms wrap the pipeline's ``_refine_photometric`` (the refinement's inputs are replaced, nothing
else); they need the truth and are not tracker features. Errors against the truth by
``cgha.tracking.accuracy.ground_truth_errors`` (in the camera's frame); also the refinement's loss at its start
(after the albedo warm-up) and end, and how far the refined identity's rest shape is from the true one.

    python benchmarks/tracking_mono_preset.py --identities 1 2 --stride 3 \\
        --arms photometric from_true_rotation true_geometry --out benchmarks/results/FILE.json

Subjects and videos are kept in ``--work`` (default data/tracking_mono_preset) and reused.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from bench_tracking import export_video
from cgha.synthetic import generate_monocular_subject
from cgha.tracking import pipeline as P
from cgha.tracking.accuracy import ground_truth_errors
from cgha.tracking.face_model import FaceModel, identity_rest_geometry
from cgha.tracking.photometric import PhotometricConfig
from cgha.utils.atomic import write_bytes_atomic
from cgha.utils.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from common import json_safe

# Diagnostic arm -> what of the truth the refinement starts from (beyond the true rotation every one of them has).
DIAGNOSTIC_ARMS = {"from_true_rotation": set(), "true_pose": {"translation"},
                   "true_geometry": {"translation", "expressions", "shape"},
                   "true_pose_shape": {"translation", "shape"}, "true_pose_expressions": {"translation", "expressions"}}


def photometric_config(arm: str) -> PhotometricConfig:
    """``photometric`` or ``photometric:KEY=VALUE,...`` -> its PhotometricConfig (values parsed as JSON)."""
    fields = {f.name for f in dataclasses.fields(PhotometricConfig)}
    changes = {}
    for item in filter(None, arm.partition(":")[2].split(",")):
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"arm {arm!r}: {key!r} is not a PhotometricConfig field")
        changes[key] = json.loads(value)
    return PhotometricConfig(**changes)


def true_pose(truth: Path, name: str, viewmat: np.ndarray) -> np.ndarray:
    """[6] the truth's head pose of frame ``name`` in the tracker's world (whose camera is ``viewmat``)."""
    with np.load(truth / "params" / name / "params.npz") as d:
        pose = d["pose"][0].astype(np.float64)
    with np.load(truth / "cameras" / name / "camera_cam00.npz") as d:
        extrinsic = d["extrinsic"].astype(np.float64)
    Rc, tc = viewmat[:3, :3].astype(np.float64), viewmat[:3, 3].astype(np.float64)
    R_head = axis_angle_to_matrix(torch.from_numpy(pose[:3])).numpy()
    rotation = matrix_to_axis_angle(torch.from_numpy(Rc.T @ extrinsic[:, :3] @ R_head)).numpy()
    return np.concatenate([rotation, Rc.T @ (extrinsic[:, :3] @ pose[3:] + extrinsic[:, 3] - tc)])


def diagnostic_refinement(arm: str, identity: int, truth: Path):
    """A stand-in for ``pipeline._refine_photometric`` that starts the refinement from the truth (see the arms)."""
    refine = P._refine_photometric
    replaced = DIAGNOSTIC_ARMS[arm]

    def wrapped(source, model, ident, exp, pose, scale, keep_idx, crops, Ks, viewmats, options, device):
        pose, exp = pose.copy(), exp.copy()
        for t in keep_idx:
            name = source.names[t]
            start = true_pose(truth, name, viewmats[0])
            pose[t, :3] = start[:3]
            if "translation" in replaced:
                pose[t, 3:] = start[3:]
            with np.load(truth / "params" / name / "params.npz") as d:
                if "expressions" in replaced:
                    exp[t] = d["exp_coeff"][0]
                if "translation" in replaced and abs(float(d["scale"].reshape(-1)[0]) - scale) > 1e-6:
                    raise SystemExit(f"{truth}: the truth's scale {d['scale']} is not the fit's {scale}")
        if "shape" in replaced:
            arrays = dict(model._arrays)
            arrays["mean"] = identity_rest_geometry(identity)[0].astype(arrays["mean"].dtype)
            model = FaceModel(device=model.device, arrays=arrays)
            ident = torch.zeros_like(torch.as_tensor(ident))
        return refine(source, model, ident, exp, pose, scale, keep_idx, crops, Ks, viewmats, options, device)

    return wrapped


def run_arm(identity: int, arm: str, video: Path, truth: Path, fov: float, out: Path, args) -> Dict[str, object]:
    photometric = arm != "landmarks"
    config = PhotometricConfig() if arm in DIAGNOSTIC_ARMS or not photometric else photometric_config(arm)
    options = P.TrackOptions(resolution=args.resolution, fov_deg=fov, holdout_cameras=0, device=args.device,
                             stride=args.stride, force=True, progress=False, photometric=photometric,
                             photometric_config=config)
    refine = P._refine_photometric
    if arm in DIAGNOSTIC_ARMS:
        P._refine_photometric = diagnostic_refinement(arm, identity, truth)
    start = time.time()
    try:
        P.track_video(video, out, options)
    finally:
        P._refine_photometric = refine
    seconds = time.time() - start
    errors = ground_truth_errors(out, truth, truth_camera="cam00")
    report = json.loads((out / "tracking.json").read_text())
    row = {"seconds": round(seconds, 1), "frames": report["frames"],
           "rotation_deg": {k: errors["rotation_deg"][k] for k in ("median", "p95")},
           "rotation_about_shared_offset_deg_median": errors["rotation_about_mean_deg"]["median"],
           "translation_median": errors["translation"]["median"],
           "reprojection_median_px_at_512": report["reprojection_px"]["median_at_512"]}
    if photometric:
        model = FaceModel()
        rest = torch.from_numpy(identity_rest_geometry(identity)[0]).float()
        fitted = torch.tensor(report["fit"]["identity"], dtype=torch.float32)
        row["photometric"] = {"loss": report["photometric"]["loss"],
                              "rotation_change_deg": report["photometric"]["rotation_change_deg"],
                              "config_changes": {k: v for k, v in dataclasses.asdict(config).items()
                                                 if v != getattr(PhotometricConfig(), k)}}
        if "shape" not in DIAGNOSTIC_ARMS.get(arm, ()):
            row["rest_shape_error"] = {
                "tracked": round(float((model.rest_vertices(fitted) - rest).norm(dim=-1).mean()), 5),
                "mean_shape": round(float((model.mean - rest).norm(dim=-1).mean()), 5)}
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--identities", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--arms", nargs="+", default=["landmarks", "photometric"],
                        help=f"landmarks, photometric[:KEY=VALUE,...], {', '.join(DIAGNOSTIC_ARMS)}")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--stride", type=int, default=1, help="track every N-th frame of the video")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work", type=Path, default=Path("data/tracking_mono_preset"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    for arm in args.arms:
        if arm.startswith("photometric"):
            photometric_config(arm)
        elif arm not in ("landmarks", *DIAGNOSTIC_ARMS):
            parser.error(f"unknown arm {arm!r}")
    results = {"date": datetime.date.today().isoformat(), "device": f"{platform.processor() or platform.machine()}, "
               f"{torch.get_num_threads()} torch threads ({args.device})", "command": " ".join(sys.argv),
               "identities": {}}
    for identity in args.identities:
        work = args.work / f"id{identity}"
        truth = generate_monocular_subject(work / "truth", identity=identity, frames=args.frames,
                                           resolution=args.resolution, seed=0, device=torch.device("cpu"))
        video = work / "video.mp4"
        fov = export_video(truth, video)
        rows = results["identities"].setdefault(f"id{identity}", {"fov": fov, "arms": {}})["arms"]
        for arm in args.arms:
            rows[arm] = run_arm(identity, arm, video, truth, fov, work / arm.replace(":", "_").replace(",", "_"),
                                args)
            print(f"identity {identity}, {arm}: {json.dumps(rows[arm])}", flush=True)
            write_bytes_atomic(args.out, (json.dumps(json_safe(results), indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
