"""The three dataset classes on a generated subject, and validation errors on deliberately broken copies."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cgha.config import DatasetConfig, ReenactConfig, TrainConfig, load_config
from cgha.dataset import GaussianDataset, MeshDataset, ReenactmentDataset, Subject, make_loader
from cgha.dataset.reenactment_dataset import orbit_viewmat
from cgha.errors import ConfigError, DataError
from cgha.utils.cameras import project_points
from cgha.utils.rotations import axis_angle_to_matrix


def dataset_cfg(root: Path, **changes) -> DatasetConfig:
    cfg = DatasetConfig(dataroot=str(root), original_resolution=64, resolution=32, num_sample_view=2)
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_mesh_dataset_items(tiny_subject):
    dataset = MeshDataset(dataset_cfg(tiny_subject))
    assert len(dataset) == 4
    item = dataset[1]
    assert item["images"].shape == (2, 3, 32, 32) and item["masks"].shape == (2, 1, 32, 32)
    assert item["visibles"].shape == (2, 1, 32, 32) and torch.all(item["visibles"] == 1)
    assert item["intrinsics"].shape == (2, 3, 3) and item["viewmats"].shape == (2, 4, 4)
    assert item["exp_coeff"].shape == (dataset.subject.exp_dim,) and item["pose"].shape == (6,)
    vertices = np.load(tiny_subject / "params" / "0001" / "vertices.npy")
    assert item["landmarks_3d"].shape == (68 + len(vertices[::100]), 3)
    # GHA multiplies mesh-stage images by the mask: nothing outside the silhouette.
    outside = (item["masks"] == 0).expand_as(item["images"])
    assert outside.any() and torch.all(item["images"][outside] == 0)
    assert 0.05 < item["masks"].mean() < 0.95


def test_intrinsics_follow_working_resolution(tiny_subject):
    subject = Subject(dataset_cfg(tiny_subject))
    stored = np.load(tiny_subject / "cameras" / "0000" / "camera_cam00.npz")["intrinsic"]
    K, viewmat = subject.camera_matrices("0000", "cam00", 16)
    np.testing.assert_allclose(K[:2], stored[:2] * 16 / 64, rtol=1e-6)
    np.testing.assert_allclose(K[2], [0, 0, 1])
    # Landmarks of frame 0 project to the same place at any resolution once scaled.
    landmarks = torch.from_numpy(subject.landmarks[0, :68])
    uv_small, _ = project_points(landmarks, torch.from_numpy(viewmat), torch.from_numpy(K))
    uv_full, _ = project_points(landmarks, torch.from_numpy(viewmat), torch.from_numpy(stored.astype(np.float32)))
    torch.testing.assert_close(uv_small * 4, uv_full, rtol=1e-4, atol=1e-3)


def test_gaussian_dataset_composites_on_white(tiny_subject):
    dataset = GaussianDataset(dataset_cfg(tiny_subject), views="all")
    assert len(dataset) == 4 * 4
    item = dataset[5]
    assert item["images"].shape == (3, 32, 32) and item["images_coarse"].shape == (3, 8, 8)
    assert item["masks_coarse"].shape == (1, 8, 8) and item["visibles_coarse"].shape == (1, 8, 8)
    background = item["masks"][0] < 1e-3
    assert background.any() and torch.allclose(item["images"][:, background], torch.ones(1))
    torch.testing.assert_close(item["intrinsics_coarse"][:2], item["intrinsics"][:2] / 4)
    assert int(item["exp_id"]) == 1 and int(item["view_id"]) == 1
    random_views = GaussianDataset(dataset_cfg(tiny_subject), views="random")
    assert len(random_views) == 4 and random_views[0]["images"].shape == (3, 32, 32)


def test_resolution_must_allow_the_coarse_render(tiny_subject):
    with pytest.raises(ConfigError, match="'dataset.resolution' must be divisible by 4"):
        GaussianDataset(dataset_cfg(tiny_subject, resolution=30))


def test_splits_hold_out_cameras_and_frames(tiny_subject):
    cfg = dataset_cfg(tiny_subject, eval_camera_ids=["cam02"], eval_frame_ids=["0003"])
    subject = Subject(cfg)
    train, test_cameras, test_frames = (subject.split(name) for name in ("train", "test_cameras", "test_frames"))
    assert train.cameras == ("cam00", "cam01", "cam03") and train.frames == ("0000", "0001", "0002")
    assert test_cameras.cameras == ("cam02",) and test_cameras.frames == train.frames
    assert test_frames.frames == ("0003",) and test_frames.cameras == train.cameras
    mesh = MeshDataset(cfg)
    assert len(mesh) == 3 and all(mesh.cameras[i] != "cam02" for i in mesh[0]["view_ids"])
    assert len(GaussianDataset(cfg, split="test_cameras", views="all")) == 3


def test_out_of_rig_cameras_are_never_trained_on_and_form_their_own_split(tiny_subject):
    out_of_rig = ("oor00", "oor01", "oor02", "oor03", "oor04")
    for cfg in (dataset_cfg(tiny_subject), dataset_cfg(tiny_subject, split_from_meta=True)):
        subject = Subject(cfg)
        assert subject.out_of_rig_cameras == list(out_of_rig)
        split = subject.split("out_of_rig")
        assert split.cameras == out_of_rig and split.frames == subject.split("test_cameras").frames
        for name in ("train", "test_cameras", "test_frames", "all"):
            assert not set(subject.split(name).cameras) & set(out_of_rig), name
        assert all(MeshDataset(cfg).cameras[i] not in out_of_rig for i in MeshDataset(cfg)[0]["view_ids"])
    # Listing them in the config does the same on a subject whose meta.json does not name them.
    meta = json.loads((tiny_subject / "meta.json").read_text())
    del meta["splits"]["out_of_rig_camera_ids"]
    copy = tiny_subject.parent / "id0_without_out_of_rig_in_meta"
    shutil.copytree(tiny_subject, copy)
    (copy / "meta.json").write_text(json.dumps(meta))
    assert "oor00" in Subject(dataset_cfg(copy)).split("train").cameras
    listed = Subject(dataset_cfg(copy, out_of_rig_camera_ids=["oor01", "oor03"]))
    assert listed.split("out_of_rig").cameras == ("oor01", "oor03") and "oor01" not in listed.split("train").cameras
    with pytest.raises(DataError, match="one split"):
        Subject(dataset_cfg(copy, out_of_rig_camera_ids=["oor01"], eval_camera_ids=["oor01"]))
    shutil.rmtree(copy)


def test_split_from_meta(tiny_subject):
    meta = json.loads((tiny_subject / "meta.json").read_text())
    subject = Subject(dataset_cfg(tiny_subject, split_from_meta=True))
    assert list(subject.eval_frames) == [str(f) for f in meta["splits"]["eval_frame_ids"]]
    assert list(subject.eval_cameras) == [str(c) for c in meta["splits"]["eval_camera_ids"]]


def subject_with_meta(broken: Path, meta) -> Path:
    """The damageable copy of the tiny subject with its meta.json replaced (None: removed)."""
    if meta is None:
        (broken / "meta.json").unlink()
    else:
        (broken / "meta.json").write_text(json.dumps(meta))
    return broken


@pytest.mark.parametrize("meta", [
    {"split": {"test_cameras": ["cam02"], "test_frames": ["0003"]}},
    {"splits": {"test_cameras": ["cam02"], "test_frames": [3]}},
    {"test_camera_ids": ["cam02"], "test_frame_ids": ["0003"], "name": "id0"},
])
def test_split_from_meta_reads_the_common_forms(broken, meta):
    subject = Subject(dataset_cfg(subject_with_meta(broken, meta), split_from_meta=True))
    assert subject.eval_cameras == ["cam02"] and subject.eval_frames == ["0003"]


def test_split_from_meta_fills_only_the_empty_lists(broken):
    root = subject_with_meta(broken, {"split": {"test_cameras": ["cam02"], "test_frames": ["0003"]}})
    subject = Subject(dataset_cfg(root, split_from_meta=True, eval_camera_ids=["cam01"]))
    assert subject.eval_cameras == ["cam01"] and subject.eval_frames == ["0003"]


@pytest.mark.parametrize("meta, message", [
    ({"holdout": {"cams": ["cam02"]}, "generator": "x"}, r"no held-out split under a known key \(it has: "
                                                          r"holdout.cams, generator"),
    ({"splits": {"eval_camera_ids": [], "eval_frame_ids": []}}, "held-out split is empty"),
    ({"split": {"test_cameras": "cam02"}}, "'split.test_cameras' must be a list of ids"),
    (None, "meta.json does not exist"),
])
def test_split_from_meta_that_finds_nothing_is_an_error(broken, meta, message):
    with pytest.raises(DataError, match=message):
        Subject(dataset_cfg(subject_with_meta(broken, meta), split_from_meta=True))


def test_explicit_held_out_lists_need_no_meta(broken):
    root = subject_with_meta(broken, None)
    subject = Subject(dataset_cfg(root, split_from_meta=True, eval_camera_ids=["cam02"], eval_frame_ids=["0003"]))
    assert subject.eval_frames == ["0003"]


def test_octal_looking_frame_ids_are_not_renumbered(tiny_subject):
    # YAML 1.1 reads 0010 as octal 8; the error must name the frame the user wrote.
    bad = load_config(TrainConfig, None, [f"dataset.dataroot={tiny_subject}", "dataset.eval_frame_ids=[0010]",
                                          "dataset.original_resolution=64", "dataset.resolution=32"])
    with pytest.raises(DataError, match=r"names frame\(s\) \['0010'\]"):
        Subject(bad.dataset)


def test_neutral_landmarks_invert_the_head_pose(tiny_subject):
    dataset = MeshDataset(dataset_cfg(tiny_subject))
    subject = dataset.subject
    rotation = axis_angle_to_matrix(torch.from_numpy(subject.pose[0, :3]))
    neutral = dataset.init_landmarks_3d_neutral
    world = subject.scale[0, 0] * neutral @ rotation.T + torch.from_numpy(subject.pose[0, 3:])
    torch.testing.assert_close(world, torch.from_numpy(subject.landmarks[0]), atol=1e-5, rtol=1e-5)


def test_loader_batches_items(tiny_subject):
    dataset = MeshDataset(dataset_cfg(tiny_subject))
    loader = make_loader(dataset, batch_size=2, shuffle=True, num_workers=0, seed=0, device=torch.device("cpu"))
    batch = next(iter(loader))
    assert batch["images"].shape == (2, 2, 3, 32, 32) and batch["exp_id"].shape == (2,)


def test_config_camera_subset_and_sample_view_limit(tiny_subject):
    with pytest.raises(DataError, match=r"no images for camera\(s\) \['cam07'\]"):
        Subject(dataset_cfg(tiny_subject, camera_ids=["cam00", "cam07"]))
    with pytest.raises(ConfigError, match="'dataset.num_sample_view' is 4 but the train split has only 3"):
        MeshDataset(dataset_cfg(tiny_subject, num_sample_view=4, eval_camera_ids=["cam01"]))
    with pytest.raises(DataError, match=r"eval_frame_ids names frame\(s\) \['0099'\]"):
        Subject(dataset_cfg(tiny_subject, eval_frame_ids=["0099"]))


def test_missing_and_truncated_files_are_listed(broken):
    (broken / "images" / "0001" / "mask_cam02.jpg").unlink()
    image = broken / "images" / "0002" / "image_cam01.jpg"
    image.write_bytes(image.read_bytes()[: len(image.read_bytes()) // 2])
    (broken / "images" / "0003" / "image_cam03.jpg").write_text("not an image")
    (broken / "cameras" / "0000" / "camera_cam00.npz").unlink()
    with pytest.raises(DataError) as error:
        Subject(dataset_cfg(broken))
    message = str(error.value)
    assert "4 problem(s)" in message
    assert "images/0001/mask_cam02.jpg: missing" in message
    assert "images/0002/image_cam01.jpg: truncated JPEG" in message
    assert "images/0003/image_cam03.jpg: not a JPEG" in message
    assert "cameras/0000/camera_cam00.npz: missing" in message


def test_wrong_shapes_and_non_finite_values(broken):
    params = dict(np.load(broken / "params" / "0001" / "params.npz"))
    params["pose"] = np.zeros((6,), np.float32)
    np.savez(broken / "params" / "0001" / "params.npz", **params)
    params = dict(np.load(broken / "params" / "0002" / "params.npz"))
    params["exp_coeff"][0, 0] = np.nan
    np.savez(broken / "params" / "0002" / "params.npz", **params)
    np.save(broken / "params" / "0003" / "lmk_3d.npy", np.zeros((67, 3), np.float32))
    camera = dict(np.load(broken / "cameras" / "0000" / "camera_cam01.npz"))
    camera["extrinsic"] = camera["extrinsic"][:, :3]
    np.savez(broken / "cameras" / "0000" / "camera_cam01.npz", **camera)
    with pytest.raises(DataError) as error:
        Subject(dataset_cfg(broken))
    message = str(error.value)
    assert "params/0001/params.npz: 'pose' has shape [6], expected [1, 6]" in message
    assert "params/0002/params.npz: 'exp_coeff' contains NaN/inf" in message
    assert "params/0003/lmk_3d.npy: shape [67, 3], expected [68, 3]" in message
    # Cameras are checked after the parameters; fix those and the camera problem is reported.
    shutil.rmtree(broken / "params")
    with pytest.raises(DataError, match="params/0000/params.npz: missing"):
        Subject(dataset_cfg(broken))


def test_bad_camera_array_is_reported(broken):
    camera = dict(np.load(broken / "cameras" / "0000" / "camera_cam01.npz"))
    camera["extrinsic"] = camera["extrinsic"][:, :3]
    np.savez(broken / "cameras" / "0000" / "camera_cam01.npz", **camera)
    with pytest.raises(DataError, match=r"cameras/0000/camera_cam01.npz: 'extrinsic' has shape \[3, 3\], expected \[3, 4\]"):
        Subject(dataset_cfg(broken))


def test_expression_dimension_must_match_the_config(tiny_subject):
    dim = Subject(dataset_cfg(tiny_subject)).exp_dim
    with pytest.raises(DataError, match=rf"exp_coeff has {dim} coefficients but gaussianheadmodule.exp_coeffs_dim expects {dim + 1}"):
        GaussianDataset(dataset_cfg(tiny_subject), expected_exp_dim=dim + 1, exp_dim_key="gaussianheadmodule.exp_coeffs_dim")


def test_missing_root_and_empty_root(tmp_path):
    with pytest.raises(DataError, match="dataset root not found"):
        Subject(dataset_cfg(tmp_path / "nope"))
    with pytest.raises(DataError, match="has no images/ folder"):
        Subject(dataset_cfg(tmp_path))
    with pytest.raises(DataError, match="dataset.dataroot is empty"):
        Subject(DatasetConfig())


def reenact_cfg(root: Path, **changes) -> DatasetConfig:
    cfg = load_config(ReenactConfig, None, [f"dataset.dataroot={root}", "dataset.original_resolution=64",
                                            "dataset.resolution=32"]).dataset
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_reenactment_dataset_fixed_camera_and_images(tiny_subject):
    cfg = reenact_cfg(tiny_subject, image_files="images/*/image_cam01.jpg",
                      camera_path=str(tiny_subject / "cameras" / "0000" / "camera_cam01.npz"),
                      pose_code_path=str(tiny_subject / "params" / "0000" / "params.npz"))
    dataset = ReenactmentDataset(cfg)
    assert len(dataset) == 4
    item = dataset[2]
    assert item["images"].shape == (3, 32, 32)
    stored = np.load(tiny_subject / "cameras" / "0000" / "camera_cam01.npz")
    np.testing.assert_allclose(item["intrinsics"].numpy()[:2], stored["intrinsic"][:2] / 2, rtol=1e-6)
    np.testing.assert_allclose(item["viewmat"].numpy()[:3], stored["extrinsic"], rtol=1e-6)
    first_pose = np.load(tiny_subject / "params" / "0000" / "params.npz")["pose"][0]
    np.testing.assert_allclose(item["pose_code"].numpy(), first_pose)
    assert not torch.equal(item["pose"], item["pose_code"])


def test_reenactment_freeview_orbits_the_head(tiny_subject):
    dataset = ReenactmentDataset(reenact_cfg(tiny_subject, freeview=True))
    assert "images" not in dataset[0]
    centres = []
    np.testing.assert_allclose(dataset[3]["viewmat"].numpy(), orbit_viewmat(3))
    for index in (0, 10, 30):
        viewmat = torch.from_numpy(orbit_viewmat(index)).double()
        centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
        centres.append(centre)
        # The orbit keeps the head target on the optical axis, 1.2 units away.
        target = torch.tensor([0.0, 0.0, 0.05], dtype=torch.float64)
        in_camera = viewmat[:3, :3] @ target + viewmat[:3, 3]
        torch.testing.assert_close(in_camera, torch.tensor([0.0, 0.0, 1.2], dtype=torch.float64), atol=1e-5, rtol=0)
    assert not torch.allclose(centres[0], centres[2])
    # GHA's default frontal camera: focal 3.5 x width, principal point at the centre.
    K = dataset[0]["intrinsics"]
    torch.testing.assert_close(K[0, 0], torch.tensor(3.5 * 32.0)) and torch.testing.assert_close(K[0, 2], torch.tensor(16.0))


def test_reenactment_errors(tiny_subject):
    dim = Subject(dataset_cfg(tiny_subject)).exp_dim
    with pytest.raises(DataError, match=rf"the driver's exp_coeff has \[{dim}\] coefficients .* is 64"):
        ReenactmentDataset(reenact_cfg(tiny_subject), expected_exp_dim=64)
    with pytest.raises(DataError, match="dataset.image_files 'images/\\*/image_cam09.jpg' matches no file"):
        ReenactmentDataset(reenact_cfg(tiny_subject, image_files="images/*/image_cam09.jpg"))
    with pytest.raises(DataError, match=r"nope\.npz: missing"):
        ReenactmentDataset(reenact_cfg(tiny_subject, camera_path=str(tiny_subject / "nope.npz")))


def test_unquoted_numeric_frame_ids_name_zero_padded_folders(tiny_subject):
    cfg = load_config(TrainConfig, None, [f"dataset.dataroot={tiny_subject}", "dataset.eval_frame_ids=[0003, 2]",
                                          "dataset.original_resolution=64", "dataset.resolution=32"])
    assert cfg.dataset.eval_frame_ids == ["0003", "2"]  # the text written (YAML 1.1 would read 0003 as octal 3)
    assert Subject(cfg.dataset).eval_frames == ["0003", "0002"]  # 2 names the one frame folder numbered 2


def test_subject_accepts_the_trackers_66_landmarks_and_rejects_other_counts(broken):
    root = broken
    files = sorted(root.glob("params/*/lmk_3d.npy"))
    for path in files:  # Multiview-3DMM-Fitting's order: iBUG-68 without the mouth corners 48 and 54
        lmk = np.load(path)
        np.save(path, np.concatenate([lmk[:48], lmk[49:54], lmk[55:]]))
    subject = Subject(DatasetConfig(dataroot=str(root), original_resolution=64, resolution=64))
    vertices = len(np.load(root / "params" / "0000" / "vertices.npy")[::100])
    assert subject.landmarks.shape[1:] == (66 + vertices, 3)
    assert subject.neutral_landmarks().shape == (66 + vertices, 3)
    np.save(files[1], np.load(files[1])[:60])
    with pytest.raises(DataError, match=r"lmk_3d.npy: shape \[60, 3\], expected \[68, 3\] \(iBUG-68\) or \[66, 3\]"):
        Subject(DatasetConfig(dataroot=str(root), original_resolution=64, resolution=64))
