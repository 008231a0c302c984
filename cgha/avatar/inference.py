"""Loading a trained avatar (raw checkpoints or a compressed file) and rendering frames of it: the one inference
path that training's evaluation, `evaluate.py`, reenactment, export and the viewer share.

    avatar = load_avatar(cfg, device, run=RunFiles.of(cfg))    # raw or compact, eval mode
    frame = render_frame(avatar.model, avatar.post_render, expression, pose, scale, viewmats, Ks, 512, "auto")
    frame.image   # [B, 3, 512, 512] in [0, 1]
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import torch
from torch import nn

from cgha.avatar.gaussians import Gaussians
from cgha.avatar.model import AvatarModel, model_config
from cgha.avatar.post_render import NoPostRender
from cgha.avatar.subject import AvatarSubject
from cgha.compact.avatar_file import load_compact_avatar
from cgha.compact.codec import is_compact_file
from cgha.errors import CheckpointError, ConfigError
from cgha.module.super_resolution import SuperResolutionModule, load_super_resolution
from cgha.recorder.checkpoint import save_atomic
from cgha.recorder.checkpoint import load_file, load_state_dict_into
from cgha.recorder.file_kind import file_kind
from cgha.recorder.run_files import RunFiles
from cgha.render.gaussians import rasterize_gaussians


@dataclass
class Avatar:
    """A trained avatar ready to render: the model, its post-render step, where they came from and what it recorded
    of its training subject (None for GHA's runs and runs from before such records).

    source: {"kind": "compact" | "raw", "files": {part: path}, "bytes": {part: size on disk}, "total_bytes": sum}.
    """
    model: AvatarModel
    post_render: nn.Module
    source: Dict[str, Any] = field(default_factory=dict)
    subject: Optional[AvatarSubject] = None


class Frame(NamedTuple):
    gaussians: Gaussians   # posed, [B, N, ...]
    render: torch.Tensor   # [B, C, r, r] rasterised features over a white background
    image: torch.Tensor    # [B, 3, R, R] after the post-render step (R = r * upscale), not clamped


# ------------------------------------------------------------------------------------------------- loading
def load_model(cfg: Any, path: str | os.PathLike, device: torch.device) -> AvatarModel:
    """The avatar model in `path`: a compressed file (its own kind and config), else a raw state dict of the model
    `cfg.model` selects (its Gaussian count comes from the file)."""
    if is_compact_file(path):
        model, _, _ = load_compact_avatar(path, device)
        return model
    cls, model_cfg = model_config(cfg)
    state = load_file(path, f"{cls.kind} avatar checkpoint")
    try:
        model = cls.from_state_dict(model_cfg, state)
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: not a checkpoint of the '{cls.kind}' avatar model ({error})") from None
    load_state_dict_into(model, state, path, f"{cls.kind} avatar checkpoint")
    return model.to(device)


def build_raw_post_render(cfg: Any, model: AvatarModel, path: Optional[str | os.PathLike]) -> nn.Module:
    """The post-render step of a raw avatar: the super-resolution net loaded from `path` (ours or GHA's
    `supres_latest`), or none."""
    if cfg.model.post_render == "none":
        return NoPostRender(model.color_dim)
    supres = SuperResolutionModule(cfg.supresmodule)
    if path is None or not Path(path).is_file():
        raise CheckpointError(f"super-resolution checkpoint not found: {path} (load_supres_checkpoint); a raw "
                              f"avatar needs one (only a compressed file holds the super-resolution net)")
    load_super_resolution(supres, path)
    return supres


def resolve_avatar_path(cfg: Any, run: Optional[RunFiles] = None) -> Path:
    """`load_gaussianhead_checkpoint`; without it, the compressed file of `run`, else its raw checkpoint."""
    if cfg.load_gaussianhead_checkpoint:
        path = Path(cfg.load_gaussianhead_checkpoint)
        if not path.is_file():
            raise CheckpointError(f"load_gaussianhead_checkpoint not found: {path}")
        return path
    if run is None:
        raise CheckpointError("no avatar given: set load_gaussianhead_checkpoint (a raw or compressed file)")
    cls, _ = model_config(cfg)
    candidates = (run.compact, run.checkpoint(cls.checkpoint_kind))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"no avatar found: load_gaussianhead_checkpoint is empty and neither "
                          f"{candidates[0]} nor {candidates[1]} exists")


def load_avatar(cfg: Any, device: torch.device, run: Optional[RunFiles] = None) -> Avatar:
    """The avatar a config names (see `resolve_avatar_path`), in eval mode on `device`. A raw model needs its
    super-resolution checkpoint: `load_supres_checkpoint`, else `run`'s."""
    path = resolve_avatar_path(cfg, run)
    kind = file_kind(path)
    if kind.name != "cgha" and not kind.is_torch_checkpoint:
        # Said first: otherwise a wrong file is blamed on the super-resolution checkpoint a raw avatar also needs.
        raise CheckpointError(f"{path} is {kind.description}, not an avatar (a raw checkpoint or a .cgha file)")
    if is_compact_file(path):
        model, post_render, metadata = load_compact_avatar(path, device)
        files = {"compact": path}
        recorded = metadata.get("subject")
        subject = AvatarSubject.from_dict(recorded, f"{path} metadata") if recorded is not None else None
    else:
        subject = AvatarSubject.load(RunFiles(path.parent).subject)
        model = load_model(cfg, path, device)
        files = {model.checkpoint_kind: path}
        supres_path = None
        if cfg.model.post_render == "super_resolution":
            supres_path = Path(cfg.load_supres_checkpoint) if cfg.load_supres_checkpoint else (
                run.checkpoint("supres") if run is not None else None)
            if supres_path is None:
                raise CheckpointError(f"{path} is a raw checkpoint: set load_supres_checkpoint too "
                                      f"(only a compressed file holds the super-resolution net)")
            files["supres"] = supres_path
        post_render = build_raw_post_render(cfg, model, supres_path).to(device)
    if isinstance(post_render, SuperResolutionModule) and post_render.input_dim != model.color_dim:
        raise CheckpointError(f"the super-resolution net takes {post_render.input_dim} channels but the avatar "
                              f"renders {model.color_dim}")
    sizes = {part: os.path.getsize(file) for part, file in files.items()}
    source = {"kind": "compact" if "compact" in files else "raw", "files": {k: str(v) for k, v in files.items()},
              "bytes": sizes, "total_bytes": sum(sizes.values())}
    return Avatar(model.eval(), post_render.eval(), source, subject)


def expand_compact_avatar(path: str | os.PathLike, out_dir: str | os.PathLike) -> Dict[str, Path]:
    """Write a compressed avatar back out as raw fp32 checkpoints named as a run names them (GHA's
    `gaussianhead_latest`, `supres_latest`), with the decoded attributes, e.g. to fine-tune it or to use tools that
    expect raw files. Returns {part: path}."""
    model, post_render, _ = load_compact_avatar(path, torch.device("cpu"))
    files = RunFiles(out_dir)
    written = {model.checkpoint_kind: files.checkpoint(model.checkpoint_kind)}
    save_atomic(model.state_dict(), written[model.checkpoint_kind])
    if isinstance(post_render, SuperResolutionModule):
        written["supres"] = files.checkpoint("supres")
        save_atomic(post_render.state_dict(), written["supres"])
    return written


def load_delta_poses(path: str | os.PathLike, num_frames: int) -> torch.Tensor:
    """Per-frame pose offsets [num_frames, 6] saved by training (rows indexed by the subject's frame id)."""
    value = load_file(path, "delta-poses checkpoint")
    if not isinstance(value, torch.Tensor) or value.shape != (num_frames, 6):
        shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CheckpointError(f"{path}: delta poses must be a [{num_frames}, 6] tensor (one row per frame of this "
                              f"subject), got {shape}")
    return value.float()


# ----------------------------------------------------------------------------------------------- rendering
def render_gaussians(gaussians: Gaussians, viewmats: torch.Tensor, Ks: torch.Tensor, size: int,
                     backend: str, with_alpha: bool = False, width: Optional[int] = None):
    """Rasterise posed Gaussians over a white background (GHA): viewmats [B, 4, 4], Ks [B, 3, 3] in pixels of the
    size x size render -> image [B, C, size, size], or (image, alpha [B, 1, size, size]) with `with_alpha`.
    `width`: the render's width when it is not square (the viewer's window), default `size`."""
    features = gaussians.features
    background = features.new_ones(features.shape[0], features.shape[-1])
    out = rasterize_gaussians(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, features,
                              viewmats, Ks, size if width is None else width, size, backgrounds=background,
                              backend=backend)
    return (out["image"], out["alpha"]) if with_alpha else out["image"]


def render_size(output_size: int, post_render: nn.Module) -> int:
    """Side of the render whose post-render output is `output_size` pixels; ConfigError when it does not divide."""
    upscale = post_render.upscale
    if output_size % upscale:
        raise ConfigError(f"the output resolution {output_size} must be a multiple of {upscale} (the post-render "
                          f"step upsamples a 1/{upscale} render)")
    return output_size // upscale


def render_frame(model: AvatarModel, post_render: nn.Module, expression: torch.Tensor, pose: torch.Tensor,
                 scale: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, output_size: int, backend: str,
                 pose_code: Optional[torch.Tensor] = None,
                 attributes: Optional[Dict[str, torch.Tensor]] = None,
                 output_width: Optional[int] = None) -> Frame:
    """generate -> rasterise -> post-render for a batch of B frames.

    expression [B, D], pose [B, 6], scale [B, 1], pose_code [B, 6] or None; viewmats [B, 4, 4]; Ks [B, 3, 3] in
    pixels of the output image (output_size x output_size, or output_size high and `output_width` wide; scaled here
    to the render's size).
    """
    gaussians = model.generate(expression, pose, scale, pose_code=pose_code, attributes=attributes)
    return render_posed(gaussians, post_render, viewmats, Ks, output_size, backend, output_width)


def render_posed(gaussians: Gaussians, post_render: nn.Module, viewmats: torch.Tensor, Ks: torch.Tensor,
                 output_size: int, backend: str, output_width: Optional[int] = None) -> Frame:
    """rasterise -> post-render of already posed Gaussians (B frames), as render_frame after its generate step: a
    viewer that only moves its camera reuses the Gaussians. viewmats [B, 4, 4]; Ks [B, 3, 3] in output pixels."""
    size = render_size(output_size, post_render)
    width = None if output_width is None else render_size(output_width, post_render)
    Ks = Ks.clone()
    Ks[:, :2] *= size / output_size
    render = render_gaussians(gaussians, viewmats, Ks, size, backend, width=width)
    return Frame(gaussians, render, post_render(render))


def batch_render_inputs(batch: Dict[str, torch.Tensor], post_render: nn.Module
                        ) -> Tuple[str, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What a GaussianDataset batch offers at the render's resolution: (suffix of its keys, Ks [B, 3, 3], image
    [B, 3, r, r], visible [B, 1, r, r]). The dataset holds the output size and a COARSE_FACTOR smaller one."""
    from cgha.dataset.gaussian_dataset import COARSE_FACTOR

    upscale = post_render.upscale
    if upscale == 1:
        return "", batch["intrinsics"], batch["images"], batch["visibles"]
    if upscale == COARSE_FACTOR:
        return "_coarse", batch["intrinsics_coarse"], batch["images_coarse"], batch["visibles_coarse"]
    raise ConfigError(f"the post-render step upsamples {upscale}x; the dataset offers 1x and {COARSE_FACTOR}x")


def render_batch(model: AvatarModel, post_render: nn.Module, batch: Dict[str, torch.Tensor],
                 delta_poses: Optional[torch.Tensor], backend: str,
                 attributes: Optional[Dict[str, torch.Tensor]] = None,
                 transform: Optional[Callable[[Gaussians], Gaussians]] = None) -> Tuple[Gaussians, torch.Tensor]:
    """Posed Gaussians of a GaussianDataset batch and their render at the post-render step's input size:
    -> (gaussians, render [B, C, r, r]). `delta_poses` [F, 6]: per-frame pose offsets (training), or None;
    `transform`: applied to the posed Gaussians before rendering (training's learned mask), or None."""
    # index_select, not indexing: its backward is an index_add, where advanced indexing's sorts the indices.
    pose = batch["pose"] if delta_poses is None else batch["pose"] + delta_poses.index_select(0, batch["exp_id"])
    gaussians = model.generate(batch["exp_coeff"], pose, batch["scale"], attributes=attributes)
    if transform is not None:
        gaussians = transform(gaussians)
    _, Ks, image, _ = batch_render_inputs(batch, post_render)
    return gaussians, render_gaussians(gaussians, batch["viewmat"], Ks, image.shape[-1], backend)
