"""The embedded synthetic subject: layout, conventions, landmarks, determinism, expressions, trajectories, CLI."""
import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cgha.synthetic import (
    EXP_DIM,
    EXPRESSION_NAMES,
    DEFAULT_SCALE,
    HeadModel,
    HeadTexture,
    SubjectArgumentError,
    camera_rig,
    expression_trajectory,
    frontal_camera,
    generate_subject,
    pose_trajectory,
    recommended_splits,
    render_views,
)
from cgha.synthetic.capture import HEAD_CENTRE
from cgha.synthetic.trajectory import POSE_LIMITS_DEG, TRANSLATION_LIMIT
from cgha.utils.cameras import camera_center, project_points

REPO = Path(__file__).resolve().parents[1]
RES, CAMS, FRAMES, LOWRES = 80, 4, 4, 32


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "subject"
    return generate_subject(root, identity=0, frames=FRAMES, cameras=CAMS, resolution=RES, seed=3, lowres=LOWRES,
                            progress=False)


def _frames_and_cams(root):
    meta = json.loads((root / "meta.json").read_text())
    return meta, meta["frame_names"], meta["camera_ids"]


def test_layout_files_and_shapes(subject):
    meta, frames, cams = _frames_and_cams(subject)
    assert frames == [f"{i:04d}" for i in range(FRAMES)]
    assert cams == [f"cam{i:02d}" for i in range(CAMS)] + [f"oor{i:02d}" for i in range(5)]
    assert sorted(p.name for p in (subject / "images").iterdir()) == frames
    assert meta["exp_dim"] == EXP_DIM == len(meta["expression_names"]) >= 10
    assert meta["original_resolution"] == RES
    assert meta["generator"] and meta["generator_version"]
    assert meta["arguments"]["seed"] == 3
    assert (subject / "preview.jpg").is_file()
    assert not list(subject.parent.glob(".subject.*")), "temporary folders left behind"
    for frame in frames:
        img_dir = subject / "images" / frame
        for cam in cams:
            img = cv2.imread(str(img_dir / f"image_{cam}.jpg"))
            assert img.shape == (RES, RES, 3)
            assert cv2.imread(str(img_dir / f"mask_{cam}.jpg"), cv2.IMREAD_GRAYSCALE).shape == (RES, RES)
            assert cv2.imread(str(img_dir / f"image_lowres_{cam}.jpg")).shape == (LOWRES, LOWRES, 3)
            assert cv2.imread(str(img_dir / f"mask_lowres_{cam}.jpg"), cv2.IMREAD_GRAYSCALE).shape == (LOWRES, LOWRES)
            cam_file = np.load(subject / "cameras" / frame / f"camera_{cam}.npz")
            assert cam_file["intrinsic"].shape == (3, 3) and cam_file["intrinsic"].dtype == np.float32
            assert cam_file["extrinsic"].shape == (3, 4) and cam_file["extrinsic"].dtype == np.float32
        params = np.load(subject / "params" / frame / "params.npz")
        assert params["pose"].shape == (1, 6) and params["pose"].dtype == np.float32
        assert params["scale"].shape == (1,)
        assert params["exp_coeff"].shape == (1, EXP_DIM)
        assert np.load(subject / "params" / frame / "lmk_3d.npy").shape == (68, 3)
        verts = np.load(subject / "params" / frame / "vertices.npy")
        assert verts.shape == (meta["num_vertices"], 3) and 10_000 <= verts.shape[0] <= 20_000


def test_cameras_follow_conventions(subject):
    meta, frames, cams = _frames_and_cams(subject)
    centre = np.asarray(HEAD_CENTRE)
    # The rig's cameras (the out-of-rig ones leave its distances and arc on purpose; their own test checks them).
    for cam in (c for c in cams if c not in meta["splits"]["out_of_rig_camera_ids"]):
        data = np.load(subject / "cameras" / frames[0] / f"camera_{cam}.npz")
        K, E = data["intrinsic"].astype(np.float64), data["extrinsic"].astype(np.float64)
        R = E[:, :3]
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-5)
        assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-5)
        c = camera_center(E)
        assert 0.9 < np.linalg.norm(c - centre) < 1.1
        assert c[2] > 0.2  # on the face side
        to_head = (centre - c) / np.linalg.norm(centre - c)
        assert float(R[2] @ to_head) > 0.999  # optical axis (camera +z) points at the head
        assert K[0, 2] == pytest.approx(RES / 2) and K[1, 2] == pytest.approx(RES / 2)
        assert K[0, 0] == pytest.approx(K[1, 1]) and K[0, 0] > RES


