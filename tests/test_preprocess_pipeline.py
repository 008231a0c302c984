"""Raw NeRSemble-style capture -> preprocess -> masks -> tracker outputs -> the datasets load, on CPU.

The raw capture is the synthetic head rendered as one mp4 per camera over the studio background (portrait frames
like NeRSemble's), with a BACKGROUND sequence and ground truth beside it (cgha/synthetic/raw_capture.py).
"""
import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cgha.config import DatasetConfig
from cgha.dataset import GaussianDataset, MeshDataset, Subject
from cgha.errors import DataError, exit_on_user_error
from cgha.preprocess.background_removal import MaskingOptions, remove_background
from cgha.preprocess.check import check_subject
from cgha.preprocess.extract import PreprocessOptions, preprocess_subject
from cgha.preprocess.mask_quality import mask_iou_report
from cgha.preprocess.plan import frame_sources, read_manifest
from cgha.preprocess.video import VideoReader
from cgha.synthetic import camera_rig
from cgha.synthetic.raw_capture import camera_serials, copy_tracker_outputs, generate_raw_capture

ROOT = Path(__file__).resolve().parents[1]
SUBJECT, WIDTH, CAMS, FRAMES, SEQUENCE = "031", 128, 4, 4, "EXP-1-head"
SERIALS = camera_serials(CAMS)


def _options(**changes) -> PreprocessOptions:
    return PreprocessOptions(**{"size": WIDTH, "lowres": 64, "progress": False, **changes})


@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Path:
    return generate_raw_capture(tmp_path_factory.mktemp("raw") / "nersemble", subject=SUBJECT, frames=FRAMES,
                                cameras=CAMS, width=WIDTH, seed=1, progress=False)


@pytest.fixture(scope="module")
def processed(raw, tmp_path_factory) -> Path:
    """The raw capture taken through preprocessing, background removal and the stand-in tracker."""
    out = tmp_path_factory.mktemp("processed")
    result = preprocess_subject(raw, SUBJECT, out, _options())
    remove_background(result.out_dir, MaskingOptions(progress=False))
    copy_tracker_outputs(raw, SUBJECT, result.out_dir, frame_sources(read_manifest(result.out_dir)))
    return result.out_dir


