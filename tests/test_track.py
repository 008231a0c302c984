"""preprocess/track.py and cgha.tracking.pipeline: a user's own capture -> a subject folder (issue 17).

End to end on small synthetic subjects (5 cameras x 6 frames, and the monocular preset's one camera x 8 frames, at
256^2, the generator's ground truth beside them): calibrated multi-view frames and a one-camera video, checked by
check_dataset and the training stages' Subject reader, with the tracked head pose compared with the truth. Each path
runs twice: with the generator's own landmarks in place of MediaPipe (tight bounds: what is left is the pipeline's
error) and with MediaPipe (loose bounds: its landmark definitions differ from the face model's). Dropped frames and
bad inputs end with a warning or one error naming the frames or the file, and leave no output folder. Tests that run
MediaPipe skip when it (the optional extra) is missing.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cgha.errors import DataError, UserError
from cgha.tracking import pipeline as P
from cgha.tracking.accuracy import ground_truth_errors
from cgha.tracking.inputs import read_cameras_json, read_image

ROOT = Path(__file__).resolve().parents[1]
HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None
needs_mediapipe = pytest.mark.skipif(not HAS_MEDIAPIPE, reason="needs mediapipe (the optional extra 'track')")
RES = 256
CAMERAS = 5  # azimuth -75, -37.5, 0, 37.5, 75 deg: the landmarker misses the profiles, finds the three others
# A smaller face model than the default (128 samples, 24 components: ~20 s to build on two idle cores, a minute on
# busy ones, and CI starts with an empty cache), in the cache folder the other tracking tests build theirs in. 24 / 12
# builds in ~3 s and still reproduces identity 0's landmarks well enough for the exact-landmark bounds below (6 / 5
# left the monocular p95 at 0.51 deg).
SAMPLES, COMPONENTS = 24, 12
SMALL_MODEL = dict(face_model_samples=SAMPLES, face_model_components=COMPONENTS)
SMALL_MODEL_ARGS = ["--face-model-samples", str(SAMPLES), "--face-model-components", str(COMPONENTS)]


@pytest.fixture(autouse=True)
def face_model_cache(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.getbasetemp() / "face_model_cache"
    path.mkdir(exist_ok=True)
    monkeypatch.setenv("CGHA_CACHE_DIR", str(path))
    return path


def _load_track_script():
    spec = importlib.util.spec_from_file_location("track_script", ROOT / "preprocess" / "track.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    from cgha.synthetic import generate_subject

    root = tmp_path_factory.mktemp("track_synthetic")
    return generate_subject(root / "id0", identity=0, frames=6, cameras=CAMERAS, resolution=RES, seed=0, lowres=64,
                            progress=False)


def _rig_cameras(subject: Path):
    meta = json.loads((subject / "meta.json").read_text())
    return meta, [c for c in meta["camera_ids"] if c.startswith("cam")]


def export_rig(subject: Path, out: Path, cameras=None):
    """A synthetic subject's rig images as track.py's input: ``out/images/<frame>/<camera>.jpg`` and
    ``out/cams.json``."""
    meta, rig = _rig_cameras(subject)
    cameras = cameras or rig
    entries = {}
    for frame in meta["frame_names"]:
        (out / "images" / frame).mkdir(parents=True)
        for camera in cameras:
            shutil.copy(subject / "images" / frame / f"image_{camera}.jpg", out / "images" / frame / f"{camera}.jpg")
    for camera in cameras:
        arrays = np.load(subject / "cameras" / meta["frame_names"][0] / f"camera_{camera}.npz")
        viewmat = np.eye(4)
        viewmat[:3] = arrays["extrinsic"]
        entries[camera] = {"K": arrays["intrinsic"].tolist(), "world_to_camera": viewmat.tolist(),
                           "image_size": [RES, RES]}
    (out / "cams.json").write_text(json.dumps({"cameras": entries}, indent=1))
    return out / "images", out / "cams.json"


def export_plates(subject: Path, out: Path) -> Path:
    """The synthetic rig's backgrounds (the generator renders over them) as plates ``out/<camera>.png``."""
    import cv2

    from cgha.synthetic.background import camera_backgrounds

    meta, rig = _rig_cameras(subject)
    out.mkdir(parents=True)
    backgrounds = camera_backgrounds(len(meta["camera_ids"]), RES, RES)
    for camera in rig:
        rgb = (backgrounds[meta["camera_ids"].index(camera)].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        cv2.imwrite(str(out / f"{camera}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return out


def _pose(subject: Path, frame: str) -> np.ndarray:
    return np.load(subject / "params" / frame / "params.npz")["pose"][0].astype(np.float64)


def _no_output(out: Path) -> None:
    """Neither the folder nor a hidden temporary sibling of the atomic writer is left."""
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def _check_subject_accepted(out: Path, exp_dim: int = 16):
    from cgha.config import DatasetConfig
    from cgha.dataset.subject import Subject
    from cgha.preprocess.check import check_subject

    report = check_subject(out, exp_dim=exp_dim)
    assert report.ok, report.lines()
    meta = json.loads((out / "meta.json").read_text())
    cfg = DatasetConfig(dataroot=str(out), split_from_meta=True, original_resolution=meta["original_resolution"])
    return Subject(cfg, expected_exp_dim=exp_dim), meta


def _check_basis(out: Path, synthetic: Path) -> None:
    from cgha.dataset.expression_basis import read_expression_basis
    from cgha.synthetic.expression import EXPRESSION_MODEL, EXPRESSION_NAMES

    basis = read_expression_basis(out)
    assert basis.model == EXPRESSION_MODEL and basis.names == tuple(EXPRESSION_NAMES)
    assert basis == read_expression_basis(synthetic)  # the tracked subject shares the synthetic identities' space


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def monocular(tmp_path_factory) -> Path:
    """The monocular preset (one camera cam00 straight ahead, talking, wide head turns), 8 frames at 256^2."""
    from cgha.synthetic import generate_monocular_subject

    root = tmp_path_factory.mktemp("track_monocular")
    return generate_monocular_subject(root / "mono", identity=0, frames=8, resolution=RES, seed=0, lowres=64,
                                      progress=False)


def _true_landmarks(subject: Path, frame: str, camera: str) -> np.ndarray:
    """The generator's 68 landmarks of ``frame`` projected into ``camera`` [68, 2] (pixels of its images)."""
    from cgha.utils.cameras import project_points

    arrays = np.load(subject / "cameras" / frame / f"camera_{camera}.npz")
    viewmat = np.eye(4)
    viewmat[:3] = arrays["extrinsic"]
    points = np.load(subject / "params" / frame / "lmk_3d.npy").astype(np.float64)
    return project_points(points, viewmat, arrays["intrinsic"].astype(np.float64))[0]


def _truth_detector(monkeypatch, lookup):
    """Replace MediaPipe with the generator's own landmarks: ``lookup(image) -> [68, 2] or None``. With exact
    landmarks every error left is the pipeline's (crops, intrinsics, world frame, files), not the landmarker's."""
    from cgha.tracking import landmarker

    class TruthDetector:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def detect(self, image):
            uv = lookup(image)
            if uv is None:
                return None, 0.0
            points = np.full((landmarker.NUM_POINTS, 2), np.nan, dtype=np.float32)
            points[landmarker.IBUG68_FROM_MEDIAPIPE] = uv
            return points, 0.9

    monkeypatch.setattr(landmarker, "FaceMeshDetector", TruthDetector)
    monkeypatch.setattr(landmarker, "import_mediapipe", lambda: None)


def _write_video(subject: Path, path: Path, camera: str = "cam00") -> float:
    """The subject's frames of ``camera`` as an mp4; returns that camera's field of view (degrees)."""
    import imageio.v3 as iio

    meta = json.loads((subject / "meta.json").read_text())
    frames = [iio.imread(subject / "images" / f / f"image_{camera}.jpg") for f in meta["frame_names"]]
    iio.imwrite(path, np.stack(frames), fps=10, codec="libx264", quality=9)
    K = np.load(subject / "cameras" / meta["frame_names"][0] / f"camera_{camera}.npz")["intrinsic"]
    return float(np.degrees(2 * np.arctan(0.5 * RES / K[0, 0])))


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_multiview_exact_landmarks(synthetic, tmp_path, monkeypatch, device):
    """Calibrated frames through track.py's main() with the true landmarks: the calibration's world is kept, so the
    tracked poses must match the generator's, and the folder must be a complete subject."""
    images, cams = export_rig(synthetic, tmp_path / "in")
    plates = export_plates(synthetic, tmp_path / "plates")
    table = {}
    meta, rig = _rig_cameras(synthetic)
    for frame in meta["frame_names"]:
        for camera in rig:
            table[read_image(images / frame / f"{camera}.jpg").tobytes()] = _true_landmarks(synthetic, frame, camera)
    _truth_detector(monkeypatch, lambda image: table[image.tobytes()])
    out = tmp_path / "rig"
    # The generator's own landmarks need no calibration toward MediaPipe's definitions.
    _load_track_script().main(["--images", str(images), "--cameras", str(cams), "--out", str(out),
                               "--backgrounds", str(plates), "--resolution", str(RES), "--device", device, "--quiet",
                               "--no-calibration", *SMALL_MODEL_ARGS])

    subject, tracked = _check_subject_accepted(out)
    frames = tracked["frame_names"]
    assert frames == meta["frame_names"] and subject.frames == frames
    assert sorted(subject.cameras) == rig and tracked["original_resolution"] == RES
    _check_basis(out, synthetic)
    assert tracked["face_model"]["name"] == "cgha-face-v1" and tracked["exp_dim"] == 16
    params = np.load(out / "params" / frames[0] / "params.npz")
    assert params["pose"].shape == (1, 6) and params["scale"].shape == (1,) and params["exp_coeff"].shape == (1, 16)
    assert np.load(out / "params" / frames[0] / "lmk_3d.npy").shape == (68, 3)
    faces = np.load(out / "faces.npy")
    assert faces.ndim == 2 and faces.shape[1] == 3
    assert faces.max() < np.load(out / "params" / frames[0] / "vertices.npy").shape[0]
    # The --crop full default at the input size keeps the images and intrinsics as they were.
    K = np.load(out / "cameras" / frames[0] / "camera_cam01.npz")["intrinsic"]
    np.testing.assert_allclose(K, np.load(synthetic / "cameras" / frames[0] / "camera_cam01.npz")["intrinsic"],
                               rtol=1e-6)
    # One camera held out, never the most frontal (cam02); the last ~10 % of the frames held out.
    assert len(tracked["splits"]["eval_camera_ids"]) == 1 and tracked["splits"]["eval_camera_ids"] != ["cam02"]
    assert tracked["splits"]["eval_frame_ids"] == frames[-1:]

    # Measured 0.25 deg (p95 0.33) and < 0.3 mm with exact landmarks and the test's small face model (0.1-0.2 deg
    # with the default model: what is left is the identity PCA not reproducing the held-out identity exactly);
    # 0.5 deg / 3 mm fail on any crop, intrinsics or axis mistake.
    errors = ground_truth_errors(out, synthetic)
    assert errors["rotation_deg"]["p95"] < 0.5, errors["rotation_deg"]
    assert errors["translation"]["p95"] < 0.003, errors["translation"]
    # The tracked landmarks against the true ones, both projected by each camera (px at 512): a fraction of a pixel
    # here; the wrong camera, frame or landmark order would give tens.
    assert errors["landmark_error_px"]["median"] < 2.0, errors["landmark_error_px"]["median"]
    assert len(errors["landmark_error_px"]["per_view"]) == len(frames) * len(rig)
    assert errors["expression_correlation"]["jaw_open"] > 0.9, errors["expression_correlation"]
    report = json.loads((out / "tracking.json").read_text())
    assert report["frames"] == {"input": 6, "kept": 6, "dropped": 0} and report["dropped"] == []
    assert report["landmark_calibration"] is None and tracked["arguments"]["calibration"] is None
    assert report["face_model"]["num_samples"] == SAMPLES and report["face_model"]["num_components"] == COMPONENTS
    assert report["reprojection_px"]["median"] < 1.0  # px at 256^2
    for key in ("decode", "landmarks", "fit", "write", "total"):
        assert report["timings_s"][key] >= 0
    assert report["fps"]["fit_frames"] > 0
    assert (out / "preview.jpg").read_bytes()[:2] == b"\xff\xd8"
    # Masks by background subtraction against the plates match the generator's exact masks.
    from cgha.preprocess.masks import mask_iou
    from cgha.utils.image_io import read_mask

    ious = [mask_iou(read_mask(out / "images" / f / f"mask_{c}.jpg"), read_mask(synthetic / "images" / f / f"mask_{c}.jpg"))
            for f in frames for c in rig]
    assert min(ious) > 0.9, ious


def _video_with_true_landmarks(monocular: Path, tmp_path: Path, monkeypatch):
    """The monocular subject's camera written to a video, and the detector replaced by its true landmarks, frame
    after frame: (meta.json, video path, field of view)."""
    meta = json.loads((monocular / "meta.json").read_text())
    video = tmp_path / "me.mp4"
    fov = _write_video(monocular, video)
    truth = iter([_true_landmarks(monocular, f, "cam00") for f in meta["frame_names"]])
    _truth_detector(monkeypatch, lambda image: next(truth))
    return meta, video, fov


def test_video_exact_landmarks(monocular, tmp_path, monkeypatch):
    """A one-camera video with the true landmarks: a fixed face crop, intrinsics from the field of view, the world
    re-centred on the head; the head's pose relative to the camera must match the generator's."""
    meta, video, fov = _video_with_true_landmarks(monocular, tmp_path, monkeypatch)
    out = tmp_path / "me"
    result = P.track_video(video, out, P.TrackOptions(resolution=128, fov_deg=fov, device="cpu", progress=False,
                                                      backgrounds=export_plates(monocular, tmp_path / "plates"),
                                                      calibration=None, **SMALL_MODEL))
    subject, tracked = _check_subject_accepted(out)
    names = tracked["frame_names"]
    assert names == meta["frame_names"] == result.frames and result.dropped == []
    assert tracked["camera_ids"] == [P.MONOCULAR_CAMERA] and subject.train_cameras == [P.MONOCULAR_CAMERA]
    assert tracked["original_resolution"] == 128 and tracked["cameras"]["fov_deg"] == pytest.approx(fov)
    assert tracked["splits"]["eval_camera_ids"] == [] and tracked["splits"]["eval_frame_ids"] == names[-1:]
    _check_basis(out, monocular)
    crop = tracked["cameras"]["crops"][P.MONOCULAR_CAMERA]
    assert crop["side"] < RES and crop["raw_size"] == [RES, RES]  # a face crop, inside the frame
    # One fixed crop: the intrinsics are the same in every frame.
    Ks = {np.load(out / "cameras" / f / f"camera_{P.MONOCULAR_CAMERA}.npz")["intrinsic"].tobytes() for f in names}
    assert len(Ks) == 1
    # The world is re-centred on the head: its mean position is the origin.
    assert np.linalg.norm(np.mean([_pose(out, f)[3:] for f in names], axis=0)) < 1e-5
    # Only the head's pose relative to the camera is observable from one view: compared in camera coordinates.
    # Measured 0.12 deg (p95 0.20) with exact landmarks and the small face model; the position error (~1 cm at the
    # camera's ~2 units, fov 26 deg) is the depth left uncertain by one view, the fixed scale and the identity's size.
    errors = ground_truth_errors(out, monocular, truth_camera="cam00")
    assert errors["rotation_deg"]["p95"] < 0.5, errors["rotation_deg"]
    assert errors["translation"]["median"] < 0.03, errors["translation"]
    assert errors["landmark_error_px"] is None  # the two subjects' images are not the same pixels (a face crop)
    assert result.report["reprojection_px"]["median"] < 0.5  # px at 128^2


def test_video_photometric_refinement(monocular, tmp_path, monkeypatch):
    """--photometric runs after the landmark fit: the report says what it did, the written landmarks and the
    reprojection follow the refined parameters, and a fit that was already right stays right."""
    from cgha.tracking.photometric import PhotometricConfig

    meta, video, fov = _video_with_true_landmarks(monocular, tmp_path, monkeypatch)
    out = tmp_path / "me"
    config = PhotometricConfig(crop_px=48, warmup=3, iterations=6)
    result = P.track_video(video, out, P.TrackOptions(resolution=128, fov_deg=fov, device="cpu", progress=False,
                                                      backgrounds=export_plates(monocular, tmp_path / "plates"),
                                                      calibration=None, photometric=True, photometric_config=config,
                                                      **SMALL_MODEL))
    _check_subject_accepted(out)
    photometric = result.report["photometric"]
    assert photometric["views"] == len(meta["frame_names"]) and photometric["iterations"] == 9
    assert photometric["config"]["crop_px"] == 48 and result.report["timings_s"]["photometric"] > 0
    assert photometric["pose_prior_weight"] == 0.0  # one camera: no pull toward the landmark fit
    assert 0 < photometric["rotation_change_deg"]["max"] < 1.0
    errors = ground_truth_errors(out, monocular, truth_camera="cam00")
    assert errors["rotation_deg"]["p95"] < 0.8, errors["rotation_deg"]
    assert result.report["reprojection_px"]["median"] < 1.0  # px at 128^2, recomputed at the refined parameters
    names = result.frames
    params = np.load(out / "params" / names[0] / "params.npz")
    assert np.isfinite(params["pose"]).all() and np.isfinite(params["exp_coeff"]).all()


def test_photometric_without_a_usable_view_is_one_error(monocular, tmp_path, monkeypatch):
    """No view within max_view_deg of frontal: one error naming the input and the stage, and no output folder."""
    from cgha.tracking.photometric import PhotometricConfig

    _, video, fov = _video_with_true_landmarks(monocular, tmp_path, monkeypatch)
    out = tmp_path / "me"
    with pytest.raises(P.TooFewFrames, match="no view sees the face") as error:
        P.track_video(video, out, P.TrackOptions(resolution=128, fov_deg=fov, device="cpu", progress=False,
                                                 backgrounds=export_plates(monocular, tmp_path / "plates"),
                                                 calibration=None, photometric=True,
                                                 photometric_config=PhotometricConfig(max_view_deg=1e-3),
                                                 **SMALL_MODEL))
    assert error.value.stage == "photometric" and str(video.name) in str(error.value)
    assert not out.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir() if p.is_dir())


def test_video_drops_frames(monocular, tmp_path, monkeypatch, caplog):
    """A frame without a face and a frame with a wrong detection are dropped, named in one warning and in
    tracking.json, and left out of the subject; the rest is a complete subject."""
    meta = json.loads((monocular / "meta.json").read_text())
    names = meta["frame_names"]
    video = tmp_path / "me.mp4"
    fov = _write_video(monocular, video)
    truth = [_true_landmarks(monocular, f, "cam00") for f in names]
    truth[2] = None  # no face found
    truth[5] = truth[5] + np.array([40.0, 0.0])  # a face found 40 px off (another person, a poster, ...)
    truth = iter(truth)
    _truth_detector(monkeypatch, lambda image: next(truth))
    out = tmp_path / "me"
    with caplog.at_level("WARNING", logger="cgha.tracking.pipeline"):
        result = P.track_video(video, out, P.TrackOptions(resolution=128, fov_deg=fov, device="cpu", progress=False,
                                                          backgrounds=export_plates(monocular, tmp_path / "plates"),
                                                          calibration=None, **SMALL_MODEL))
    assert [d["frame"] for d in result.dropped] == [names[2], names[5]]
    assert result.dropped[0]["reason"] == "no face found" and "fit badly" in result.dropped[1]["reason"]
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warning) == 1 and "dropped 2 of 8 frames" in warning[0]
    assert names[2] in warning[0] and names[5] in warning[0]
    subject, tracked = _check_subject_accepted(out)
    assert tracked["frame_names"] == [f for i, f in enumerate(names) if i not in (2, 5)] == subject.frames
    report = json.loads((out / "tracking.json").read_text())
    assert report["frames"] == {"input": 8, "kept": 6, "dropped": 2}
    assert [d["frame"] for d in report["dropped"]] == [names[2], names[5]]
    # The kept frames are still tracked accurately (the dropped ones only lose their own pose).
    errors = ground_truth_errors(out, monocular, truth_camera="cam00")
    assert errors["frames"] == 6 and errors["rotation_deg"]["p95"] < 0.5, errors["rotation_deg"]
    # Too many failures is an error naming the video, with nothing written.
    truth = iter([None] * 6 + [_true_landmarks(monocular, f, "cam00") for f in names[6:]])
    _truth_detector(monkeypatch, lambda image: next(truth))
    with pytest.raises(DataError, match=r"me.mp4: a face was found in only 2 of 8 frames"):
        P.track_video(video, tmp_path / "me2", P.TrackOptions(resolution=128, fov_deg=fov, device="cpu",
                                                              progress=False, backgrounds=tmp_path / "plates",
                                                              calibration=None, **SMALL_MODEL))
    _no_output(tmp_path / "me2")


@needs_mediapipe
def test_multiview_mediapipe(synthetic, tmp_path):
    """The real landmarker and segmentation on calibrated frames, with a face crop resized to another size."""
    images, cams = export_rig(synthetic, tmp_path / "in")
    out = tmp_path / "rig"
    _load_track_script().main(["--images", str(images), "--cameras", str(cams), "--out", str(out), "--crop", "face",
                               "--resolution", "200", "--device", "cpu", "--quiet", *SMALL_MODEL_ARGS])
    subject, tracked = _check_subject_accepted(out)
    assert len(tracked["frame_names"]) >= 5  # at most one frame may be dropped
    _check_basis(out, synthetic)
    # The calibration's world is kept. Measured at 256^2 with the small face model: median 1.0 deg (p95 1.3) with
    # the shipped landmark calibration, 3.6 deg (p95 4.5) without it (MediaPipe's landmark definitions differ from
    # the face model's by several pixels and tilt the fitted head), against 0.25 deg with exact landmarks
    # (test_multiview_exact_landmarks). 2 deg fails without the calibration; a wrong axis convention or a mirrored
    # view gives tens of degrees.
    errors = ground_truth_errors(out, synthetic)
    assert errors["rotation_deg"]["median"] < 2.0, errors["rotation_deg"]
    assert errors["translation"]["median"] < 0.02, errors["translation"]  # world units; the head is ~0.25 wide
    assert errors["expression_correlation"]["jaw_open"] > 0.5, errors["expression_correlation"]
    report = json.loads((out / "tracking.json").read_text())
    assert report["detections_per_camera"]["cam02"] == 6  # the frontal camera
    assert report["landmark_calibration"]["landmarker"].startswith("mediapipe==")
    assert report["reprojection_px"]["median_at_512"] < 15.0  # landmark definitions differ by ~5-13 px at 512
    assert report["fps"]["landmarks_images"] > 0
    # Selfie-segmentation masks cover the head: most of the true mask is inside them.
    from cgha.utils.image_io import read_mask

    frame = tracked["frame_names"][0]
    mask = read_mask(out / "images" / frame / "mask_cam02.jpg") > 0.5
    assert 0.1 < mask.mean() < 0.9


@needs_mediapipe
def test_video_mediapipe(monocular, tmp_path):
    """The real landmarker and segmentation on a one-camera video."""
    video = tmp_path / "me.mp4"
    fov = _write_video(monocular, video)
    out = tmp_path / "me"
    _load_track_script().main(["--video", str(video), "--out", str(out), "--resolution", "128", "--fov", f"{fov}",
                               "--device", "cpu", "--quiet", *SMALL_MODEL_ARGS])
    subject, tracked = _check_subject_accepted(out)
    assert len(tracked["frame_names"]) >= 7 and subject.train_cameras == [P.MONOCULAR_CAMERA]
    # Measured: median 3.8 deg (p95 4.5) in camera coordinates with the landmark calibration, 8 deg without it,
    # against 0.12 deg with exact landmarks (test_video_exact_landmarks): from one view what the calibration leaves
    # of MediaPipe's differences (they vary with the person and the head's turn) is absorbed mostly as pitch. 6 deg
    # fails without the calibration, and a flipped or mirrored camera or a wrong crop (tens of degrees).
    errors = ground_truth_errors(out, monocular, truth_camera="cam00")
    assert errors["rotation_deg"]["median"] < 6.0, errors["rotation_deg"]


# ------------------------------------------------------------------------------------------------ bad inputs
def test_missing_video_is_one_line_error(tmp_path):
    out = tmp_path / "me"
    result = subprocess.run([sys.executable, "preprocess/track.py", "--video", str(tmp_path / "nope.mp4"), "--out",
                             str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "nope.mp4" in lines[-1] and "Traceback" not in result.stderr
    _no_output(out)


def test_unreadable_video(tmp_path):
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"not a video at all" * 100)
    with pytest.raises(DataError, match="broken.mp4"):
        P.track_video(video, tmp_path / "out", P.TrackOptions(progress=False))
    _no_output(tmp_path / "out")


@needs_mediapipe
def test_blank_video(tmp_path):
    import imageio.v3 as iio

    video = tmp_path / "blank.mp4"
    rng = np.random.default_rng(0)
    frames = np.clip(120 + rng.normal(0, 8, (6, 128, 128, 3)), 0, 255).astype(np.uint8)
    iio.imwrite(video, frames, fps=10, codec="libx264")
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"blank.mp4: a face was found in only 0 of 6 frames"):
        P.track_video(video, out, P.TrackOptions(progress=False, device="cpu"))
    _no_output(out)


def _write_cams(path: Path, cameras: dict) -> Path:
    path.write_text(json.dumps({"cameras": cameras}))
    return path


def _camera_entry(size=(64, 64)):
    viewmat = np.eye(4)
    viewmat[2, 3] = 1.0
    return {"K": [[60.0, 0, size[0] / 2], [0, 60.0, size[1] / 2], [0, 0, 1]], "world_to_camera": viewmat.tolist(),
            "image_size": list(size)}


def _image_folder(root: Path, frames=("0000", "0001"), cameras=("a", "b"), size=(64, 64)) -> Path:
    import cv2

    for frame in frames:
        (root / frame).mkdir(parents=True)
        for camera in cameras:
            cv2.imwrite(str(root / frame / f"{camera}.png"), np.full((size[1], size[0], 3), 90, np.uint8))
    return root


@pytest.mark.parametrize("change, fragment", [
    (lambda e: e["a"].pop("K"), "missing K"),
    (lambda e: e["a"].update(K=[[1, 0], [0, 1]]), "K must be 3x3"),
    (lambda e: e["a"].update(world_to_camera=np.diag([2.0, 2.0, 2.0, 1.0]).tolist()), "not a rotation matrix"),
    (lambda e: e["a"].update(image_size=[64]), "image_size must be [width, height]"),
    (lambda e: e["a"].update(image_size=[16, 16]), "principal point"),
    (lambda e: e.update({"bad/id": e["a"]}), "camera id 'bad/id'"),
])
def test_camera_file_errors(tmp_path, change, fragment):
    entries = {"a": _camera_entry(), "b": _camera_entry()}
    change(entries)
    cams = _write_cams(tmp_path / "cams.json", entries)
    with pytest.raises(DataError) as info:
        read_cameras_json(cams)
    assert str(cams) in str(info.value) and fragment in str(info.value)


def test_camera_file_not_json(tmp_path):
    cams = tmp_path / "cams.json"
    cams.write_text("{not json")
    with pytest.raises(DataError, match="cams.json: not a readable JSON file"):
        read_cameras_json(cams)
    with pytest.raises(DataError, match="camera file not found"):
        read_cameras_json(tmp_path / "missing.json")


def test_camera_file_must_match_frames(tmp_path):
    images = _image_folder(tmp_path / "images")
    out = tmp_path / "out"
    options = P.TrackOptions(progress=False)
    # A camera with images but not in the file: the error names the image and the camera file.
    cams = _write_cams(tmp_path / "cams.json", {"a": _camera_entry()})
    with pytest.raises(DataError, match=r"images/0000/b.png: camera 'b' is not in .*cams.json"):
        P.track_images(images, cams, out, options)
    # A camera in the file without images in a frame.
    cams = _write_cams(tmp_path / "cams.json", {"a": _camera_entry(), "b": _camera_entry(), "c": _camera_entry()})
    with pytest.raises(DataError, match=r"images/0000: no image of camera\(s\) c listed in .*cams.json"):
        P.track_images(images, cams, out, options)
    # Images of another size than the camera file says (checked from the headers, before any landmarking).
    cams = _write_cams(tmp_path / "cams.json", {"a": _camera_entry((80, 64)), "b": _camera_entry()})
    with pytest.raises(DataError, match=r"0000/a.png is 64x64 but .*cams.json gives camera 'a' image_size \[80, 64\]"):
        P.track_images(images, cams, out, options)
    _no_output(out)


def test_inconsistent_and_unreadable_images(tmp_path):
    import cv2

    images = _image_folder(tmp_path / "images")
    cams = _write_cams(tmp_path / "cams.json", {"a": _camera_entry(), "b": _camera_entry()})
    cv2.imwrite(str(images / "0001" / "b.png"), np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(DataError, match=r"0001/b.png is 64x48 but"):
        P.track_images(images, cams, tmp_path / "out", P.TrackOptions(progress=False))
    (images / "0001" / "b.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"0001/b.png: not a readable JPEG or PNG image"):
        P.track_images(images, cams, tmp_path / "out", P.TrackOptions(progress=False))
    _no_output(tmp_path / "out")


def test_existing_output_needs_force(tmp_path):
    images = _image_folder(tmp_path / "images")
    cams = _write_cams(tmp_path / "cams.json", {"a": _camera_entry(), "b": _camera_entry()})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="already exists"):
        P.track_images(images, cams, tmp_path / "out", P.TrackOptions(progress=False))
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------------------ pieces
def test_face_crop_is_inside_and_square():
    rng = np.random.default_rng(0)
    points = rng.uniform([600, 200], [800, 450], size=(10, 478, 2))  # a face near the right edge of 1000x600
    crop = P._face_crop(points, 1000, 600, 1.8)
    assert crop.inside(1000, 600)
    assert crop.side == 450  # 1.8 x 250 (the larger extent)
    crop = P._face_crop(points, 1000, 600, 4.0)
    assert crop.side == 600 and crop.inside(1000, 600)  # at most the shorter side, shifted inside


def test_holdout_cameras():
    ids = [f"cam{i}" for i in range(7)]
    az = [-75.0, -50.0, -25.0, 0.0, 25.0, 50.0, 75.0]
    el = [0.0] * 7
    # The middle of the azimuth order without the most frontal camera (cam3).
    assert P._holdout_cameras(ids, az, el, None) == ["cam2"]
    assert P._holdout_cameras(ids, az, el, 2) == ["cam1", "cam5"]
    assert P._holdout_cameras(ids[:2], az[:2], el[:2], None) == []
    assert P._holdout_cameras(ids, az, el, ["cam5"]) == ["cam5"]
    with pytest.raises(UserError, match="not among the cameras"):
        P._holdout_cameras(ids, az, el, ["cam9"])
    with pytest.raises(UserError, match="leaves no camera"):
        P._holdout_cameras(ids[:2], az[:2], el[:2], ["cam0", "cam1"])
    with pytest.raises(UserError, match="leaves none"):
        P._holdout_cameras(ids[:2], az[:2], el[:2], 2)
    assert P._holdout_frames([f"{i:04d}" for i in range(20)], 0.1) == ["0018", "0019"]
    assert P._holdout_frames(["0000", "0001"], 0.1) == ["0001"]
    assert P._holdout_frames(["0000"], 0.1) == []


def test_fit_overrides_and_options():
    cfg = P.parse_fit_overrides(["smooth_rotation=0", "fit_scale=false", "fit_identity=1"])
    assert cfg.smooth_rotation == 0.0 and cfg.fit_scale is False and cfg.fit_identity is True
    with pytest.raises(UserError, match="KEY=VALUE"):
        P.parse_fit_overrides(["no_such_key=1"])
    with pytest.raises(UserError, match="not a valid"):
        P.parse_fit_overrides(["huber_px=big"])
    for bad in (dict(resolution=8), dict(fov_deg=0.0), dict(crop="zoom"), dict(masks="plates"),
                dict(mask_region="torso"), dict(mask_edges="sharp"), dict(oblique_view_deg=-1.0), dict(oblique_view_deg="35"),
                dict(view_calibration="both"),
                dict(holdout_frames=1.0), dict(device="tpu"),
                dict(face_model_samples=4, face_model_components=4), dict(face_model_components=0),
                dict(face_model_samples=12.5)):
        with pytest.raises(UserError):
            P.TrackOptions(**bad).check()


def test_landmark_calibration_option(tmp_path):
    """The shipped calibration by default, another file by path, none with None; a bad file fails at check()."""
    from cgha.tracking.calibration import DEFAULT_CALIBRATION_PATH, load_calibration

    shipped = P.TrackOptions().landmark_calibration()
    np.testing.assert_array_equal(shipped.offset, load_calibration().offset)
    assert P.TrackOptions(calibration=None).landmark_calibration() is None
    assert P.TrackOptions(calibration=DEFAULT_CALIBRATION_PATH).landmark_calibration() is not None
    bad = tmp_path / "cal.npz"
    np.savez(bad, offset=np.zeros((68, 3)))
    with pytest.raises(UserError, match="cal.npz: arrays missing"):
        P.TrackOptions(calibration=bad).check()
    with pytest.raises(UserError, match="nothere.npz: cannot be read"):
        P.TrackOptions(calibration=tmp_path / "nothere.npz").check()
    # The command line: the default, --calibration FILE, --no-calibration (not both).
    parser = _load_track_script().build_parser()
    base = ["--video", "v.mp4", "--out", "o"]
    assert parser.parse_args(base).no_calibration is False and parser.parse_args(base).calibration is None
    assert parser.parse_args(base + ["--no-calibration"]).no_calibration is True
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--no-calibration", "--calibration", str(bad)])
