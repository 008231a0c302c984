"""Reenactment (raw and compact avatars, frames + mp4, free view, smoothing, errors) and the 3DGS .ply export."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from cgha.apps.export_ply import PROPERTIES, SH_C0, export_gaussians_ply, read_gaussians_ply
from cgha.apps.reenactment import Reenactment, smooth_sequence
from cgha.compact.avatar_file import save_compact_avatar
from cgha.avatar.gaussians import Gaussians
from cgha.avatar.inference import render_gaussians
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec
from cgha.config import ReenactConfig, TrainConfig, load_config
from cgha.errors import CheckpointError, ConfigError, DataError
from cgha.module.gaussian_head import GAUSSIAN_FEATURE_DIM, GaussianHeadModule
from cgha.module.super_resolution import SuperResolutionModule
from cgha.recorder.checkpoint import save_atomic
from cgha.utils.image_io import read_rgb

ROOT = Path(__file__).resolve().parents[1]
TRAIN_CONFIG = ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml"
REENACT_CONFIG = ROOT / "config" / "reenactment_synthetic_demo.yaml"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def avatar(tmp_path_factory) -> dict:
    """An untrained tiny avatar (Gaussians on a unit sphere, random MLPs and super-resolution net) whose
    scale/rotation and feature already equal their codebook rows, saved raw and compact, so both files hold the
    same model up to the compact file's fp16 / 8-bit storage. Built directly rather than from a sphere-pretrained
    mesh head: reenactment only needs a valid avatar, and pretraining would dominate this file's run time."""
    cfg = load_config(TrainConfig, TRAIN_CONFIG, ["compact.codebook_size=64"], stage="gaussianhead")
    generator = torch.Generator().manual_seed(0)
    count = 1500
    # Fibonacci sphere: evenly spread points, so the initial scales (from neighbour spacing) are uniform.
    index = torch.arange(count, dtype=torch.float32) + 0.5
    height = 1.0 - 2.0 * index / count
    angle = index * torch.pi * (3.0 - 5.0 ** 0.5)
    ring = (1.0 - height ** 2).sqrt()
    xyz = torch.stack([ring * torch.cos(angle), height, ring * torch.sin(angle)], -1)
    landmarks = torch.randn(68, 3, generator=generator) * 0.25 + torch.tensor([0.0, 0.0, 0.9])
    feature = torch.randn(count, GAUSSIAN_FEATURE_DIM, generator=generator) * 0.5
    torch.manual_seed(0)
    module = GaussianHeadModule(cfg.gaussianheadmodule, xyz, feature, landmarks)
    supres = SuperResolutionModule(cfg.supresmodule)
    quantizer = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(GaussianHeadModule), seed=0)
    with torch.no_grad():
        attributes = {key: value.detach() for key, value in module.canonical_attributes().items()}
        quantizer.initialise(attributes)
        for key, value in quantizer.quantized_attributes(attributes).items():
            getattr(module, key).copy_(value)
    out = tmp_path_factory.mktemp("avatar")
    save_atomic(module.state_dict(), out / "gaussianhead_latest")
    save_atomic(supres.state_dict(), out / "supres_latest")
    save_compact_avatar(out / "avatar.cgha", module, supres, quantizer, cfg.compact.store)
    return {"dir": out, "num_gaussians": module.num_gaussians}


def reenact_config(subject: Path, avatar: dict, out: Path, *extra: str, compact: bool = False) -> ReenactConfig:
    head = avatar["dir"] / ("avatar.cgha" if compact else "gaussianhead_latest")
    overrides = [f"load_gaussianhead_checkpoint={head}", f"load_supres_checkpoint={avatar['dir'] / 'supres_latest'}",
                 f"dataset.dataroot={subject}", "dataset.image_files=images/*/image_cam01.jpg",
                 f"dataset.camera_path={subject / 'cameras' / '0000' / 'camera_cam01.npz'}", "dataset.pose_code_path=''",
                 "dataset.pose_transfer=absolute",
                 "dataset.freeview=false", "dataset.original_resolution=64", "dataset.resolution=64",
                 "render.backend=torch", "device=cpu", f"recorder.result_path={out}", "recorder.name=run", *extra]
    return load_config(ReenactConfig, REENACT_CONFIG, overrides, stage="reenactment")


