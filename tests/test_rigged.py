"""The rigged avatar (cgha/rigged): the subject's shape fit, Gaussians following the face-model mesh, binding-aware
densification, bad subjects, and a tiny run end to end through train_gaussianhead.py with reenactment and export."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cgha.config import ReenactConfig, TrainConfig, load_config
from cgha.errors import ConfigError, DataError
from cgha.rigged.binding import triangle_frames
from cgha.rigged.densify import BindingDensifier, SPLIT_SHRINK
from cgha.rigged.model import RiggedAvatar, decode_binding

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
SMALL_FACE_MODEL = ["model.options.face_model_samples=6", "model.options.face_model_components=5"]


pytestmark = pytest.mark.usefixtures("small_face_model_cache")


def rigged_overrides(subject: Path, out: Path, *extra: str):
    return [f"dataset.dataroot={subject}", "dataset.original_resolution=64", "dataset.resolution=64",
            "dataset.num_workers=0", "device=cpu", "render.backend=torch", *SMALL_FACE_MODEL,
            "model.options.initial_faces=1000", "train.max_iters=30", "eval.max_images=4", "model.options.densify_from=10",
            "model.options.densify_every=10", "model.options.densify_until=20", "compact.start_iter=25",
            "compact.codebook_size=32", "compact.assign_every=10", f"recorder.checkpoint_path={out}/ck",
            "recorder.name=rigged", f"recorder.logdir={out}/log", f"recorder.result_path={out}/res",
            "recorder.log_freq=1", "recorder.show_freq=1000", *extra]


def rigged_config(subject: Path, out: Path, *extra: str) -> TrainConfig:
    return load_config(TrainConfig, ROOT / "config" / "train_rigged_synthetic_demo.yaml",
                       rigged_overrides(subject, out, *extra), stage="gaussianhead")


@pytest.fixture(scope="module")
def model(tiny_subject, tmp_path_factory):
    return RiggedAvatar.initialise(rigged_config(tiny_subject, tmp_path_factory.mktemp("m")), CPU)


def _frame(subject: Path, index: int):
    frame = sorted(p.name for p in (subject / "params").iterdir())[index]
    params = np.load(subject / "params" / frame / "params.npz")
    return (torch.from_numpy(params["exp_coeff"]), torch.from_numpy(params["pose"]),
            torch.from_numpy(params["scale"]).reshape(1, 1), np.load(subject / "params" / frame / "vertices.npy"))


def test_the_fitted_mesh_reproduces_the_tracked_mesh(model, tiny_subject):
    exp, pose, scale, tracked = _frame(tiny_subject, 0)
    verts = model.mesh(exp, pose, scale)[0].detach().numpy()
    size = np.ptp(tracked, axis=0).max()
    assert np.abs(verts - tracked).max() < 0.05 * size
    assert np.linalg.norm(verts - tracked, axis=-1).mean() < 0.003 * size
    # One Gaussian at the centre of each chosen triangle: its triangle's centroid.
    gaussians = model.generate(exp, pose, scale)
    faces = model.face_model(CPU).faces
    centroids = torch.from_numpy(tracked)[faces[model.triangles()]].mean(1)
    assert (gaussians.means[0] - centroids).norm(dim=-1).mean() < 0.003 * size


def test_gaussians_follow_the_face_model_mesh_for_new_expressions(model):
    """Reenactment drives the mesh with anyone's codes: the bound Gaussians sit where the mesh puts them."""
    with torch.no_grad():
        model.xyz.copy_(torch.randn_like(model.xyz) * 0.3)
    exp = torch.zeros(2, 16)
    exp[1, 0] = 1.0  # jaw open
    pose = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [0.1, 0.4, 0.0, 0.02, 0.0, 0.1]])
    scale = torch.full((2, 1), 0.25)
    gaussians = model.generate(exp, pose, scale)
    frames = triangle_frames(model.mesh(exp, pose, scale), model.face_model(CPU).faces)
    binding = model.triangles()
    expected = frames.origin[:, binding] + frames.scale[:, binding, None] * (
        frames.rotation[:, binding] @ model.xyz[None, :, :, None])[..., 0]
    assert torch.allclose(gaussians.means, expected, atol=1e-5)
    moved = (gaussians.means[1] - gaussians.means[0]).norm(dim=-1)
    jaw = model.face_model(CPU).canonical_vertices(model.identity, exp)
    assert moved.max() > 0.01 and (jaw[1] - jaw[0]).norm(dim=-1).max() > 0.01
    with torch.no_grad():
        model.xyz.zero_()


