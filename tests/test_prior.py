"""The Gaussian prior (cgha/prior): the fitted avatar renders as the prior decodes it and survives its checkpoint
and the compressed file; latent inversion recovers a training identity's code; a fitted avatar goes through
evaluation and reenactment unchanged; bad input gets one clear error."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cgha.apps.evaluation import evaluate_avatar
from cgha.apps.reenactment import Reenactment
from cgha.compact.avatar_file import load_compact_avatar, save_compact_avatar
from cgha.compact.config import CompactStoreConfig
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec
from cgha.config import ReenactConfig, TrainConfig, load_config
from cgha.errors import CheckpointError, ConfigError, DataError
from cgha.prior.avatar import PriorAvatar
from cgha.prior.config import OneShotSection, PriorConfig, PriorModelConfig, load_prior_config
from cgha.prior.data import load_views, open_subject
from cgha.prior.fit import check_compatible, fit_avatar, invert_latent, load_prior, write_fitted_avatar
from cgha.prior.geometry import fit_identity_code, load_face_model
from cgha.prior.model import GaussianPrior
from cgha.prior.train import PriorObjective
from cgha.recorder.checkpoint import save_atomic
from cgha.prior.photos import check_photos, track_photos
from cgha.avatar.inference import render_gaussians
from cgha.avatar.post_render import NoPostRender
from cgha.tracking.pipeline import TrackOptions

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
SAMPLES, COMPONENTS = 6, 5  # the small face model tests/test_tracking_face_model.py builds (shared cache)


@pytest.fixture(scope="session")
def face(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "face_model_cache"
    cache.mkdir(exist_ok=True)
    os.environ["CGHA_CACHE_DIR"] = str(cache)
    return load_face_model(SAMPLES, COMPONENTS, cache)


def tiny_prior(face, identities: int = 3, seed: int = 0, identity_source: str = "codes") -> GaussianPrior:
    """A prior of 600 Gaussians whose decoders are perturbed away from their zero start, so that the latent changes
    every attribute (what an untrained prior does not)."""
    face_model, geometry = face
    cfg = PriorModelConfig(num_gaussians=600, embedding_dim=8, latent_dim=4, hidden_dim=32, static_layers=2,
                           dynamic_layers=1, face_model_samples=SAMPLES, face_model_components=COMPONENTS, seed=seed,
                           identity_source=identity_source, encoder_width=8, encoder_resolution=32)
    generator = torch.Generator().manual_seed(seed)
    codes = 0.5 * torch.randn(identities, face_model.num_identity, generator=generator)
    meta = {"identities": [f"id{i}" for i in range(identities)], "face_model": face_model.meta(), "resolution": 32}
    prior = GaussianPrior.create(cfg, geometry, codes, meta)
    with torch.no_grad():
        for name, value in prior.named_parameters():
            value.add_(0.3 * torch.randn(value.shape, generator=generator))
    return prior


def test_avatar_renders_as_the_prior_and_survives_its_files(face, tiny_subject, tmp_path):
    prior = tiny_prior(face)
    views = load_views(tiny_subject, 32)
    batch = views.batch(torch.arange(4), CPU)
    with torch.no_grad():
        expected = prior.identity_gaussians(prior.latents[1], prior.shape_codes[1], batch["exp"], batch["pose"],
                                            batch["scale"])
        avatar = PriorAvatar.from_prior(prior, prior.latents[1], prior.shape_codes[1])
        got = avatar.generate(batch["exp"], batch["pose"], batch["scale"])
        torch.testing.assert_close(got.means, expected.means, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.scales, expected.scales, atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(got.features, expected.features)
        # q and -q are one rotation
        assert float((got.quats * expected.quats).sum(-1).abs().min()) > 1 - 1e-5
        reference = render_gaussians(got, batch["viewmats"], batch["Ks"], 32, "torch")

        state = avatar.state_dict()
        reloaded = PriorAvatar.from_state_dict(avatar.cfg, state)
        reloaded.load_state_dict(state)
        assert torch.equal(reloaded.generate(batch["exp"], batch["pose"], batch["scale"]).means, got.means)

        # The compressed file (Morton-reordered Gaussians, fp16 positions, codebooks) keeps each Gaussian on its
        # triangle (the anchor), so the render barely changes.
        quantizer = GroupedQuantizer(["scale_rot", "color", "feature"], GroupSpec.of(avatar), codebook_size=256)
        quantizer.initialise({k: v.detach() for k, v in avatar.canonical_attributes().items()})
        path = tmp_path / "avatar.cgha"
        save_compact_avatar(path, avatar, NoPostRender(3), quantizer, CompactStoreConfig())
        compact, _, metadata = load_compact_avatar(path, CPU)
        assert isinstance(compact, PriorAvatar) and metadata["model"] == "prior"
        render = render_gaussians(compact.generate(batch["exp"], batch["pose"], batch["scale"]), batch["viewmats"],
                                  batch["Ks"], 32, "torch")
    mse = float((render - reference).square().mean())
    assert -10 * np.log10(mse) > 25, mse


def test_latent_inversion_recovers_a_training_code(face, tiny_subject):
    prior = tiny_prior(face, identities=3, seed=1)
    for parameter in prior.parameters():
        parameter.requires_grad_(False)
    views = load_views(tiny_subject, 32, frames=["0000", "0002"], cameras=["cam01"])
    target = 1
    with torch.no_grad():
        truth = prior.identity_gaussians(prior.latents[target], prior.shape_codes[target], views.exp, views.pose,
                                         views.scale)
        views.images = (render_gaussians(truth, views.viewmats, views.Ks, 32, "torch") * 255).round().to(torch.uint8)
    fit = OneShotSection(invert_steps=60, invert_lr=0.1, latent_weight=0.0)
    latent, loss = invert_latent(prior, prior.shape_codes[target], views, fit, "torch", progress=False)
    distances = (prior.latents - latent).norm(dim=-1)
    start = (prior.latents[target] - prior.latents.mean(0)).norm()
    assert int(distances.argmin()) == target and float(distances[target]) < 0.3 * float(start), distances
    assert loss < 0.01


def test_an_encoder_prior_learns_its_encoder_and_starts_a_fit_at_its_latent(face, tiny_subject, tmp_path):
    prior = tiny_prior(face, identity_source="encoder")
    names = {name for name, _ in prior.named_parameters()}
    # Only parameters the loss reaches (DDP refuses others): no per-identity codes beside the encoder.
    assert "latents" not in names and any(name.startswith("encoder.") for name in names)
    views = load_views(tiny_subject, 32)
    cfg = PriorConfig()
    cfg.render.backend = "torch"
    batch = views.batch(torch.arange(3), CPU)
    batch["encoder_image"] = views.batch(torch.tensor([5]), CPU)["image"]
    total, terms = PriorObjective(prior, cfg)([(1, batch)])
    total.backward()
    assert float(prior.encoder.out.weight.grad.abs().sum()) > 0
    assert float(prior.encoder.features[0].weight.grad.abs().sum()) > 0
    with torch.no_grad():
        encoded = prior.encoder(batch["encoder_image"])
    assert float(terms["latent"].detach()) == pytest.approx(float(encoded.square().sum()))

    # A new person's latent starts at (and inversion pulls toward) the encoder's latent of their images, averaged;
    # a photo of another size is resized to the encoder's resolution first.
    fitted = load_views(tiny_subject, 64, frames=["0000"], cameras=["cam00", "cam01"])
    images = fitted.batch(torch.arange(2), CPU)["image"]
    with torch.no_grad():
        expected = prior.encoder(torch.nn.functional.interpolate(images, size=(32, 32), mode="area")).mean(0)
        latent, _ = invert_latent(prior, prior.shape_codes[0], fitted, OneShotSection(invert_steps=0), "torch",
                                  progress=False)
    torch.testing.assert_close(latent, expected)
    assert float(expected.norm()) > 0

    path = tmp_path / "prior_latest"
    save_atomic(prior.checkpoint(), path)
    reloaded = load_prior(path, CPU)
    assert reloaded.uses_encoder
    with torch.no_grad():
        torch.testing.assert_close(reloaded.starting_latent(images), prior.starting_latent(images))


def test_identity_code_from_landmarks(face):
    face_model, _ = face
    code = torch.tensor([0.8, -0.5, 0.3, 0.1, -0.2])
    exp = torch.zeros(2, 16)
    exp[1, 0] = 0.6
    pose = torch.tensor([[0.1, -0.2, 0.0, 0.01, 0.0, 0.0], [0.0, 0.3, 0.1, 0.0, 0.02, 0.0]])
    scale = torch.full((2, 1), 0.125)
    landmarks = face_model.landmarks(code, exp, pose, scale[:, 0])
    torch.testing.assert_close(fit_identity_code(face_model, landmarks, exp, pose, scale), code, atol=2e-3, rtol=0)


def test_a_fitted_avatar_is_evaluated_and_reenacted_unchanged(face, tiny_subject, tmp_path):
    face_model, _ = face
    prior = tiny_prior(face)
    subject = open_subject(tiny_subject, 32)
    views = load_views(tiny_subject, 32, frames=["0000"], cameras=["cam01"], subject=subject)
    avatar, report = fit_avatar(prior, face_model, views, OneShotSection(invert_steps=5, finetune_steps=5), "torch",
                                progress=False)
    assert report["finetune_l1"] < report["invert_l1"] + 0.05 and report["seconds"] > 0
    written = write_fitted_avatar(avatar, tmp_path / "oneshot", subject, views, 32)
    cfg = load_config(TrainConfig, written["config"], ["device=cpu", "render.backend=torch", "eval.max_images=2",
                                                       "eval.splits=[test_cameras,test_frames]"], stage="evaluate")
    results = evaluate_avatar(cfg, CPU)
    assert results["model"] == "prior"
    assert set(results["splits"]) == {"test_cameras", "test_frames"}
    assert all(split["output"]["psnr"] > 5 for split in results["splits"].values())
    reenact = load_config(ReenactConfig, ROOT / "config" / "reenactment_synthetic_demo.yaml",
                          ["model.kind=prior", "model.post_render=none",
                           f"load_gaussianhead_checkpoint={written['checkpoint']}",
                           f"model.options={json.dumps(json.loads(json.dumps(avatar.cfg.__dict__)))}",
                           f"dataset.dataroot={tiny_subject}", "dataset.image_files=images/*/image_cam01.jpg",
                           "dataset.original_resolution=64", "dataset.resolution=32", "dataset.freeview=false",
                           f"dataset.camera_path={tiny_subject / 'cameras' / '0000' / 'camera_cam01.npz'}",
                           "dataset.pose_code_path=''", "device=cpu", "render.backend=torch",
                           f"recorder.result_path={tmp_path}/reenact", "recorder.name=oneshot"], stage="reenactment")
    result = Reenactment(reenact, CPU).run(export_ply=0, progress=False)
    assert result["frames"] == 4 and result["video"].is_file()


def test_bad_input_is_one_clear_error(face, tiny_subject, tmp_path):
    import cv2

    face_model, _ = face
    prior = tiny_prior(face)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.full((40, 48, 3), 128, np.uint8))
    with pytest.raises(DataError, match=r"small.png is 48x40 pixels: too small"):
        check_photos([small])
    with pytest.raises(DataError, match=r"cannot decode"):
        check_photos([tmp_path / "missing.jpg"])

    prior.meta["face_model"] = {**prior.meta["face_model"], "face_model_key": "another-face-model"}
    with pytest.raises(CheckpointError, match=r"trained with face model 'another-face-model'"):
        check_compatible(prior, face_model, tiny_subject)
    prior.meta["face_model"] = face_model.meta()
    other = tmp_path / "other_basis"
    import shutil
    shutil.copytree(tiny_subject, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["expression_basis"] = {"model": "flame-2020", "names": [f"e{i}" for i in range(16)]}
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"expression codes are in flame-2020.*prior was trained in"):
        check_compatible(prior, face_model, other)

    config = ROOT / "config" / "train_prior_demo.yaml"
    with pytest.raises(ConfigError, match=r"'model.kind' is 'gha'"):
        load_prior_config(config, ["model.kind=gha"])
    with pytest.raises(ConfigError, match=r"num_gausians.*did you mean 'num_gaussians'"):
        load_prior_config(config, ["model.options.num_gausians=3"])


def test_no_face_in_the_photo(face, tmp_path):
    pytest.importorskip("mediapipe")
    import cv2

    blank = tmp_path / "wall.jpg"
    texture = np.random.default_rng(0).integers(100, 140, (160, 160, 3), dtype=np.uint8)
    cv2.imwrite(str(blank), texture)
    options = TrackOptions(resolution=32, crop="face", holdout_frames=0.0, holdout_cameras=0,
                           face_model_samples=SAMPLES, face_model_components=COMPONENTS, device="cpu", force=True,
                           progress=False)
    with pytest.raises(DataError, match=r"wall.jpg: no face found"):
        track_photos([blank], tmp_path / "out", options)


def test_fit_oneshot_command_line_error(tmp_path):
    """The script ends with one 'error:' line and status 2, not a traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "fit_oneshot.py"), "--prior", str(tmp_path / "nothing"),
                           "--image", str(tmp_path / "x.jpg")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: no prior at")
