"""One-shot (or few-shot) avatars from a trained prior: invert the identity latent on the given views with the prior
frozen, take the avatar the prior decodes for it (cgha.prior.avatar), then fine-tune every parameter of that avatar
for a few steps with a penalty on its change from the inverted prior.

    prior = load_prior("checkpoints/prior_demo", device)
    views = load_views(subject, prior.meta["resolution"], frames=["0000"], cameras=["cam00"]).to(device)
    avatar, report = fit_avatar(prior, face_model, views, cfg.fit, "auto")
    write_fitted_avatar(avatar, "checkpoints/oneshot", subject, views)
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from tqdm import tqdm

from cgha.avatar.inference import render_frame, render_gaussians
from cgha.avatar.post_render import NoPostRender
from cgha.avatar.subject import AvatarSubject
from cgha.config import TrainConfig, save_config
from cgha.dataset.subject import Subject
from cgha.dataset.expression_basis import ExpressionBasis, read_expression_basis
from cgha.dataset.validation import recorded_resolution
from cgha.errors import CheckpointError, DataError
from cgha.prior.avatar import PriorAvatar
from cgha.prior.config import OneShotSection
from cgha.prior.data import Views
from cgha.prior.geometry import fit_identity_code
from cgha.prior.model import GaussianPrior
from cgha.prior.train import PRIOR_KIND
from cgha.recorder.checkpoint import load_file, save_atomic
from cgha.recorder.run_files import RunFiles
from cgha.synthetic.landmarks import NUM_LANDMARKS
from cgha.tracking.face_model import FaceModel
from cgha.utils.device import synchronize

log = logging.getLogger(__name__)

VIEWS_PER_STEP = 4  # images rendered per fitting step (all of them when fewer)


def load_prior(path: str | Path, device: torch.device) -> GaussianPrior:
    """The prior in `path`: a prior run folder (its prior_latest) or the checkpoint file itself."""
    path = Path(path)
    file = RunFiles(path).checkpoint(PRIOR_KIND) if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"no prior at {path}: expected a prior_latest file or a train_prior.py run folder "
                              f"holding one")
    saved = load_file(file, "prior checkpoint")
    if not isinstance(saved, dict) or "model_config" not in saved:
        raise CheckpointError(f"{file}: not a prior checkpoint (train_prior.py's prior_latest)")
    return GaussianPrior.from_checkpoint(saved, str(file)).to(device).eval()


def prior_expression_basis(prior: GaussianPrior) -> ExpressionBasis:
    face = prior.meta["face_model"]
    return ExpressionBasis(face["expression_model"], tuple(face["expression_names"]))


def check_compatible(prior: GaussianPrior, face_model: FaceModel, subject_root: str | Path) -> None:
    """DataError / CheckpointError unless the prior, this installation's face model and the subject share one face
    model and expression basis (codes of another basis have the right size and the wrong meaning)."""
    trained = prior.meta["face_model"]
    if trained["face_model_key"] != face_model.key:
        raise CheckpointError(f"the prior was trained with face model {trained['face_model_key']!r} but this "
                              f"installation builds {face_model.key!r} (another face model or build): retrain the "
                              f"prior with this version")
    basis = read_expression_basis(Path(subject_root))
    wanted = prior_expression_basis(prior)
    if basis is None:
        raise DataError(f"{subject_root}/meta.json records no expression basis; the prior's is {wanted.describe()}")
    if basis != wanted:
        raise DataError(f"{subject_root}: its expression codes are in {basis.describe()}, but the prior was trained "
                        f"in {wanted.describe()}: track the subject with this face model")
    meta = (Path(subject_root) / "meta.json")
    tracked = _tracked_face_model_key(meta)
    if tracked is not None and tracked != face_model.key:
        raise DataError(f"{meta}: tracked with face model {tracked!r}, but the prior uses {face_model.key!r}")


def _tracked_face_model_key(meta_path: Path):
    import json

    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    face = meta.get("face_model") if isinstance(meta, dict) else None
    return face.get("key") if isinstance(face, dict) else None


def _minibatch(views: Views, step: int, generator: torch.Generator, device: torch.device) -> Dict[str, torch.Tensor]:
    """All views when there are at most VIEWS_PER_STEP of them, else a random VIEWS_PER_STEP (seeded)."""
    count = len(views)
    index = (torch.arange(count) if count <= VIEWS_PER_STEP
             else torch.randperm(count, generator=generator)[:VIEWS_PER_STEP])
    return views.batch(index, device)


def invert_latent(prior: GaussianPrior, shape_code: torch.Tensor, views: Views, fit: OneShotSection, backend: str,
                  progress: bool = True) -> Tuple[torch.Tensor, float]:
    """The identity latent [Z] that renders the views best with the prior frozen, starting at the prior's starting
    latent for the views (the training codes' mean, or the encoder's latent of the fitted images) and penalised by
    its squared distance to it: -> (latent, last photometric loss)."""
    device = prior.embedding.device
    with torch.no_grad():
        images = views.batch(torch.arange(len(views)), device)["image"]
        mean = prior.starting_latent(images).detach()
    latent = mean.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([latent], lr=fit.invert_lr)
    generator = torch.Generator().manual_seed(0)
    loss_value = float("nan")
    for step in tqdm(range(fit.invert_steps), desc="invert latent", disable=not progress, dynamic_ncols=True):
        batch = _minibatch(views, step, generator, device)
        gaussians = prior.identity_gaussians(latent, shape_code, batch["exp"], batch["pose"], batch["scale"])
        render = render_gaussians(gaussians, batch["viewmats"], batch["Ks"], batch["image"].shape[-1], backend)
        photometric = F.l1_loss(render, batch["image"])
        loss = photometric + fit.latent_weight * (latent - mean).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(photometric.detach())
    return latent.detach(), loss_value


def fine_tune(avatar: PriorAvatar, views: Views, fit: OneShotSection, backend: str, progress: bool = True) -> float:
    """Fine-tune every parameter of `avatar` on the views, penalising the mean squared change of each parameter
    tensor from its starting value (fit.prior_weight): -> last photometric loss."""
    device = avatar.xyz.device
    start = {name: value.detach().clone() for name, value in avatar.named_parameters()}
    optimizer = torch.optim.Adam(avatar.parameters(), lr=fit.finetune_lr)
    post_render = NoPostRender(avatar.color_dim)
    generator = torch.Generator().manual_seed(1)
    loss_value = float("nan")
    for step in tqdm(range(fit.finetune_steps), desc="fine-tune", disable=not progress, dynamic_ncols=True):
        batch = _minibatch(views, step, generator, device)
        size = batch["image"].shape[-1]
        frame = render_frame(avatar, post_render, batch["exp"], batch["pose"], batch["scale"], batch["viewmats"],
                             batch["Ks"], size, backend)
        photometric = F.l1_loss(frame.image, batch["image"])
        change = sum((value - start[name]).square().mean() for name, value in avatar.named_parameters())
        loss = photometric + fit.prior_weight * change
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(photometric.detach())
    return loss_value


def fit_avatar(prior: GaussianPrior, face_model: FaceModel, views: Views, fit: OneShotSection, backend: str,
               progress: bool = True) -> Tuple[PriorAvatar, Dict[str, Any]]:
    """The avatar of the person in `views` (on the prior's device): face-model identity from the views' landmarks,
    latent inversion, fine-tune. Returns (avatar in eval mode, report with the losses and seconds of each part)."""
    device = prior.embedding.device
    synchronize(device)
    started = time.perf_counter()
    shape_code = fit_identity_code(face_model, views.landmarks[:, :NUM_LANDMARKS].cpu(), views.exp.cpu(),
                                   views.pose.cpu(), views.scale.cpu()).to(device)
    latent, invert_loss = invert_latent(prior, shape_code, views, fit, backend, progress)
    synchronize(device)
    inverted = time.perf_counter()
    avatar = PriorAvatar.from_prior(prior, latent, shape_code).train()
    finetune_loss = fine_tune(avatar, views, fit, backend, progress)
    synchronize(device)
    done = time.perf_counter()
    report = {"views": len(views), "identity_source": prior.cfg.identity_source, "invert_steps": fit.invert_steps,
              "finetune_steps": fit.finetune_steps,
              "invert_l1": invert_loss, "finetune_l1": finetune_loss, "invert_seconds": inverted - started,
              "finetune_seconds": done - inverted, "seconds": done - started,
              "shape_code": [float(v) for v in shape_code.cpu()]}
    return avatar.eval(), report


def write_fitted_avatar(avatar: PriorAvatar, out_dir: str | Path, subject: Subject, views: Views,
                        resolution: int) -> Dict[str, Path]:
    """Write the avatar as a run of its own: `prior_avatar_latest` (the raw checkpoint), `avatar_subject.json`
    (its reference pose and scale: the first view's; the subject's expression basis) and a `config.yaml` that
    evaluate.py, reenactment (load_gaussianhead_checkpoint) and train_gaussianhead.py (compaction) read as is. Its
    held-out split is what the fit did not see: the subject's other rig cameras (test_cameras: novel views of the
    fitted frames) and other frames (test_frames: novel expressions from the fitted cameras)."""
    files = RunFiles(out_dir)
    files.directory.mkdir(parents=True, exist_ok=True)
    checkpoint = files.checkpoint(avatar.checkpoint_kind)
    save_atomic(avatar.state_dict(), checkpoint)
    subject_root = subject.layout.root
    AvatarSubject([float(v) for v in views.pose[0].cpu()], float(views.scale[0, 0]),
                  read_expression_basis(subject_root)).save(files.subject)
    cfg = TrainConfig()
    cfg.model.kind, cfg.model.post_render = "prior", "none"
    cfg.model.options = dataclasses.asdict(avatar.cfg)
    cfg.load_gaussianhead_checkpoint = str(checkpoint)
    cfg.dataset.dataroot = str(subject_root)
    recorded = recorded_resolution(subject_root)
    cfg.dataset.original_resolution = recorded[0] if recorded else resolution
    cfg.dataset.resolution = resolution
    cfg.dataset.split_from_meta = False
    cfg.dataset.eval_camera_ids = [camera for camera in subject.cameras if camera not in views.cameras]
    cfg.dataset.eval_frame_ids = [frame for frame in subject.frames if frame not in views.frames]
    cfg.recorder.checkpoint_path, cfg.recorder.name = str(files.directory.parent), files.directory.name
    cfg.recorder.result_path = str(files.directory / "results")
    cfg.recorder.logdir = str(files.directory / "log")
    save_config(cfg, files.config)
    return {"checkpoint": checkpoint, "subject": files.subject, "config": files.config}
