"""A NeRSemble-style *raw* capture of the synthetic head: one mp4 per camera, ``camera_params.json``, a BACKGROUND
sequence, plus ground truth (exact masks and the tracker outputs) for testing the preprocessing path end to end.

    generate_raw_capture("data/raw_synthetic", subject="000", frames=10, cameras=8, width=512)

Written layout (NeRSemble v2, as the official ``nersemble-data`` download tool writes it; docs/preprocessing.md)::

    {out}/{subject}/calibration/camera_params.json           world_2_cam {serial: [4, 4]}, intrinsics [3, 3]
    {out}/{subject}/sequences/{SEQ}/images/cam_{serial}.mp4  one video per camera, head over the background
    {out}/{subject}/sequences/BACKGROUND/images/cam_{serial}.mp4   the empty studio, a few frames
    {out}/ground_truth/{subject}/{SEQ}/{index:04d}/mask_{serial}.png   exact masks of source frame ``index``
    {out}/ground_truth/{subject}/{SEQ}/{index:04d}/params.npz, lmk_3d.npy, vertices.npy   "tracker" outputs
    {out}/ground_truth/{subject}/meta.json                    arguments, serials, image size

Images are portrait like NeRSemble's 2200 x 3208 (``height`` defaults to ``width * 3208 / 2200``, rounded to an even
number), the rig is the synthetic subject's rig (``capture.camera_rig`` at ``width``) with the principal point at the
image centre, and the intrinsics are shared by all cameras, as in NeRSemble. A little Gaussian sensor noise is added
to every frame, background frames included, so background subtraction sees realistic noise rather than identical
pixels. The whole folder is written into a temporary sibling and renamed into place; a folder whose meta.json records
the same arguments is reused.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Dict, Mapping, Sequence, Tuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from .background import camera_backgrounds
from .capture import camera_rig
from .head_model import DEFAULT_SCALE, HeadModel
from .render import render_views
from .texture import HeadTexture
from .trajectory import expression_trajectory, pose_trajectory
from cgha.utils.atomic import write_directory_atomic

from .writer import GENERATOR_VERSION, SubjectArgumentError, check_int

__all__ = ["BACKGROUND_SEQUENCE", "RAW_CAPTURE_GENERATOR", "camera_serials", "generate_raw_capture",
           "ground_truth_dir", "ground_truth_masks", "copy_tracker_outputs"]

RAW_CAPTURE_GENERATOR = "cgha.synthetic.raw_capture"
BACKGROUND_SEQUENCE = "BACKGROUND"
NERSEMBLE_ASPECT = 3208 / 2200  # height / width of NeRSemble's raw frames
_TRACKER_FILES = ("params.npz", "lmk_3d.npy", "vertices.npy")


def camera_serials(num_cameras: int) -> list[str]:
    """Nine-digit serials in NeRSemble's style: ``222200000``, ``222200001``, ..."""
    return [f"2222{i:05d}" for i in range(num_cameras)]


def ground_truth_dir(out_root, subject: str) -> Path:
    """Folder of the ground truth written next to the raw capture."""
    return Path(out_root) / "ground_truth" / subject


def _arguments(subject, identity, sequences, frames, cameras, width, height, seed, background_frames, crf,
               noise) -> dict:
    if not isinstance(subject, str) or not subject or "/" in subject or subject.startswith("."):
        raise SubjectArgumentError(f"subject must be a plain folder name, got {subject!r}")
    sequences = list(sequences)
    if not sequences or len(set(sequences)) != len(sequences) or BACKGROUND_SEQUENCE in sequences:
        raise SubjectArgumentError(f"sequences must be distinct names other than {BACKGROUND_SEQUENCE}, got {sequences}")
    width = check_int("width", width, 16, 8192)
    height = int(round(width * NERSEMBLE_ASPECT / 2)) * 2 if height is None else check_int("height", height, 16, 8192)
    if width % 2 or height % 2:
        raise SubjectArgumentError(f"width and height must be even (yuv420p video), got {width}x{height}")
    if not 0.0 <= float(noise) <= 0.2:
        raise SubjectArgumentError(f"noise must be in [0, 0.2], got {noise}")
    return {
        "subject": subject,
        "identity": check_int("identity", identity, 0),
        "sequences": sequences,
        "frames": check_int("frames", frames, 1, 100000),
        "cameras": check_int("cameras", cameras, 1, 100),
        "width": width,
        "height": height,
        "seed": check_int("seed", seed, 0, 2**32 - 1),
        "background_frames": check_int("background_frames", background_frames, 1, 1000),
        "crf": check_int("crf", crf, 0, 51),
        "noise": float(noise),
    }