def _copy_raw(raw: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "raw"
    shutil.copytree(raw, copy)
    return copy


def test_raw_capture_is_in_nersemble_layout(raw):
    calibration = json.loads((raw / SUBJECT / "calibration" / "camera_params.json").read_text())
    assert sorted(calibration["world_2_cam"]) == SERIALS
    assert np.array(calibration["world_2_cam"][SERIALS[0]]).shape == (4, 4)
    assert np.array(calibration["intrinsics"]).shape == (3, 3)
    for sequence in (SEQUENCE, "BACKGROUND"):
        for serial in SERIALS:
            with VideoReader(raw / SUBJECT / "sequences" / sequence / "images" / f"cam_{serial}.mp4") as video:
                assert (video.width, video.height) == (WIDTH, 186)  # NeRSemble's portrait aspect, 2200 x 3208
                assert video.frame_count == (FRAMES if sequence == SEQUENCE else 3)


def test_end_to_end_datasets_load_with_accurate_masks_and_cameras(raw, processed):
    assert sorted(p.name for p in (processed / "images").iterdir()) == [f"{i:04d}" for i in range(FRAMES)]
    for name in ("image", "mask", "image_lowres", "mask_lowres"):
        assert (processed / "images" / "0002" / f"{name}_{SERIALS[1]}.jpg").is_file()
    assert (processed / "background" / f"image_{SERIALS[0]}.jpg").is_file()
    assert not list(processed.rglob("visible_*"))  # the default crop stays inside the frame

    quality = mask_iou_report(processed, raw)
    assert quality["mean"] >= 0.97 and quality["min"] >= 0.95, quality

    cfg = DatasetConfig(dataroot=str(processed), original_resolution=WIDTH, resolution=WIDTH, num_sample_view=2)
    subject = Subject(cfg)
    assert subject.cameras == tuple(SERIALS) and subject.frames == [f"{i:04d}" for i in range(FRAMES)]
    # Centred crop of the portrait frame + no resize: exactly the synthetic rig's square cameras at WIDTH.
    rig = camera_rig(CAMS, WIDTH)
    for c, serial in enumerate(SERIALS):
        np.testing.assert_allclose(subject.intrinsics[("0001", serial)], rig.Ks[c].numpy(), atol=1e-4)
        np.testing.assert_allclose(subject.extrinsics[("0001", serial)], rig.viewmats[c, :3].numpy(), atol=1e-6)
    item = GaussianDataset(cfg, split="all", views="all")[5]
    assert item["images"].shape == (3, WIDTH, WIDTH) and 0.1 < float(item["masks"].mean()) < 0.5
    mesh_cfg = DatasetConfig(dataroot=str(processed), original_resolution=WIDTH, resolution=64, num_sample_view=2)
    assert MeshDataset(mesh_cfg)[0]["images"].shape == (2, 3, 64, 64)
    assert check_subject(processed).ok


def test_resume_skips_finished_views_and_redoes_missing_ones(raw, processed, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(processed, out / SUBJECT)
    again = preprocess_subject(raw, SUBJECT, out, _options())
    assert (again.written, again.skipped, again.plates) == (0, FRAMES * CAMS, 0)

    image = out / SUBJECT / "images" / "0002" / f"image_{SERIALS[3]}.jpg"
    before = image.read_bytes()
    image.unlink()
    (out / SUBJECT / "images" / "0001" / f"image_lowres_{SERIALS[0]}.jpg").write_bytes(b"\xff\xd8 cut short")
    redo = preprocess_subject(raw, SUBJECT, out, _options())
    assert (redo.written, redo.skipped) == (2, FRAMES * CAMS - 2)
    assert image.read_bytes() == before  # the same source frame, decoded and encoded the same way
    # The redone views' masks were derived from the old images: removed, then recomputed by a resumed masking run.
    assert not (out / SUBJECT / "images" / "0002" / f"mask_{SERIALS[3]}.jpg").exists()
    masks = remove_background(out / SUBJECT, MaskingOptions(progress=False))
    assert (masks.written, masks.skipped) == (2, FRAMES * CAMS - 2)
    assert check_subject(out / SUBJECT).ok

    with pytest.raises(DataError, match=r"other settings \(size: 128 -> 96\)"):
        preprocess_subject(raw, SUBJECT, out, _options(size=96))
    manifest = out / SUBJECT / "preprocess.json"
    saved = manifest.read_bytes()
    manifest.unlink()
    with pytest.raises(DataError, match="already has images/ but no preprocess.json"):
        preprocess_subject(raw, SUBJECT, out, _options())
    manifest.write_bytes(saved)
    # Forced with other settings: the old run's views go (the tracker's params stay), nothing stale is left.
    forced = preprocess_subject(raw, SUBJECT, out, _options(size=96, force=True, cameras=SERIALS[:2], max_frames=2))
    assert forced.written == 4
    assert sorted(p.name for p in (out / SUBJECT / "images").iterdir()) == ["0000", "0001"]
    assert sorted(p.name for p in (out / SUBJECT / "images" / "0001").iterdir()) == sorted(
        f"{kind}_{serial}.jpg" for kind in ("image", "image_lowres") for serial in SERIALS[:2])
    assert len(list((out / SUBJECT / "params").iterdir())) == FRAMES


def test_stride_picks_the_right_source_frames(raw, processed, tmp_path):
    result = preprocess_subject(raw, SUBJECT, tmp_path, _options(stride=2, background=False, cameras=SERIALS[:2]))
    assert [(s.frame, s.index) for s in result.frames] == [("0000", 0), ("0001", 2)]
    for frame, source in (("0000", "0000"), ("0001", "0002")):
        for serial in SERIALS[:2]:
            name = f"image_{serial}.jpg"
            assert (tmp_path / SUBJECT / "images" / frame / name).read_bytes() == \
                (processed / "images" / source / name).read_bytes()
    capped = preprocess_subject(raw, SUBJECT, tmp_path / "capped", _options(max_frames=1, background=False))
    assert len(capped.frames) == 1


def test_gha_style_padded_crop_and_resize(raw, tmp_path):
    """A crop wider than the frame (GHA's 2600 on 2200-wide frames) pads with black and writes visibility masks."""
    result = preprocess_subject(raw, SUBJECT, tmp_path, _options(size=96, crop_size=150, cameras=SERIALS[:1],
                                                                 max_frames=1))
    crop = result.crops[SERIALS[0]]
    assert (crop.x0, crop.side) == (-11, 150)
    folder = tmp_path / SUBJECT / "images" / "0000"
    visible = cv2.imread(str(folder / f"visible_{SERIALS[0]}.jpg"), cv2.IMREAD_GRAYSCALE)
    assert visible.shape == (96, 96) and visible[:, :5].max() < 30 and visible[:, 10:-10].min() > 225
    K = np.load(tmp_path / SUBJECT / "cameras" / "0000" / f"camera_{SERIALS[0]}.npz")["intrinsic"]
    raw_K = np.array(json.loads((raw / SUBJECT / "calibration" / "camera_params.json").read_text())["intrinsics"])
    np.testing.assert_allclose(K[0], [raw_K[0, 0] * 96 / 150, 0, (raw_K[0, 2] + 11) * 96 / 150], rtol=1e-6)


def test_nersemble_v1_layout_with_background_stills(raw, processed, tmp_path):
    """GHA's layout: camera_params/{id}/, sequence_{SEQ}_part-1/{id}/{SEQ}/cam_*.mp4, BACKGROUND stills."""
    v1 = tmp_path / "v1"
    (v1 / "camera_params" / SUBJECT).mkdir(parents=True)
    shutil.copy(raw / SUBJECT / "calibration" / "camera_params.json", v1 / "camera_params" / SUBJECT)
    shutil.copytree(raw / SUBJECT / "sequences" / SEQUENCE / "images", v1 / f"sequence_{SEQUENCE}_part-1" / SUBJECT
                    / SEQUENCE)
    stills = v1 / "sequence_BACKGROUND_part-1" / SUBJECT / "BACKGROUND"
    stills.mkdir(parents=True)
    for serial in SERIALS:
        with VideoReader(raw / SUBJECT / "sequences" / "BACKGROUND" / "images" / f"cam_{serial}.mp4") as video:
            _, frame = next(video.frames([0]))
        cv2.imwrite(str(stills / f"image_{serial}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    result = preprocess_subject(v1, SUBJECT, tmp_path / "out", _options())
    assert result.written == FRAMES * CAMS and result.plates == CAMS
    name = f"image_{SERIALS[2]}.jpg"
    assert (result.out_dir / "images" / "0003" / name).read_bytes() == (processed / "images" / "0003" / name).read_bytes()


def test_bad_inputs_fail_with_one_line_naming_the_file(raw, tmp_path):
    broken = _copy_raw(raw, tmp_path)
    with pytest.raises(DataError, match=r"unknown camera\(s\) \['123456789'\].*camera_params.json"):
        preprocess_subject(broken, SUBJECT, tmp_path / "out", _options(cameras=["123456789"]))
    with pytest.raises(DataError, match=r"sequence\(s\) \['EXP-9'\] of subject 031 not found"):
        preprocess_subject(broken, SUBJECT, tmp_path / "out", _options(sequences=["EXP-9"]))

    videos = broken / SUBJECT / "sequences" / SEQUENCE / "images"
    corrupt = videos / f"cam_{SERIALS[1]}.mp4"
    corrupt.write_bytes(corrupt.read_bytes()[:300])
    with pytest.raises(DataError, match=rf"{corrupt}: .*(cannot open|no readable frames|ended after)"):
        preprocess_subject(broken, SUBJECT, tmp_path / "out", _options())
    corrupt.write_bytes(b"this is not a video")
    with pytest.raises(DataError, match=rf"{corrupt}: "):
        preprocess_subject(broken, SUBJECT, tmp_path / "out", _options())

    (videos / f"cam_{SERIALS[2]}.mp4").unlink()
    with pytest.raises(DataError, match=rf"missing video\(s\): .*cam_{SERIALS[2]}\.mp4"):
        preprocess_subject(broken, SUBJECT, tmp_path / "out", _options(cameras=SERIALS[2:]))

    shutil.rmtree(broken / SUBJECT / "sequences" / "BACKGROUND")
    with pytest.raises(DataError, match="no BACKGROUND sequence.*--no-background"):
        preprocess_subject(broken, SUBJECT, tmp_path / "out", _options(cameras=SERIALS[3:]))

    (broken / SUBJECT / "calibration" / "camera_params.json").unlink()
    with pytest.raises(DataError, match=r"camera_params.json of subject 031 not found: looked for .*calibration"):
        preprocess_subject(broken, SUBJECT, tmp_path / "out", _options())


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", ROOT / "preprocess" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reports_user_errors_as_one_line(raw, tmp_path, capsys):
    script = _script("preprocess_nersemble")
    argv = ["--raw-root", str(raw), "--subject", SUBJECT, "--out", str(tmp_path), "--cameras", "42", "--quiet"]
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(lambda: script.main(argv))
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown camera(s) ['42']") and "\n" not in err
    with pytest.raises(SystemExit):
        exit_on_user_error(lambda: _script("remove_background").main(["--subject-dir", str(tmp_path / "none")]))
    assert "dataset root not found" in capsys.readouterr().err


def test_lowres_copies_are_never_larger_than_the_images():
    from cgha.errors import DataError
    from cgha.preprocess.extract import PreprocessOptions, _check_options, lowres_side

    assert lowres_side(PreprocessOptions(size=128)) == 128 and lowres_side(PreprocessOptions(size=2048)) == 256
    with pytest.raises(DataError, match=r"--lowres must be between 1 and --size \(128\)"):
        _check_options(PreprocessOptions(size=128, lowres=256))
