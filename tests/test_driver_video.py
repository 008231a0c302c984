"""Driving an avatar from a video: `reenactment.py --driver-video` tracks the clip (the video demo's tracking,
cgha.tracking) and drives the avatar with its expressions and relative head motion beside the driver; a video
without a face is one line; a live source is recorded through the same path.

The clip is the shipped driver's frames (checkpoints/demo/driver_id1: synthetic identity 1, monocular preset) as an
mp4, 12 frames at 256^2; the tracker uses a small face model (as tests/test_track.py). MediaPipe is the tracker's
optional extra: the tracking tests skip without it (CI installs it: .ci/run).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from cgha.apps.driver_video import DriverVideoOptions, capture_frames, driver_overrides, track_driver_video, \
    webcam_index
from cgha.apps.reenactment import Reenactment
from cgha.config import ReenactConfig, load_config
from cgha.errors import DataError
from cgha.tracking import FitConfig
from viewer_avatar import REFERENCE_POSE, build_tiny_avatar

ROOT = Path(__file__).resolve().parents[1]
DEMO_DRIVER = ROOT / "checkpoints" / "demo" / "driver_id1"
needs_mediapipe = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                     reason="needs mediapipe (the optional extra 'track')")
FRAMES = 12
# A small face model and a short fit: what is tested is the path from a video to a driven avatar, not the fit's
# accuracy (tests/test_track.py and benchmarks/bench_tracking.py measure that).
FAST_TRACKING = {"face_model_samples": 24, "face_model_components": 12, "progress": False,
                 "fit": FitConfig(joint_iterations=10)}


@pytest.fixture(autouse=True)
def face_model_cache(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.getbasetemp() / "face_model_cache"  # shared with the other tracking tests
    path.mkdir(exist_ok=True)
    monkeypatch.setenv("CGHA_CACHE_DIR", str(path))


def _clip(path: Path, frames: np.ndarray) -> Path:
    iio.imwrite(path, frames, fps=25, codec="libx264", quality=9)
    return path


def _driver_frames() -> np.ndarray:
    meta = json.loads((DEMO_DRIVER / "meta.json").read_text())
    return np.stack([iio.imread(DEMO_DRIVER / "images" / f / "image_cam00.jpg") for f in meta["frame_names"][:FRAMES]])


def _fov() -> float:
    """The synthetic monocular camera's field of view (meta.json records its focal length in pixels)."""
    meta = json.loads((DEMO_DRIVER / "meta.json").read_text())
    return float(np.degrees(2 * np.arctan(0.5 * meta["original_resolution"] / meta["cameras"]["focal_px"])))


@needs_mediapipe
def test_driver_video_drives_the_avatar_side_by_side(tmp_path):
    video = _clip(tmp_path / "my clip.mp4", _driver_frames())
    options = DriverVideoOptions(device="cpu", data_root=tmp_path / "data", fov_deg=_fov(), resolution=64,
                                 track_options=FAST_TRACKING)
    subject = track_driver_video(str(video), options)
    assert subject.root == tmp_path / "data" / "driver_my_clip" and not subject.reused
    assert subject.frames_found == FRAMES and len(subject.frames) >= FRAMES // 2 and subject.held_out == []

    avatar = build_tiny_avatar(tmp_path / "tiny.cgha")
    cfg = load_config(ReenactConfig, None, [
        f"load_gaussianhead_checkpoint={avatar}", "device=cpu", "render.backend=torch", "dataset.freeview=false",
        "dataset.original_resolution=64", "dataset.resolution=64", f"recorder.result_path={tmp_path / 'results'}",
        "recorder.name=driven", *driver_overrides(subject)], stage="reenactment")
    app = Reenactment(cfg, torch.device("cpu"))
    # The driver's head motion is applied relative to the avatar's own neutral pose: frame 0 sits exactly there.
    assert torch.allclose(app.driving["pose"][0], torch.tensor(REFERENCE_POSE), atol=1e-5)
    assert app.driving["exp_coeff"].abs().sum() > 0  # tracked expressions, not zeros
    result = app.run(progress=False)
    assert result["frames"] == len(subject.frames)
    frames = iio.imread(result["video"])
    assert frames.shape[1:] == (64, 128, 3)  # the driver's frame beside the avatar's
    # The same file with the same arguments is not tracked again.
    assert track_driver_video(str(video), options).reused


@needs_mediapipe
def test_a_video_without_a_face_is_one_line(tmp_path):
    rng = np.random.default_rng(0)
    noise = np.clip(120 + rng.normal(0, 8, (FRAMES, 128, 128, 3)), 0, 255).astype(np.uint8)
    video = _clip(tmp_path / "wall.mp4", noise)
    result = subprocess.run([sys.executable, "reenactment.py", "--config", "config/reenactment_synthetic_demo.yaml",
                             "--driver-video", str(video), "--driver-out", str(tmp_path / "tracked"), "device=cpu"],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in result.stderr
    assert f"wall.mp4: {FRAMES} frames found, a face found in 0; at least {FRAMES // 2} tracked frames" in last
    assert not (tmp_path / "tracked").exists()


def test_a_live_source_is_recorded_then_tracked_like_a_file(tmp_path):
    """A webcam goes through capture_frames; any source OpenCV opens does, so a file stands in for the camera."""
    assert webcam_index("0") == 0 and webcam_index("2") == 2 and webcam_index("clip.mp4") is None
    source = _clip(tmp_path / "camera.mp4", _driver_frames())
    recorded = capture_frames(str(source), tmp_path / "out" / "webcam0.mp4", frames=8)
    assert iio.imread(recorded).shape == (8, 256, 256, 3)
    with pytest.raises(DataError, match="cannot open the camera 'missing.mp4'"):
        capture_frames("missing.mp4", tmp_path / "none.mp4", frames=8)