def generate_raw_capture(out_root, subject: str = "000", identity: int = 0, sequences: Sequence[str] = ("EXP-1-head",),
                         frames: int = 4, cameras: int = 4, width: int = 256, height: int | None = None,
                         seed: int = 0, background_frames: int = 3, crf: int = 8, noise: float = 0.006,
                         progress: bool = True, force: bool = False, device="cpu") -> Path:
    """Generate (or reuse) a synthetic NeRSemble-style raw capture under ``out_root``.

    Args:
        out_root: folder to create; it will hold ``{subject}/`` and ``ground_truth/``.
        subject: participant id (folder name), e.g. ``"000"``.
        identity: synthetic identity (shape and colours).
        sequences: names of the expression sequences; sequence ``k`` uses trajectory seed ``seed + k``.
        frames: frames per sequence; cameras: number of cameras.
        width, height: raw frame size in pixels (height defaults to NeRSemble's portrait aspect).
        seed: trajectory seed of the first sequence; also seeds the sensor noise.
        background_frames: frames of the BACKGROUND videos.
        crf: x264 constant rate factor (0 = lossless; NeRSemble's videos are high quality, 8 is close to that).
        noise: standard deviation of the Gaussian sensor noise in [0, 1] units (0.006 is about 1.5/255).
        progress: show a tqdm bar; force: replace an existing folder.
    Returns:
        ``out_root``.
    """
    args = _arguments(subject, identity, sequences, frames, cameras, width, height, seed, background_frames, crf,
                      noise)
    out_root = Path(out_root)
    meta_path = ground_truth_dir(out_root, subject) / "meta.json"
    if out_root.exists() and not force:
        try:
            existing = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            existing = None
        if existing and existing.get("generator_version") == GENERATOR_VERSION and existing.get("arguments") == args:
            return out_root
        raise SubjectArgumentError(f"{out_root} already exists and is not a raw capture with these arguments; "
                                   "choose another folder or pass --force (force=True) to replace it")
    return write_directory_atomic(out_root, lambda tmp: _write_capture(tmp, args, progress, torch.device(device)))


class _VideoWriter:
    """One H.264 mp4 per camera, fed RGB uint8 frames [H, W, 3] (imageio-ffmpeg runs ffmpeg in a subprocess)."""

    def __init__(self, path: Path, width: int, height: int, crf: int):
        import imageio_ffmpeg  # here, not at the top: importing cgha.synthetic must not need ffmpeg's wheel

        path.parent.mkdir(parents=True, exist_ok=True)
        # macro_block_size=2: keep the exact size (yuv420p only needs even sides); yuv420p is what cameras and
        # NeRSemble's videos use, so background subtraction is measured with subsampled chroma.
        self._gen = imageio_ffmpeg.write_frames(str(path), (width, height), pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
                                                codec="libx264", fps=25, quality=None, macro_block_size=2,
                                                ffmpeg_log_level="error", output_params=["-crf", str(crf)])
        self._gen.send(None)

    def write(self, frame: np.ndarray) -> None:
        self._gen.send(np.ascontiguousarray(frame))

    def close(self) -> None:
        self._gen.close()