def test_landmarks_project_inside_masks_and_head_is_framed(subject):
    meta, frames, cams = _frames_and_cams(subject)
    out_of_rig = set(meta["splits"]["out_of_rig_camera_ids"])
    heights = []
    for frame in frames:
        lmk = np.load(subject / "params" / frame / "lmk_3d.npy")
        for cam in cams:
            data = np.load(subject / "cameras" / frame / f"camera_{cam}.npz")
            mask = cv2.imread(str(subject / "images" / frame / f"mask_{cam}.jpg"), cv2.IMREAD_GRAYSCALE) > 127
            uv, z = project_points(lmk.astype(np.float64), data["extrinsic"].astype(np.float64),
                                   data["intrinsic"].astype(np.float64))
            assert (z > 0).all()
            px = np.floor(uv).astype(int)
            assert ((px >= 0) & (px < RES)).all()
            # Hidden landmarks (self-occlusion) still lie inside the silhouette; allow one pixel of rasterisation.
            grown = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            inside = grown[px[:, 1], px[:, 0]]
            assert inside.all(), f"{frame}/{cam}: landmarks {np.nonzero(~inside)[0].tolist()} outside the mask"
            if cam in out_of_rig:  # evaluation-only views keep the head in the image, without the rig's margin
                assert mask.any() and mask.mean() < 0.9
                continue
            # The whole head stays inside the image with a margin.
            assert not mask[:2].any() and not mask[-2:].any() and not mask[:, :2].any() and not mask[:, -2:].any()
            rows = np.nonzero(mask.any(axis=1))[0]
            heights.append((rows[-1] - rows[0] + 1) / RES)
    assert 0.55 < float(np.median(heights)) < 0.8


def test_out_of_rig_cameras_are_written_and_recorded(subject):
    meta, frames, cams = _frames_and_cams(subject)
    out_of_rig = meta["splits"]["out_of_rig_camera_ids"]
    assert out_of_rig == ["oor00", "oor01", "oor02", "oor03", "oor04"]
    rig = [c for c in cams if c not in out_of_rig]
    assert rig == [f"cam{i:02d}" for i in range(CAMS)] and sorted(cams) == rig + out_of_rig
    # Never a training or a held-out rig camera.
    assert not set(out_of_rig) & set(meta["splits"]["train_camera_ids"] + meta["splits"]["eval_camera_ids"])
    described = meta["cameras"]["out_of_rig"]
    assert described["ids"] == out_of_rig and described["elevation_deg"][0] == 35.0
    assert described["azimuth_deg"][1:3] == [-90.0, 90.0]
    rig_distance = float(np.mean(meta["cameras"]["distance"]))
    for cam, distance, focal in zip(out_of_rig, described["distance"], described["focal_px"]):
        data = np.load(subject / "cameras" / frames[0] / f"camera_{cam}.npz")
        centre = camera_center(torch.from_numpy(data["extrinsic"]).double()).numpy()
        assert math.isclose(np.linalg.norm(centre - np.array(HEAD_CENTRE)), distance, rel_tol=1e-5)
        assert math.isclose(float(data["intrinsic"][0, 0]), focal, rel_tol=1e-6)
        image = cv2.imread(str(subject / "images" / frames[-1] / f"image_lowres_{cam}.jpg"))
        assert image.shape == (LOWRES, LOWRES, 3)
    assert described["distance"][3] < 0.8 * rig_distance and described["distance"][4] > 1.25 * rig_distance
    # The closer camera narrows its focal length so the head fits; the others keep the rig's.
    assert described["focal_px"][3] < meta["cameras"]["focal_px"] == described["focal_px"][4]