def coverage(app: Reenactment, index: int) -> float:
    """Fraction of frame `index`'s 1/4-resolution render that is not the white background (the avatar is in view)."""
    item = app.dataset[index]
    intrinsics = item["intrinsics"][None].clone()
    intrinsics[:, :2] /= 4
    render = render_gaussians(app.generate(index), item["viewmat"][None], intrinsics, app.render_size, "torch")
    return ((render - 1.0).abs().amax(1) > 0.05).float().mean().item()


def test_raw_avatar_writes_side_by_side_frames_and_video(tiny_subject, avatar, tmp_path):
    cfg = reenact_config(tiny_subject, avatar, tmp_path)
    app = Reenactment(cfg, CPU)
    assert app.render_size == 16
    result = app.run(progress=False)
    frames = sorted((tmp_path / "run" / "frames").glob("*.png"))
    assert result["frames"] == 4 and [f.name for f in frames] == [f"{i:06d}.png" for i in range(4)]
    first = read_rgb(frames[0])
    assert first.shape == (64, 128, 3)
    # The left half is the driver's image (PNG is lossless up to the uint8 rounding).
    driver = read_rgb(tiny_subject / "images" / sorted(p.name for p in (tiny_subject / "images").iterdir())[0]
                      / "image_cam01.jpg", 64)
    assert np.abs(first[:, :64] - driver).max() <= 1 / 255 + 1e-6
    assert result["video"] == tmp_path / "run" / "run.mp4" and result["fps"] > 0
    video = imageio.mimread(result["video"])
    assert len(video) == 4 and video[0].shape == (64, 128, 3)
    assert not list((tmp_path / "run").glob(".*partial*"))


def test_compact_avatar_matches_raw(tiny_subject, avatar, tmp_path):
    raw = Reenactment(reenact_config(tiny_subject, avatar, tmp_path / "raw"), CPU)
    # A compact file brings its own super-resolution net: a missing load_supres_checkpoint does not matter.
    compact = Reenactment(reenact_config(tiny_subject, avatar, tmp_path / "compact", "load_supres_checkpoint=''",
                                         compact=True), CPU)
    assert compact.model.num_gaussians == avatar["num_gaussians"]
    assert coverage(raw, 0) > 0.1
    for index in (0, 3):
        expected, _ = raw.render_frame(index)
        image, _ = compact.render_frame(index)
        assert expected.shape == image.shape == (1, 3, 64, 64)
        assert (image - expected).abs().mean() < 5e-3 and (image - expected).abs().max() < 0.1


def test_freeview_frontal_camera_and_smoothing(tiny_subject, avatar, tmp_path):
    freeview = Reenactment(reenact_config(tiny_subject, avatar, tmp_path / "free", "dataset.freeview=true",
                                          "dataset.camera_path=''"), CPU)
    result = freeview.run(progress=False)
    assert result["frames"] == 4
    # GHA's free view: the head pose is zeroed so the head sits where the orbit looks; the camera moves.
    assert torch.count_nonzero(freeview.driving["pose"]) == 0
    assert coverage(freeview, 0) > 0.1 and coverage(freeview, 3) > 0.1
    assert not torch.equal(freeview.dataset[0]["viewmat"], freeview.dataset[3]["viewmat"])
    video = imageio.mimread(result["video"])
    assert len(video) == 4 and not np.array_equal(video[0], video[3])

    frontal = Reenactment(reenact_config(tiny_subject, avatar, tmp_path / "front", "dataset.camera_path=''",
                                         "dataset.image_files=''", "dataset.smoothing=0"), CPU)
    image, _ = frontal.render_frame(1)
    assert image.shape == (1, 3, 64, 64)
    assert torch.equal(frontal.driving["exp_coeff"], frontal.dataset.exp_coeff.float())
    assert torch.equal(frontal.driving["pose"], frontal.dataset.pose.float())
    assert frontal.run(progress=False)["frames"] == 4
    assert read_rgb(tmp_path / "front" / "run" / "frames" / "000000.png").shape == (64, 64, 3)

    values = torch.tensor([[0.0], [1.0], [1.0]])
    torch.testing.assert_close(smooth_sequence(values, 0.5), torch.tensor([[0.0], [0.5], [0.75]]))
    torch.testing.assert_close(smooth_sequence(values, 0.0), values)


