"""Tracking accuracy against ground truth: a tracked subject compared with the synthetic subject its images came
from (head rotation and position, expression correlation, landmark reprojection against the true landmarks)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import torch

from cgha.errors import DataError
from cgha.synthetic.expression import EXPRESSION_NAMES
from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix, matrix_to_axis_angle

from .calibration import REFERENCE_SIZE  # landmark errors at this image side, as the tracker's own report

__all__ = ["ground_truth_errors", "rotation_about_mean", "rounded"]


def rounded(value, digits: int = 4):
    """``value`` as a float rounded for a JSON report; None where it is not finite (JSON has no NaN)."""
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def rotation_about_mean(offsets: np.ndarray) -> Tuple[float, np.ndarray]:
    """Splits a sequence's rotation errors into the part every frame shares and the rest.

    Args:
        offsets: [F, 3] axis-angle (radians) of each frame's error in the true head's frame, ``R_true^T R_tracked``.
    Returns:
        (the shared offset's angle in degrees: the chordal L2 mean of the F error rotations, [F] each frame's angle
        in degrees from that mean). A constant offset in the head's frame is a tilt of the canonical head, which an
        avatar trained in canonical space absorbs; what moves a held-out frame's render is the rest.
    """
    D = axis_angle_to_matrix(torch.as_tensor(offsets, dtype=torch.float64).reshape(-1, 3)).numpy()
    U, _, Vt = np.linalg.svd(D.sum(axis=0))
    mean = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt  # nearest rotation to the summed matrices
    residual = np.einsum("ji,fjk->fik", mean, D)  # mean^T @ D_f

    def angles(R: np.ndarray) -> np.ndarray:  # the logarithm, exact near zero where arccos of the trace is not
        return np.degrees(np.linalg.norm(matrix_to_axis_angle(torch.from_numpy(R)).numpy(), axis=-1))

    return float(angles(mean)), angles(residual)


def ground_truth_errors(tracked, truth, truth_camera: Optional[str] = None) -> Dict[str, object]:
    """Tracking accuracy of a tracked subject against the synthetic subject its images came from.

    Frames are matched by name (a tracked video's frame ``0007`` is the truth's frame ``0007`` when the video was
    written from the truth's frames in order). Multi-view (``truth_camera`` None): the calibration's world is the
    truth's, so poses compare directly. Monocular (``truth_camera``: the truth camera the video was rendered from):
    only the head's pose relative to the camera is observable, so rotations compare as ``R_camera @ R_head`` and
    positions as the head origin in camera coordinates.

    Returns:
        dict with per-frame ``rotation_deg`` and ``translation`` (world units; the head is ~0.25 wide), their
        ``median`` / ``p95``; ``rotation_offset_deg``: per frame, the error's rotation vector in the true head's frame
        (x: pitch, y: yaw, z: roll; ``R_true^T R_tracked``); ``rotation_about_mean_deg``: the angle each frame's error
        is from the sequence's mean error (``rotation_about_mean``; ``shared_offset`` is that mean's angle); the
        per-coefficient Pearson ``expression_correlation`` (None for a coefficient that is constant in either), the tracker's own ``reprojection_px`` summary from tracking.json, and (multi-view only,
        else None) ``landmark_error_px``: per frame and camera, the mean distance between the tracked and the true
        iBUG-68 landmarks (``lmk_3d.npy``) both projected by the tracked subject's camera, in px at a 512 side
        (median, p95, ``per_view`` frame-major): the reprojection error against the truth, not the detections.
    """
    tracked, truth = Path(tracked), Path(truth)
    meta = json.loads((tracked / "meta.json").read_text())
    frames = [f for f in meta["frame_names"] if (truth / "params" / f / "params.npz").is_file()]
    if not frames:
        raise DataError(f"{tracked} and {truth} have no frame names in common")

    def params(root: Path, frame: str):
        with np.load(root / "params" / frame / "params.npz") as data:
            return data["pose"][0].astype(np.float64), data["exp_coeff"][0].astype(np.float64)

    def camera(root: Path, frame: str, cam: str) -> Tuple[np.ndarray, np.ndarray]:
        """(extrinsic [3, 4], intrinsic [3, 3])"""
        with np.load(root / "cameras" / frame / f"camera_{cam}.npz") as data:
            return data["extrinsic"].astype(np.float64), data["intrinsic"].astype(np.float64)

    offsets, trans, exp_t, exp_g = [], [], [], []
    for frame in frames:
        (pose_t, e_t), (pose_g, e_g) = params(tracked, frame), params(truth, frame)
        R_t = axis_angle_to_matrix(torch.from_numpy(pose_t[:3])).numpy()
        R_g = axis_angle_to_matrix(torch.from_numpy(pose_g[:3])).numpy()
        p_t, p_g = pose_t[3:], pose_g[3:]
        if truth_camera is not None:
            E_t = camera(tracked, frame, meta["camera_ids"][0])[0]
            E_g = camera(truth, frame, truth_camera)[0]
            R_t, R_g = E_t[:, :3] @ R_t, E_g[:, :3] @ R_g
            p_t, p_g = E_t[:, :3] @ p_t + E_t[:, 3], E_g[:, :3] @ p_g + E_g[:, 3]
        offsets.append(matrix_to_axis_angle(torch.from_numpy(R_g.T @ R_t)).numpy())
        trans.append(float(np.linalg.norm(p_t - p_g)))
        exp_t.append(e_t)
        exp_g.append(e_g)
    offsets = np.stack(offsets)
    rot = np.degrees(np.linalg.norm(offsets, axis=1))  # each frame's error angle
    shared_offset, about_mean = rotation_about_mean(offsets)
    exp_t, exp_g = np.stack(exp_t), np.stack(exp_g)
    corr = {}
    for d, name in enumerate(EXPRESSION_NAMES[: exp_t.shape[1]]):
        a, b = exp_t[:, d], exp_g[:, d]
        corr[name] = None if a.std() < 1e-9 or b.std() < 1e-9 else round(float(np.corrcoef(a, b)[0, 1]), 4)
    report_path = tracked / "tracking.json"
    reprojection = json.loads(report_path.read_text())["reprojection_px"] if report_path.is_file() else None
    landmark_error = None
    if truth_camera is None:
        distances = []
        for frame in frames:
            lmk_t = np.load(tracked / "params" / frame / "lmk_3d.npy").astype(np.float64)
            lmk_g = np.load(truth / "params" / frame / "lmk_3d.npy").astype(np.float64)
            for cam in meta["camera_ids"]:
                extrinsic, K = camera(tracked, frame, cam)
                (px_t, _), (px_g, _) = project_points(lmk_t, extrinsic, K), project_points(lmk_g, extrinsic, K)
                distances.append(float(np.linalg.norm(px_t - px_g, axis=-1).mean()) * REFERENCE_SIZE
                                 / float(meta["original_resolution"]))
        landmark_error = {"median": rounded(np.median(distances)), "p95": rounded(np.percentile(distances, 95)),
                          "per_view": [rounded(d) for d in distances]}
    return {
        "frames": len(frames),
        "rotation_deg": {"median": rounded(np.median(rot)), "p95": rounded(np.percentile(rot, 95)),
                         "per_frame": dict(zip(frames, [rounded(r) for r in rot]))},
        "rotation_offset_deg": {"per_frame": dict(zip(frames, [[rounded(v) for v in np.degrees(o)]
                                                               for o in offsets]))},
        "rotation_about_mean_deg": {"median": rounded(np.median(about_mean)),
                                    "p95": rounded(np.percentile(about_mean, 95)),
                                    "shared_offset": rounded(shared_offset),
                                    "per_frame": dict(zip(frames, [rounded(r) for r in about_mean]))},
        "translation": {"median": rounded(np.median(trans), 6), "p95": rounded(np.percentile(trans, 95), 6),
                        "per_frame": dict(zip(frames, [rounded(t, 6) for t in trans]))},
        "expression_correlation": corr,
        "reprojection_px": None if reprojection is None else
        {k: reprojection[k] for k in ("resolution", "median", "p95", "max", "median_at_512")},
        "landmark_error_px": landmark_error,
    }