def test_deterministic(subject, tmp_path):
    again = generate_subject(tmp_path / "again", identity=0, frames=FRAMES, cameras=CAMS, resolution=RES, seed=3,
                             lowres=LOWRES, progress=False)
    files = sorted(p.relative_to(subject) for p in subject.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (subject / rel).read_bytes() == (again / rel).read_bytes(), f"{rel} differs between runs"


def test_camera_color_spread_gives_each_camera_its_recorded_gains(subject, tmp_path):
    tinted = generate_subject(tmp_path / "tinted", identity=0, frames=1, cameras=CAMS, resolution=RES, seed=3,
                              lowres=LOWRES, progress=False, camera_color_spread=0.2)
    meta, frames, cams = _frames_and_cams(tinted)
    assert "color_gains" not in json.loads((subject / "meta.json").read_text())["cameras"]
    gains = meta["cameras"]["color_gains"]
    assert list(gains) == cams and meta["arguments"]["camera_color_spread"] == 0.2
    values = np.array(list(gains.values()))
    assert values.shape == (len(cams), 3) and np.all(np.abs(np.log(values)) <= 0.2) and values.std(0).min() > 0.02
    for cam in cams[:3]:
        plain = cv2.imread(str(subject / "images" / frames[0] / f"image_{cam}.jpg"))[..., ::-1].astype(np.float64)
        tint = cv2.imread(str(tinted / "images" / frames[0] / f"image_{cam}.jpg"))[..., ::-1].astype(np.float64)
        mid = (plain > 40) & (plain < 180)  # neither clipped nor lost in JPEG noise
        ratio = np.array([np.median(tint[..., c][mid[..., c]] / plain[..., c][mid[..., c]]) for c in range(3)])
        assert np.allclose(ratio, gains[cam], atol=0.03), (cam, ratio, gains[cam])
    with pytest.raises(SubjectArgumentError, match="camera_color_spread"):
        generate_subject(tmp_path / "bad", frames=1, cameras=2, resolution=RES, camera_color_spread=-0.1)


def test_existing_subject_reused_or_refused(subject, tmp_path):
    meta_before = (subject / "meta.json").stat().st_mtime_ns
    same = generate_subject(subject, identity=0, frames=FRAMES, cameras=CAMS, resolution=RES, seed=3,
                            lowres=LOWRES, progress=False)
    assert same == subject and (subject / "meta.json").stat().st_mtime_ns == meta_before
    with pytest.raises(SubjectArgumentError, match="already exists"):
        generate_subject(subject, identity=0, frames=FRAMES, cameras=CAMS, resolution=RES, seed=4, lowres=LOWRES,
                         progress=False)
    # A subject of an older generator version with the same arguments is ours: regenerated, not refused.
    meta = json.loads((subject / "meta.json").read_text())
    (subject / "meta.json").write_text(json.dumps({**meta, "generator_version": "1.0.0"}))
    (subject / "images" / "0000" / "image_oor00.jpg").unlink()
    generate_subject(subject, identity=0, frames=FRAMES, cameras=CAMS, resolution=RES, seed=3, lowres=LOWRES,
                     progress=False)
    assert json.loads((subject / "meta.json").read_text()) == meta
    assert (subject / "images" / "0000" / "image_oor00.jpg").is_file()
    with pytest.raises(SubjectArgumentError, match="cameras"):
        generate_subject(tmp_path / "bad", cameras=0, progress=False)


def test_identities_differ_but_share_spaces():
    a, b = HeadModel(0), HeadModel(1)
    assert a.num_vertices == b.num_vertices and a.exp_dim == b.exp_dim == EXP_DIM
    assert torch.equal(a.faces, b.faces)
    assert (a.rest - b.rest).norm(dim=-1).mean() > 0.01
    assert a.params.skin_rgb != b.params.skin_rgb
    # One identity's expression drives another: same coefficients, same kind of motion.
    e = a.expression(jaw_open=1.0)
    da = (a.canonical_vertices(e)[0] - a.rest).norm(dim=-1)
    db = (b.canonical_vertices(e)[0] - b.rest).norm(dim=-1)
    assert da.max() > 0.2 and db.max() > 0.2


def test_mesh_is_closed_and_outward():
    head = HeadModel(0)
    f = head.faces
    edges = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]).sort(dim=1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    assert bool((counts == 2).all())
    v = head.rest.double()
    signed_volume = (v[f[:, 0]] * torch.linalg.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0
    assert signed_volume > 0
    assert v[:, 2].max() > 1.0 and v[:, 1].max() > 0.9  # nose toward +z, cranium up


def _regions(head, exp, res=256):
    tex = HeadTexture(head.params, head.layout)
    vm, K = frontal_camera(res)
    out = render_views(head, tex, exp, torch.zeros(6), DEFAULT_SCALE, vm, K, res, res, with_tex=True)
    mask = out["mask"][0, 0] > 0
    pix = out["tex"][0].permute(1, 2, 0)[mask]
    regions = tex.regions(pix, exp)
    return out, mask, regions


def test_jaw_open_reveals_dark_mouth_interior():
    head = HeadModel(0)
    closed, mask_c, reg_c = _regions(head, head.expression())
    opened, mask_o, reg_o = _regions(head, head.expression(jaw_open=1.0))
    n_closed = int(reg_c["mouth_interior"].sum())
    n_open = int(reg_o["mouth_interior"].sum())
    assert n_open > 400 and n_closed < 0.1 * n_open
    assert int(reg_o["teeth"].sum()) > 80

    def dark_around_mouth(out, mask):
        img = out["image"][0]
        lum = (0.3 * img[0] + 0.59 * img[1] + 0.11 * img[2])[mask]
        tex = out["tex"][0].permute(1, 2, 0)[mask]
        near = (tex[:, 0].abs() < 0.35) & ((tex[:, 1] - head.layout.mouth_y).abs() < 0.3) & (tex[:, 2] > 0.4)
        return int(((lum < 0.2) & near).sum())

    assert dark_around_mouth(opened, mask_o) > dark_around_mouth(closed, mask_c) + 300


def test_blink_covers_iris_and_pupil():
    head = HeadModel(0)
    _, _, open_eyes = _regions(head, head.expression())
    _, _, shut = _regions(head, head.expression(blink_left=1.0, blink_right=1.0))
    _, _, wink = _regions(head, head.expression(blink_left=1.0))
    assert int(open_eyes["iris"].sum()) > 60 and int(open_eyes["pupil"].sum()) > 8
    assert int(shut["iris"].sum()) == 0 and int(shut["pupil"].sum()) == 0
    assert 0 < int(wink["iris"].sum()) < int(open_eyes["iris"].sum())


def test_expression_trajectories_smooth_and_exercised():
    exp = expression_trajectory(40, seed=0)
    assert exp.shape == (40, EXP_DIM) and exp.dtype == np.float32
    assert exp.min() >= 0.0 and exp.max() <= 1.0
    assert float(np.abs(np.diff(exp, axis=0)).max()) <= 0.6
    peaks = exp.max(axis=0)
    assert (peaks >= 0.7).all(), dict(zip(EXPRESSION_NAMES, peaks.round(2)))
    assert np.array_equal(exp, expression_trajectory(40, seed=0))
    assert not np.array_equal(exp, expression_trajectory(40, seed=1))


def test_pose_trajectories_smooth_and_bounded():
    pose = pose_trajectory(40, seed=0)
    assert pose.shape == (40, 6) and pose.dtype == np.float32
    angles = np.degrees(np.linalg.norm(pose[:, :3], axis=1))
    assert angles.max() <= math.sqrt(sum(a * a for a in POSE_LIMITS_DEG)) + 1e-3
    assert angles.max() > 3.0  # the head does move
    assert np.abs(pose[:, 3:]).max() <= TRANSLATION_LIMIT + 1e-6
    R = torch.from_numpy(pose[:, :3].astype(np.float64))
    from cgha.utils.rotations import axis_angle_to_matrix

    mats = axis_angle_to_matrix(R)
    rel = mats[1:] @ mats[:-1].transpose(1, 2)
    step = torch.rad2deg(torch.arccos(((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)))
    assert float(step.max()) < 6.0


def test_recommended_splits():
    rig = camera_rig(16, 64)
    frames = [f"{i:04d}" for i in range(40)]
    s = recommended_splits(rig.ids, rig.azimuth_deg, rig.elevation_deg, frames)
    assert len(s["eval_camera_ids"]) == 2
    assert rig.ids[rig.most_frontal()] not in s["eval_camera_ids"]
    az = [rig.azimuth_deg[rig.ids.index(c)] for c in s["eval_camera_ids"]]
    assert min(az) < 0 < max(az)
    assert s["eval_frame_ids"] == frames[-4:]
    assert recommended_splits(rig.ids[:3], rig.azimuth_deg[:3], rig.elevation_deg[:3], frames[:3]) == {
        "eval_camera_ids": [], "eval_frame_ids": [], "train_camera_ids": rig.ids[:3], "train_frame_ids": frames[:3]}
    assert len(recommended_splits(rig.ids, rig.azimuth_deg, rig.elevation_deg, frames[:4])["eval_frame_ids"]) == 1


def test_cli_help_and_bad_argument(tmp_path):
    script = str(REPO / "preprocess" / "make_synthetic.py")
    ok = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "--identity" in ok.stdout and "--resolution" in ok.stdout
    bad = subprocess.run([sys.executable, script, "--out", str(tmp_path / "x"), "--cameras", "0"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert "--cameras" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x").exists()