def test_densification_inherits_bindings(tiny_subject, tmp_path):
    cfg = rigged_config(tiny_subject, tmp_path, "model.options.initial_faces=40")
    model = RiggedAvatar.initialise(cfg, CPU)
    optimizer = torch.optim.Adam([p for params, _ in model.parameter_groups(0.0) for p in params], lr=1e-3)
    with torch.no_grad():
        model.binding = model.binding[torch.arange(40) // 2]   # two Gaussians per triangle
        model.scales[:10] = np.log(3.0)            # large: split
        model.opacity[[21, 23, 25]] = -10.0        # transparent, their partners are not: pruned
        model.opacity[[30, 31]] = -10.0            # a whole triangle transparent: kept (every triangle keeps one)
        model.xyz[:] = torch.randn(40, 3) * 0.1
    densifier = BindingDensifier.from_config(model.cfg, cfg)
    grad = torch.zeros(40, 3)
    grad[:15] = 1.0                                # 0..9 split, 10..14 cloned
    model.xyz.grad = grad
    densifier.accumulate(model)
    before = {name: value.detach().clone() for name, value in model.canonical_attributes().items()}
    triangles = model.triangles().clone()
    counts = densifier.densify(model, optimizer, None, iteration=cfg.model.options["densify_from"])
    kept = torch.tensor(list(range(10, 21)) + [22, 24] + list(range(26, 40)))
    assert counts == {"cloned": 5, "split": 10, "pruned": 3, "num_gaussians": 27 + 5 + 20}
    after = model.triangles()
    assert torch.equal(after[:27], triangles[kept])
    assert torch.equal(after[27:32], triangles[10:15])                     # clones: parents' triangles
    assert torch.equal(after[32:42], triangles[:10]) and torch.equal(after[42:], triangles[:10])  # children
    assert torch.equal(model.xyz[27:32], before["xyz"][10:15])
    assert torch.allclose(model.scales[32:], before["scales"][:10].repeat(2, 1) - np.log(SPLIT_SHRINK))
    assert torch.equal(model.color[32:42], before["color"][:10])
    assert not torch.equal(model.xyz[32:42], model.xyz[42:])               # two different children
    optimised = {id(q) for group in optimizer.param_groups for q in group["params"]}
    assert all(id(p) in optimised for p in model.parameters())
    assert decode_binding(model.binding).equal(after) and model.binding.shape == (52, 2)


def test_bad_subjects_get_one_clear_error(broken, tmp_path):
    (broken / "faces.npy").unlink()
    with pytest.raises(DataError, match=r"faces.npy: missing; the rigged avatar binds"):
        RiggedAvatar.initialise(rigged_config(broken, tmp_path), CPU)
    np.save(broken / "faces.npy", np.array([[0, 1, 999999]]))
    with pytest.raises(DataError, match=r"faces.npy: face indices span \[0, 999999\] but the mesh has 16002"):
        RiggedAvatar.initialise(rigged_config(broken, tmp_path), CPU)
    np.save(broken / "faces.npy", np.array([[0, 1, 2]]))
    with pytest.raises(ConfigError, match=r"1 triangles that are not the face model's \(32000\)"):
        RiggedAvatar.initialise(rigged_config(broken, tmp_path), CPU)


def test_config_errors_name_the_key(tiny_subject, tmp_path):
    with pytest.raises(ConfigError, match=r"'points' edits canonical positions"):
        rigged_config(tiny_subject, tmp_path, "points.every=10")
    with pytest.raises(ConfigError, match=r"color_channels' is 3 but the super-resolution net takes"):
        rigged_config(tiny_subject, tmp_path, "model.post_render=super_resolution")
    with pytest.raises(ConfigError, match=r"addons.smart_densification.*'gha' avatar model does not"):
        load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_synthetic_demo.yaml",
                    ["addons.smart_densification=true"], stage="gaussianhead")


def test_tiny_rigged_run_end_to_end(tiny_subject, tmp_path):
    from cgha.apps.reenactment import Reenactment
    from cgha.avatar.inference import load_avatar, render_frame
    from cgha.recorder.run_files import RunFiles

    overrides = rigged_overrides(tiny_subject, tmp_path, "addons.region_weights=true",
                                 "addons.smart_densification=true", "addons.color_calibration=true")
    done = subprocess.run([sys.executable, str(ROOT / "train_gaussianhead.py"), "--config",
                           str(ROOT / "config" / "train_rigged_synthetic_demo.yaml"), *overrides],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test_cameras_psnr" in done.stdout and "rigged densification at iteration 10" in done.stderr
    cfg = rigged_config(tiny_subject, tmp_path)
    run = RunFiles.of(cfg)
    assert run.compact.is_file() and run.checkpoint("gaussianhead").is_file()
    log = (tmp_path / "log" / "metrics.jsonl").read_text()
    assert '"loss_position"' in log and '"loss_scale"' in log and '"loss_color_calibration"' in log

    compact = load_avatar(load_config(TrainConfig, ROOT / "config" / "train_rigged_synthetic_demo.yaml",
                                      rigged_overrides(tiny_subject, tmp_path, f"load_gaussianhead_checkpoint="
                                                       f"{run.compact}"), stage="evaluate"), CPU)
    raw = load_avatar(cfg, CPU, run)
    assert isinstance(compact.model, RiggedAvatar) and compact.model.num_gaussians == raw.model.num_gaussians
    assert torch.equal(torch.sort(compact.model.triangles())[0], torch.sort(raw.model.triangles())[0])
    exp, pose, scale, _ = _frame(tiny_subject, 1)
    viewmat = torch.eye(4)[None]
    viewmat[0, 2, 3] = 1.0
    K = torch.tensor([[[90.0, 0, 32], [0, 90.0, 32], [0, 0, 1]]])
    images = [render_frame(a.model, a.post_render, exp, pose, scale, viewmat, K, 64, "torch").image
              for a in (raw, compact)]
    assert (images[0] - images[1]).abs().mean() < 0.02 and images[0].std() > 0.01

    reenact = load_config(ReenactConfig, ROOT / "config" / "reenactment_synthetic_demo.yaml",
                          ["model.kind=rigged", "model.post_render=none", f"load_gaussianhead_checkpoint={run.compact}",
                           f"dataset.dataroot={tiny_subject}", "dataset.image_files=images/*/image_cam01.jpg",
                           "dataset.original_resolution=64", "dataset.resolution=64", "dataset.freeview=false",
                           f"dataset.camera_path={tiny_subject / 'cameras' / '0000' / 'camera_cam01.npz'}",
                           "dataset.pose_code_path=''", "device=cpu", "render.backend=torch",
                           f"recorder.result_path={tmp_path}/reenact", "recorder.name=rigged"], stage="reenactment")
    result = Reenactment(reenact, CPU).run(export_ply=0, progress=False)
    assert result["frames"] == 4 and result["video"].is_file() and result["ply"].is_file()
