"""check_dataset: a clean subject passes; a damaged copy gets every problem listed, not just the first."""
import subprocess
import sys
from pathlib import Path

import numpy as np

from cgha.preprocess.check import check_subject

ROOT = Path(__file__).resolve().parents[1]


def test_clean_subject_passes(tiny_subject):
    report = check_subject(tiny_subject, exp_dim=16)
    assert report.ok, report.lines()
    # The rig's cameras and the generator's evaluation-only out-of-rig cameras (oor*), all checked alike.
    assert report.frames == ["0000", "0001", "0002", "0003"]
    assert report.cameras == ["cam00", "cam01", "cam02", "cam03", "oor00", "oor01", "oor02", "oor03", "oor04"]
    assert report.summary["image_size"] == (64, 64) and report.summary["exp_dim"] == 16
    assert report.summary["landmarks"] == 68 and report.summary["vertices"] > 1000


def _damage(root: Path) -> None:
    (root / "images" / "0001" / "mask_cam02.jpg").unlink()
    (root / "images" / "0002" / "mask_lowres_cam00.jpg").unlink()
    lowres = root / "images" / "0003" / "image_lowres_cam01.jpg"
    lowres.write_bytes(lowres.read_bytes()[:200])
    camera = root / "cameras" / "0000" / "camera_cam03.npz"
    arrays = dict(np.load(camera))
    np.savez(camera, intrinsic=arrays["intrinsic"], extrinsic=np.eye(4))  # [4, 4] instead of [3, 4]
    camera = root / "cameras" / "0002" / "camera_cam01.npz"  # camera-to-world stored by mistake
    arrays = dict(np.load(camera))
    world_2_cam = np.vstack([arrays["extrinsic"], [0, 0, 0, 1]])
    np.savez(camera, intrinsic=arrays["intrinsic"], extrinsic=np.linalg.inv(world_2_cam)[:3].astype(np.float32))
    camera = root / "cameras" / "0003" / "camera_cam00.npz"  # intrinsics for a 4x larger image
    arrays = dict(np.load(camera))
    np.savez(camera, intrinsic=arrays["intrinsic"] * [[4], [4], [1]], extrinsic=arrays["extrinsic"])
    params = root / "params" / "0001" / "params.npz"
    arrays = dict(np.load(params))
    np.savez(params, pose=arrays["pose"], scale=arrays["scale"], exp_coeff=np.zeros((1, 10), np.float32))
    landmarks = root / "params" / "0002" / "lmk_3d.npy"
    lmk = np.load(landmarks)
    np.save(landmarks, lmk[:60])  # neither iBUG-68 nor Multiview-3DMM-Fitting's 66
    vertices = root / "params" / "0003" / "vertices.npy"
    np.save(vertices, np.load(vertices)[:-5])
    (root / "params" / "0000" / "params.npz").unlink()
    (root / "params" / "0099").mkdir()


def test_damaged_subject_lists_every_problem(broken):
    usual = len(np.load(broken / "params" / "0003" / "vertices.npy"))
    _damage(broken)
    report = check_subject(broken, exp_dim=16)
    lines = "\n".join(report.lines())
    expected = [
        "images/0001/mask_cam02.jpg: missing",
        "images/0002/mask_lowres_cam00.jpg: missing",
        "images/0003/image_lowres_cam01.jpg: truncated JPEG",
        "cameras/0000/camera_cam03.npz: 'extrinsic' has shape [4, 4], expected [3, 4]",
        "cameras/0002/camera_cam01.npz: the tracked head projects to (-32, -2), outside the 64x64 image (extrinsic "
        "not world-to-camera",
        "cameras/0003/camera_cam00.npz: principal point (128.0, 128.0) lies outside the 64x64 image",
        "params/0001/params.npz: exp_coeff has 10 coefficients, --exp-dim: 16",
        "params/0002/lmk_3d.npy: shape [60, 3], expected [68, 3] (iBUG-68) or [66, 3]",
        f"params/0003/vertices.npy: {usual - 5} vertices, most frames have {usual}",
        "params/0000/params.npz: missing",
        "params/0099: has no images/ folder of the same name",
    ]
    for text in expected:
        assert text in lines, f"{text!r} not reported in:\n{lines}"
    assert len(report.problems) == len(expected)


def test_problems_repeated_over_frames_are_grouped(broken):
    for frame in ("0000", "0001", "0002", "0003"):
        (broken / "images" / frame / "mask_lowres_cam03.jpg").unlink()
    report = check_subject(broken)
    assert report.lines() == ["images/{frame}/mask_lowres_cam03.jpg: missing (4 frames: 0000, 0001, 0002, ...)"]
    assert check_subject(broken, lowres=False).ok
    absent = check_subject(broken, cameras=["cam07"]).lines()
    assert absent[0] == "images/{frame}/image_cam07.jpg: missing (4 frames: 0000, 0001, 0002, ...)"
    assert "cameras/{frame}/camera_cam07.npz: missing (4 frames: 0000, 0001, 0002, ...)" in absent


def test_not_a_subject(tmp_path):
    report = check_subject(tmp_path / "nothing")
    assert not report.ok and "dataset root not found" in report.lines()[0]


def test_cli_exit_status_and_listing(broken):
    _damage(broken)
    result = subprocess.run([sys.executable, "preprocess/check_dataset.py", str(broken), "--exp-dim", "16"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "images/0001/mask_cam02.jpg: missing" in result.stdout and "params/0000/params.npz: missing" in result.stdout
    assert result.stderr.strip() == f"error: {broken}: 11 problem(s) of 11 kind(s), listed above"
