"""`python demo.py --video`: track -> monocular Gaussian head with compaction -> held-out frames -> two reenactments,
end to end on a tiny video, and its one-line errors for a video too short or with too few tracked frames.

The video is the monocular synthetic preset's camera (what the tracker sees in a phone video: one face, head turns,
talking), 24 frames at 128^2; the avatar is trained at 64^2 for a few iterations (the shipped CPU config with a
shortened schedule passed as overrides, the code path of `python demo.py --video` otherwise). MediaPipe is the
tracker's optional extra: these tests skip without it, as tests/test_track.py's do (CI installs it: .ci/run).
"""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cgha.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
needs_mediapipe = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                     reason="needs mediapipe (the optional extra 'track')")
VIDEO_FRAMES, VIDEO_RES, AVATAR_RES = 24, 128, 64
# A small face model (as tests/test_track.py: builds in seconds) and the tracker's default landmark calibration.
SMALL_FACE_MODEL = {"face_model_samples": 24, "face_model_components": 12}
TINY_SCHEDULE = ["train.max_iters=6", "points.every=2", "points.stop_iter=4", "points.max_points=1600",
                 "compact.start_iter=4", "compact.codebook_size=16", "render.backend=torch", "dataset.num_workers=0"]


@pytest.fixture(autouse=True)
def face_model_cache(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.getbasetemp() / "face_model_cache"  # shared with tests/test_track.py's
    path.mkdir(exist_ok=True)
    monkeypatch.setenv("CGHA_CACHE_DIR", str(path))


def _write_video(frames: np.ndarray, path: Path) -> Path:
    import imageio.v3 as iio

    iio.imwrite(path, frames, fps=10, codec="libx264", quality=9)
    return path


@pytest.fixture(scope="module")
def mono_frames(tmp_path_factory):
    """The monocular synthetic subject's cam00 frames [F, 128, 128, 3] uint8 and that camera's field of view."""
    import imageio.v3 as iio
    from cgha.synthetic import generate_monocular_subject

    root = generate_monocular_subject(tmp_path_factory.mktemp("mono") / "id0", identity=0, frames=VIDEO_FRAMES,
                                      resolution=VIDEO_RES, seed=0, lowres=64, progress=False)
    meta = json.loads((root / "meta.json").read_text())
    frames = np.stack([iio.imread(root / "images" / f / "image_cam00.jpg") for f in meta["frame_names"]])
    K = np.load(root / "cameras" / meta["frame_names"][0] / "camera_cam00.npz")["intrinsic"]
    return frames, float(np.degrees(2 * np.arctan(0.5 * VIDEO_RES / K[0, 0])))


def _options(tmp: Path, video: Path, fov: float, **changes):
    from cgha.video_demo import VideoDemoOptions

    overrides = TINY_SCHEDULE + [f"recorder.checkpoint_path={tmp / 'checkpoints'}",
                                 f"recorder.result_path={tmp / 'results'}", f"recorder.logdir={tmp / 'log'}"]
    return VideoDemoOptions(video, torch.device("cpu"), config_dir=ROOT / "config", data_root=tmp / "data",
                            results_root=tmp / "results", fov_deg=fov, resolution=AVATAR_RES, driver_frames=4,
                            train_overrides=overrides, track_options=dict(SMALL_FACE_MODEL, progress=False),
                            **changes)


@needs_mediapipe
def test_video_demo_end_to_end(mono_frames, tmp_path):
    from cgha.video_demo import format_video_summary, run_video_demo
    from cgha.video_demo.track import inspect_video, track_or_reuse

    frames, fov = mono_frames
    video = _write_video(frames, tmp_path / "my clip.mp4")
    # The sphere start (MonoGaussianAvatar's); the default mesh-head start is the next test's.
    summary = run_video_demo(_options(tmp_path, video, fov, mesh_head=False))

    track = summary["tracking"]
    assert track["frames_found"] == VIDEO_FRAMES and track["frames_tracked"] >= 20 and not track["reused"]
    # The last 15 % of the tracked frames are held out (the tracker's split in meta.json, which training reads).
    assert track["held_out_frames"] == round(0.15 * track["frames_tracked"])
    held = summary["held_out"]["test_frames"]
    assert math.isfinite(held["psnr"]) and held["psnr"] > 5.0 and held["images"] == track["held_out_frames"]
    assert held["resolution"] == AVATAR_RES
    assert Path(summary["paths"]["compact_avatar"]).is_file() and summary["size"]["compact_mb"] > 0
    for key in ("video_own", "video_synthetic"):
        path = Path(summary["paths"][key])
        assert path.is_file() and path.stat().st_size > 0, key
    assert summary["estimate"]["training_seconds"] > 0 and summary["iterations"] == 6
    text = format_video_summary(summary)
    assert "held-out frames" in text and "PSNR" in text and "python preprocess/track.py" in text
    assert Path(summary["paths"]["subject"]).name == "video_my_clip"

    # Tracking again from the same file with the same arguments reuses the folder (a second demo run would then
    # resume the finished training); a folder the demo did not track is never overwritten.
    options = _options(tmp_path, video, fov, mesh_head=False)
    info = inspect_video(video)
    subject = Path(summary["paths"]["subject"])
    again = track_or_reuse(info, subject, AVATAR_RES, fov, None, "cpu", options.track_options)
    assert again.reused and again.frames == json.loads((subject / "meta.json").read_text())["frame_names"]
    record = json.loads((subject / "video_demo.json").read_text())
    assert record["options"]["holdout_frames"] == 0.15 and record["options"]["fov_deg"] == fov
    foreign = tmp_path / "someone_elses"
    foreign.mkdir()
    with pytest.raises(DataError, match="exists and was not tracked by demo.py --video"):
        track_or_reuse(info, foreign, AVATAR_RES, fov, None, "cpu", options.track_options)


def test_too_short_video_is_one_line_error(mono_frames, tmp_path):
    """Checked before tracking (no MediaPipe needed): the line names the frames found and the minimum."""
    frames, _ = mono_frames
    video = _write_video(frames[:12], tmp_path / "short.mp4")
    result = subprocess.run([sys.executable, "demo.py", "--video", str(video), "--out", str(tmp_path / "subject")],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in result.stderr
    assert "short.mp4: 12 frames found" in last and "at least 20" in last
    assert not (tmp_path / "subject").exists()


@needs_mediapipe
def test_too_few_tracked_frames_is_one_line_error(mono_frames, tmp_path):
    """24 frames of which 10 show a face (the rest blank): the tracker stops after the landmarks and the demo names
    the frames found, tracked and needed."""
    from cgha.video_demo import TooFewTrackedFrames, run_video_demo

    frames, fov = mono_frames
    rng = np.random.default_rng(0)
    blank = np.clip(120 + rng.normal(0, 8, (14,) + frames.shape[1:]), 0, 255).astype(np.uint8)
    video = _write_video(np.concatenate([frames[:10], blank]), tmp_path / "few.mp4")
    with pytest.raises(TooFewTrackedFrames) as error:
        run_video_demo(_options(tmp_path, video, fov))
    message = str(error.value)
    assert "\n" not in message
    assert "few.mp4: 24 frames found, a face found in 10; at least 20 tracked frames are needed" in message
    assert not (tmp_path / "data" / "video_few").exists()


@needs_mediapipe
def test_video_demo_starts_from_a_mesh_head_trained_on_the_video(mono_frames, tmp_path):
    """The default (`mesh_head=True`): a mesh head is trained on the tracked subject (the CPU's demo mesh head,
    shortened here) and the Gaussian head starts from its points instead of the sphere; the summary and the re-run
    commands say so."""
    from cgha.recorder.metrics_log import read_metrics
    from cgha.video_demo import format_video_summary, run_video_demo

    frames, fov = mono_frames
    video = _write_video(frames, tmp_path / "clip.mp4")
    mesh_overrides = ["train.max_iters=3", "train.epochs=0", "train.deform_prior_iters=0",
                      "train.loss_weights.expression_prior=0", "meshheadmodule.tet_resolution=24",
                      "train.pretrain_sphere_iters=150", "dataset.resolution=32",
                      f"recorder.checkpoint_path={tmp_path / 'checkpoints'}",
                      f"recorder.result_path={tmp_path / 'results'}", f"recorder.logdir={tmp_path / 'meshlog'}"]
    summary = run_video_demo(_options(tmp_path, video, fov, mesh_head_overrides=mesh_overrides, estimate=False))

    mesh = summary["mesh_head"]
    assert Path(mesh["checkpoint"]).is_file() and mesh["config"].endswith("train_meshhead_synthetic_demo.yaml")
    assert "dataset.num_sample_view=1" in mesh["overrides"] and f"dataset.resolution={AVATAR_RES}" in mesh["overrides"]
    assert "train.max_iters=540" in mesh["overrides"]  # the demo mesh head's length, whatever the video's
    started = next(r for r in read_metrics(tmp_path / "log" / "metrics.jsonl") if "num_gaussians" in r)
    sphere_count = 400  # config/train_gaussianhead_monocular_demo.yaml's points.sphere_count
    assert started["iter"] == 1 and started["num_gaussians"] != sphere_count
    assert math.isfinite(summary["held_out"]["test_frames"]["psnr"])
    assert Path(summary["paths"]["compact_avatar"]).is_file() and "meshstart" in summary["paths"]["compact_avatar"]
    commands = summary["commands"]
    assert commands[1].startswith("python train_meshhead.py") and "points.init=model" in commands[2]
    assert f"load_meshhead_checkpoint={mesh['checkpoint']}" in commands[2]
    assert "the mesh head of" in format_video_summary(summary)

    # A start not below points.max_points could only delete points: the demo makes the points a fixed set (an
    # explicit points.every of the user's still wins, as TINY_SCHEDULE's did above).
    from cgha.video_demo.pipeline import CONFIG_FILES, _train_config
    from cgha.video_demo.track import _read_subject

    subject = _read_subject(Path(summary["paths"]["subject"]), reused=True)
    options = _options(tmp_path, video, fov)
    schedule = [o for o in options.train_overrides if not o.startswith(("points.every=", "points.stop_iter="))]
    config_file = ROOT / "config" / CONFIG_FILES["cpu"]
    for max_points, fixed in ((started["num_gaussians"], True), (started["num_gaussians"] + 1, False)):
        options.train_overrides = [*schedule, f"points.max_points={max_points}"]
        cfg, overrides, start_points = _train_config(options, config_file, subject, Path(mesh["checkpoint"]))
        assert cfg.points.editing is not fixed and ("points.every=0" in overrides) is fixed
        assert start_points == started["num_gaussians"]


def test_photometric_tracking_defaults_by_device_and_reaches_the_tracker_and_rerun_command(tmp_path):
    """`--[no-]photometric` (default: on a GPU only) reaches the tracker and its re-run command; off, the reuse
    record's options are those of subjects tracked before the option existed; without --video it is refused."""
    from cgha.video_demo import VideoDemoOptions
    from cgha.video_demo.pipeline import _tracking_extras, tracks_photometrically
    from cgha.video_demo.track import VideoInfo, track_command

    video = VideoInfo(tmp_path / "clip.mp4", 40, 25.0, 256, 256)
    for device, asked, expected in (("cpu", None, False), ("cuda", None, True), ("cpu", True, True),
                                    ("cuda", False, False)):
        options = VideoDemoOptions(video.path, torch.device(device), photometric=asked,
                                   track_options={"progress": False})
        assert tracks_photometrically(options) is expected
        assert _tracking_extras(options) == ({"photometric": True} if expected else {}) | {"progress": False}
        command = track_command(video, tmp_path / "subject", 256, 65.0, None, device, expected)
        assert command.endswith("--photometric") is expected
    for flag in ("--photometric", "--no-photometric"):
        result = subprocess.run([sys.executable, "demo.py", flag], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 2 and "--[no-]photometric belong to --video" in result.stderr