def test_errors(tiny_subject, avatar, tmp_path):
    with pytest.raises(CheckpointError, match="load_supres_checkpoint"):
        Reenactment(reenact_config(tiny_subject, avatar, tmp_path, "load_supres_checkpoint=''"), CPU)
    with pytest.raises(CheckpointError, match="not found"):
        Reenactment(reenact_config(tiny_subject, avatar, tmp_path, f"load_supres_checkpoint={tmp_path / 'none'}"), CPU)
    with pytest.raises(DataError, match="does not exist"):
        Reenactment(reenact_config(tiny_subject, avatar, tmp_path), CPU).export_ply(4)
    # The exp-dim mismatch through the entry script: GHA's subject-031 config (64 coefficients) on a 16-dim driver.
    result = subprocess.run([sys.executable, "reenactment.py", "--config", str(ROOT / "config" / "reenactment_N031.yaml"),
                             f"dataset.dataroot={tiny_subject}", "dataset.image_files=''", "dataset.camera_path=''",
                             "dataset.pose_code_path=''", "device=cpu", f"recorder.result_path={tmp_path}"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "exp_coeff has [16] coefficients" in result.stderr
    assert "gaussianheadmodule.exp_coeffs_dim is 64" in result.stderr


def test_ply_export_header_fields_and_round_trip(tiny_subject, avatar, tmp_path):
    app = Reenactment(reenact_config(tiny_subject, avatar, tmp_path), CPU)
    path = app.export_ply(2)
    assert path == tmp_path / "run" / "frame_000002.ply"
    data = path.read_bytes()
    header = data[:data.index(b"end_header\n") + len(b"end_header\n")].decode("ascii").splitlines()
    count = avatar["num_gaussians"]
    assert header[:3] == ["ply", "format binary_little_endian 1.0", f"element vertex {count}"]
    assert header[3:-1] == [f"property float {name}" for name in PROPERTIES] and header[-1] == "end_header"
    assert len(data) == len("\n".join(header)) + 1 + count * 4 * len(PROPERTIES)

    generated = app.generate(2)
    stored = read_gaussians_ply(path)
    assert list(stored) == list(PROPERTIES)

    def column(*names):
        return torch.from_numpy(np.stack([stored[name] for name in names], -1))

    torch.testing.assert_close(column("x", "y", "z"), generated.means[0])
    torch.testing.assert_close(0.5 + SH_C0 * column("f_dc_0", "f_dc_1", "f_dc_2"), generated.features[0, :, :3])
    torch.testing.assert_close(torch.sigmoid(column("opacity"))[:, 0], generated.opacities[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.exp(column("scale_0", "scale_1", "scale_2")), generated.scales[0])
    torch.testing.assert_close(column("rot_0", "rot_1", "rot_2", "rot_3"), generated.quats[0])
    assert np.all(column("nx", "ny", "nz").numpy() == 0)

    # The CLI flag writes the same file next to the frames.
    cli = subprocess.run([sys.executable, "reenactment.py", "--config", str(REENACT_CONFIG), "--export-ply", "1",
                          *[f"{k}={v}" for k, v in (
                              ("load_gaussianhead_checkpoint", avatar["dir"] / "avatar.cgha"),
                              ("dataset.dataroot", tiny_subject), ("dataset.image_files", "''"),
                              ("dataset.camera_path", "''"), ("dataset.pose_code_path", "''"),
                              ("dataset.pose_transfer", "absolute"),
                              ("dataset.original_resolution", 64), ("dataset.resolution", 64),
                              ("render.backend", "torch"), ("device", "cpu"), ("recorder.result_path", tmp_path / "cli"),
                              ("recorder.name", "run"))]],
                         cwd=ROOT, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    assert len(read_gaussians_ply(tmp_path / "cli" / "run" / "frame_000001.ply")["x"]) == count
    assert len(imageio.mimread(tmp_path / "cli" / "run" / "run.mp4")) == 4


def test_export_rejects_bad_shapes(tmp_path):
    def gaussians(channels: int) -> Gaussians:
        return Gaussians(means=torch.zeros(1, 5, 3), quats=torch.tensor([1.0, 0, 0, 0]).expand(1, 5, 4),
                         scales=torch.ones(1, 5, 3), opacities=torch.full((1, 5), 0.5),
                         features=torch.zeros(1, 5, channels))

    with pytest.raises(ValueError, match="3 channels"):
        export_gaussians_ply(tmp_path / "x.ply", gaussians(2))
    with pytest.raises(ValueError, match="quats must be"):
        Gaussians(means=torch.zeros(1, 5, 3), quats=torch.zeros(1, 5, 3), scales=torch.ones(1, 5, 3),
                  opacities=torch.full((1, 5), 0.5), features=torch.zeros(1, 5, 3))
    with pytest.raises(DataError, match="batch item"):
        export_gaussians_ply(tmp_path / "x.ply", gaussians(32), index=1)
    assert not (tmp_path / "x.ply").exists()


def moved_driver(subject: Path, target: Path, scale_factor: float, offset) -> Path:
    """A copy of `subject` whose head is `scale_factor` larger and sits `offset` away, making the same motion at its
    own size: the same rotations, translations since the first frame `scale_factor` larger."""
    shutil.copytree(subject, target)
    paths = sorted(target.glob("params/*/params.npz"))
    first = np.load(paths[0])["pose"][0, 3:].copy()
    for path in paths:
        params = dict(np.load(path))
        params["scale"] = params["scale"] * scale_factor
        params["pose"] = params["pose"].copy()
        translation = params["pose"][0, 3:]
        params["pose"][0, 3:] = first + np.asarray(offset) + scale_factor * (translation - first)
        np.savez(path, **params)
    return target


def test_relative_pose_transfer_keeps_the_avatars_own_scale_and_place(tiny_subject, avatar, tmp_path):
    """Driven by a 1.25x larger head somewhere else making the same motion, the avatar renders as when driven by its
    own subject (before: 1.25x too large and displaced, as with pose_transfer=absolute)."""
    driver = moved_driver(tiny_subject, tmp_path / "driver", 1.25, [0.02, -0.01, 0.03])
    reference = tiny_subject / "params" / "0000" / "params.npz"
    relative = ("dataset.pose_transfer=relative", f"dataset.pose_code_path={reference}")
    own = Reenactment(reenact_config(tiny_subject, avatar, tmp_path / "own", *relative), CPU)
    other = Reenactment(reenact_config(driver, avatar, tmp_path / "other", *relative), CPU)
    for index in range(len(own)):
        own_image, own_gaussians = own.render_frame(index)
        other_image, other_gaussians = other.render_frame(index)
        torch.testing.assert_close(other_gaussians.means, own_gaussians.means, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(other_image, own_image, atol=1e-4, rtol=0)
    reference_scale = float(np.load(reference)["scale"][0])
    assert torch.all(other.driving["scale"] == reference_scale)

    absolute = Reenactment(reenact_config(driver, avatar, tmp_path / "absolute", "dataset.pose_transfer=absolute",
                                          f"dataset.pose_code_path={reference}"), CPU)

    def size(gaussians) -> float:
        means = gaussians.means[0]
        return float((means - means.mean(0)).norm(dim=-1).mean())

    assert size(absolute.render_frame(0)[1]) / size(own.render_frame(0)[1]) == pytest.approx(1.25, rel=1e-4)


def test_relative_pose_transfer_moves_the_avatar_as_the_driver_moved():
    """Frame 0 lands on the avatar's reference; later frames carry the driver's rotation since frame 0 and its
    translation since frame 0 rescaled to the avatar's size."""
    from cgha.apps.pose_transfer import relative_pose_transfer
    from cgha.utils.rotations import axis_angle_to_matrix

    driver = torch.tensor([[0.1, 0.2, 0.0, 0.01, 0.02, 0.0], [0.1, 0.5, 0.0, 0.03, 0.02, 0.01]])
    scale = torch.tensor([[0.2], [0.2]])
    reference = torch.tensor([0.0, -0.3, 0.1, 0.5, 0.0, -0.2])
    pose, new_scale = relative_pose_transfer(driver, scale, reference, 0.1)
    torch.testing.assert_close(pose[0], reference, atol=1e-6, rtol=0)
    assert torch.all(new_scale == 0.1)
    since_first = axis_angle_to_matrix(driver[1:, :3])[0] @ axis_angle_to_matrix(driver[:1, :3])[0].T
    torch.testing.assert_close(axis_angle_to_matrix(pose[1:, :3])[0],
                               since_first @ axis_angle_to_matrix(reference[None, :3])[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(pose[1, 3:], reference[3:] + 0.5 * (driver[1, 3:] - driver[0, 3:]), atol=1e-7, rtol=0)


def test_relative_transfer_without_a_reference_says_what_to_set(tiny_subject, avatar, tmp_path):
    with pytest.raises(ConfigError, match="records no neutral pose.*dataset.pose_code_path.*pose_transfer=absolute"):
        Reenactment(reenact_config(tiny_subject, avatar, tmp_path, "dataset.pose_transfer=relative"), CPU)


def driver_with_basis(subject: Path, target: Path, basis) -> Path:
    """A copy of `subject` whose meta.json records `basis` (None: records none, as GHA's subjects)."""
    shutil.copytree(subject, target)
    meta = json.loads((target / "meta.json").read_text())
    meta.pop("expression_names", None)
    meta.pop("expression_basis", None)
    if basis is not None:
        meta["expression_basis"] = basis
    (target / "meta.json").write_text(json.dumps(meta))
    return target


def test_a_driver_in_another_expression_basis_is_refused(tiny_subject, avatar, tmp_path):
    """Same dimension, other meaning: before, only the dimension was checked and such codes drove the avatar."""
    own = json.loads((tiny_subject / "meta.json").read_text())["expression_basis"]
    reordered = {"model": own["model"], "names": own["names"][1:] + own["names"][:1]}
    reference = f"dataset.pose_code_path={tiny_subject / 'params' / '0000' / 'params.npz'}"
    cases = {"reordered": reordered, "other_model": {"model": "flame-2020", "names": own["names"]}, "unrecorded": None}
    for name, basis in cases.items():
        driver = driver_with_basis(tiny_subject, tmp_path / name, basis)
        with pytest.raises(DataError, match=r"expression basis .* but the avatar was trained with .*"
                                            r"cgha.synthetic.expression-v1.*allow_basis_mismatch=true"):
            Reenactment(reenact_config(driver, avatar, tmp_path / f"out_{name}", reference), CPU)
        allowed = Reenactment(reenact_config(driver, avatar, tmp_path / f"ok_{name}", reference,
                                             "dataset.allow_basis_mismatch=true"), CPU)
        assert len(allowed) == 4
    assert len(Reenactment(reenact_config(tiny_subject, avatar, tmp_path / "same", reference), CPU)) == 4