def _to_uint8_hwc(images: torch.Tensor, rng: np.random.Generator, noise: float) -> list[np.ndarray]:
    """[C, 3, H, W] float in [0, 1] -> C noisy RGB uint8 [H, W, 3]."""
    out = []
    for image in images.permute(0, 2, 3, 1).cpu().numpy():
        if noise > 0:
            image = image + rng.normal(0.0, noise, image.shape).astype(np.float32)
        out.append((np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return out


def _write_capture(root: Path, args: dict, progress: bool, device: torch.device) -> None:
    W, H, C = args["width"], args["height"], args["cameras"]
    subject = args["subject"]
    serials = camera_serials(C)
    head = HeadModel(args["identity"], device=device)
    texture = HeadTexture(head.params, head.layout, device=device)
    rig = camera_rig(C, W, device=device)
    Ks = rig.Ks.clone()
    Ks[:, 1, 2] = H / 2.0  # portrait frame: same focal length, principal point at the centre
    backgrounds = camera_backgrounds(C, W, H, device=device)
    rng = np.random.default_rng([args["seed"], 0x5E45])
    subject_dir = root / subject
    gt_dir = ground_truth_dir(root, subject)

    calibration = {
        "world_2_cam": {s: rig.viewmats[c].double().cpu().numpy().tolist() for c, s in enumerate(serials)},
        "intrinsics": Ks[0].double().cpu().numpy().tolist(),
    }
    (subject_dir / "calibration").mkdir(parents=True)
    (subject_dir / "calibration" / "camera_params.json").write_text(json.dumps(calibration, indent=2) + "\n")

    background_dir = subject_dir / "sequences" / BACKGROUND_SEQUENCE / "images"
    writers = [_VideoWriter(background_dir / f"cam_{serial}.mp4", W, H, args["crf"]) for serial in serials]
    try:
        for _ in range(args["background_frames"]):
            for writer, frame in zip(writers, _to_uint8_hwc(backgrounds, rng, args["noise"])):
                writer.write(frame)
    finally:
        for writer in writers:
            writer.close()

    total = len(args["sequences"]) * args["frames"]
    bar = tqdm(total=total, desc=f"raw capture {subject}", unit="frame", disable=not progress)
    scale = np.array([DEFAULT_SCALE], dtype=np.float32)
    for k, sequence in enumerate(args["sequences"]):
        exp_traj = expression_trajectory(args["frames"], args["seed"] + k)
        pose_traj = pose_trajectory(args["frames"], args["seed"] + k)
        video_dir = subject_dir / "sequences" / sequence / "images"
        writers = [_VideoWriter(video_dir / f"cam_{serial}.mp4", W, H, args["crf"]) for serial in serials]
        try:
            for f in range(args["frames"]):
                out = render_views(head, texture, torch.from_numpy(exp_traj[f]), torch.from_numpy(pose_traj[f]),
                                   float(scale[0]), rig.viewmats, Ks, W, H, backgrounds)
                for writer, frame in zip(writers, _to_uint8_hwc(out["image"], rng, args["noise"])):
                    writer.write(frame)
                frame_gt = gt_dir / sequence / f"{f:04d}"
                frame_gt.mkdir(parents=True)
                for serial, mask in zip(serials, out["mask"]):
                    png = cv2.imencode(".png", (mask[0].cpu().numpy() > 0.5).astype(np.uint8) * 255)[1]
                    (frame_gt / f"mask_{serial}.png").write_bytes(png.tobytes())
                np.savez(frame_gt / "params.npz", pose=pose_traj[f][None].astype(np.float32), scale=scale,
                          exp_coeff=exp_traj[f][None].astype(np.float32))
                np.save(frame_gt / "lmk_3d.npy", out["landmarks"].cpu().numpy().astype(np.float32))
                np.save(frame_gt / "vertices.npy", out["vertices"].cpu().numpy().astype(np.float32))
                bar.update(1)
        finally:
            for writer in writers:
                writer.close()
    bar.close()

    meta = {
        "generator": RAW_CAPTURE_GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "arguments": args,
        "serials": serials,
        "image_size": [W, H],
        "layout": "NeRSemble v2: {subject}/calibration/camera_params.json, "
                  "{subject}/sequences/{SEQ}/images/cam_{serial}.mp4",
        "ground_truth": "{SEQ}/{index:04d}/mask_{serial}.png (exact, 0/255), params.npz, lmk_3d.npy, vertices.npy",
    }
    # meta.json last: a folder with it is complete.
    (gt_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


def copy_tracker_outputs(out_root, subject: str, dataset_dir, frame_sources: Mapping[str, Tuple[str, int]]) -> None:
    """Stand in for the external 3DMM tracker: copy the ground-truth params, landmarks and vertices of each
    preprocessed frame into ``dataset_dir/params/{frame}/``.

    Args:
        frame_sources: {frame name: (sequence, source frame index)}, e.g. from the preprocessing manifest.
    """
    gt = ground_truth_dir(out_root, subject)
    dataset_dir = Path(dataset_dir)
    for frame, (sequence, index) in frame_sources.items():
        target = dataset_dir / "params" / frame
        target.mkdir(parents=True, exist_ok=True)
        for name in _TRACKER_FILES:
            shutil.copyfile(gt / sequence / f"{int(index):04d}" / name, target / name)


def ground_truth_masks(out_root, subject: str, sequence: str, index: int) -> Dict[str, np.ndarray]:
    """{serial: exact mask uint8 [H, W] (0/255)} of one source frame."""
    folder = ground_truth_dir(out_root, subject) / sequence / f"{int(index):04d}"
    return {path.stem[len("mask_"):]: cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            for path in sorted(folder.glob("mask_*.png"))}
