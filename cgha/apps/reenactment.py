"""Reenactment: drive a trained avatar (raw or compact file) with another sequence's expression and pose codes.

Per frame: the avatar model's `generate()` with the driver's (smoothed) parameters, a render over a white background
and the post-render step (GHA: 32 channels at a quarter of `dataset.resolution`, super-resolved to it).

Head motion (`dataset.pose_transfer`): `relative` (default) keeps the avatar's own scale and neutral pose (recorded
with the avatar by training, else `dataset.pose_code_path`'s) and applies the driver's motion since its first frame
(pose_transfer.py); `absolute` uses the driver's pose and scale as they are, as GHA does, which renders another
person's head at that person's size and place.
Outputs under `{recorder.result_path}/{recorder.name}/`: `frames/000000.png`, ... (side by side with the driver's
image when `dataset.image_files` is set) and `{name}.mp4`.

Temporal smoothing follows GHA's `lib/apps/Reenactment.py`: an exponential moving average
`s_t = w * s_{t-1} + (1 - w) * x_t` with GHA's fixed `w = 0.5`, here `dataset.smoothing` (0 = off). It applies to
`exp_coeff`, and to the head `pose` without free view. With free view GHA sets the head pose to zero (identity
rotation, no translation; the scale is kept: the avatar's with relative transfer) so the head sits where the orbit
camera looks; we do the same.
The pose MLPs' input (`pose_code`) is `dataset.pose_code_path`'s pose when given, else the frame's pose, unsmoothed.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import imageio.v2 as imageio
import numpy as np
import torch
from tqdm import tqdm

from cgha.apps.export_ply import export_gaussians_ply
from cgha.apps.export_spz import export_gaussians_spz
from cgha.apps.pose_transfer import relative_pose_transfer
from cgha.avatar.gaussians import Gaussians
from cgha.avatar.inference import load_avatar, render_frame, render_size
from cgha.avatar.model import model_config
from cgha.compact.codec import is_compact_file
from cgha.config import ReenactConfig
from cgha.dataset.expression_basis import ExpressionBasis, check_driver_basis, read_expression_basis
from cgha.dataset.reenactment_dataset import ReenactmentDataset
from cgha.dataset.validation import read_params
from cgha.errors import ConfigError, DataError
from cgha.utils.device import synchronize
from cgha.utils.image_io import write_image
from cgha.utils.paths import ensure_writable_folders

log = logging.getLogger(__name__)


def smooth_sequence(values: torch.Tensor, weight: float) -> torch.Tensor:
    """Exponential moving average along frames: [F, D] -> [F, D], s_0 = x_0, s_t = w s_{t-1} + (1 - w) x_t."""
    if weight == 0.0 or values.shape[0] < 2:
        return values.clone()
    out = values.clone()
    for frame in range(1, values.shape[0]):
        out[frame] = weight * out[frame - 1] + (1.0 - weight) * values[frame]
    return out


class Reenactment:
    """Drive an avatar with `cfg.dataset`'s parameter sequence; see the module docstring for what is written.

    The avatar is loaded before the driver when it is a compact file (its own config decides the expression
    dimension), the driver first otherwise (the YAML's model section decides it), so a mismatching driver fails with
    the dataset's one-line error either way.
    """

    def __init__(self, cfg: ReenactConfig, device: torch.device):
        self.cfg = cfg
        self.device = device
        ensure_writable_folders({"recorder.result_path (or recorder.name)":
                                 Path(cfg.recorder.result_path) / cfg.recorder.name})  # before loading and rendering
        if not 0.0 <= cfg.dataset.smoothing < 1.0:
            raise ConfigError(f"'dataset.smoothing' is {cfg.dataset.smoothing}: expected a value in [0, 1)")
        head_path = cfg.load_gaussianhead_checkpoint
        if head_path and Path(head_path).is_file() and is_compact_file(head_path):
            self.avatar = load_avatar(cfg, device)
            self.dataset = ReenactmentDataset(cfg.dataset, expected_exp_dim=self.avatar.model.expression_dim,
                                              exp_dim_key=f"the expression dimension of {head_path}")
        else:
            cls, model_cfg = model_config(cfg)
            exp_dim, exp_dim_key = cls.config_expression_dim(model_cfg)
            self.dataset = ReenactmentDataset(cfg.dataset, expected_exp_dim=exp_dim, exp_dim_key=exp_dim_key)
            self.avatar = load_avatar(cfg, device)
        self.model, self.post_render = self.avatar.model, self.avatar.post_render
        check_driver_basis(self._avatar_basis(), read_expression_basis(Path(cfg.dataset.dataroot)),
                           Path(cfg.dataset.dataroot), cfg.dataset.allow_basis_mismatch)
        self.post_render.amp = cfg.render.amp  # only takes effect on CUDA tensors
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        try:
            self.render_size = render_size(cfg.dataset.resolution, self.post_render)
        except ConfigError as error:
            raise ConfigError(f"'dataset.resolution' is {cfg.dataset.resolution}: {error}") from None
        self.driving = self._driving_parameters()
        self.output_dir = Path(cfg.recorder.result_path) / cfg.recorder.name

    def __len__(self) -> int:
        return len(self.dataset)

    def _driving_parameters(self) -> Dict[str, torch.Tensor]:
        """Per-frame generate() inputs after smoothing: exp_coeff [F, D], pose [F, 6], scale [F, 1]; the head pose
        and scale transferred as `dataset.pose_transfer` says (pose_transfer.py)."""
        weight = self.cfg.dataset.smoothing
        exp_coeff = smooth_sequence(self.dataset.exp_coeff.float(), weight)
        pose, scale = self.dataset.pose.float(), self.dataset.scale.float().reshape(-1, 1)
        if self.cfg.dataset.pose_transfer == "relative":
            reference_pose, reference_scale = self._avatar_reference()
            pose, scale = relative_pose_transfer(pose, scale, reference_pose, reference_scale)
        if self.cfg.dataset.freeview:
            pose = torch.zeros_like(pose)
        else:
            pose = smooth_sequence(pose, weight)
        return {"exp_coeff": exp_coeff, "pose": pose, "scale": scale}

    def _avatar_basis(self) -> Optional[ExpressionBasis]:
        """The avatar's expression basis: its record, else that of the subject `dataset.pose_code_path` lies in
        (`{subject}/params/{frame}/params.npz`, GHA's configs point it at the avatar's own subject)."""
        if self.avatar.subject is not None:
            return self.avatar.subject.expression_basis
        code = Path(self.cfg.dataset.pose_code_path) if self.cfg.dataset.pose_code_path else None
        if code is not None and code.parent.parent.name == "params":
            return read_expression_basis(code.parents[2])
        return None

    def _avatar_reference(self) -> Tuple[torch.Tensor, float]:
        """The avatar's own neutral pose [6] and scale: its recorded subject, else `dataset.pose_code_path` (GHA's
        configs point it at the avatar's own first frame)."""
        if self.avatar.subject is not None:
            return torch.tensor(self.avatar.subject.reference_pose), self.avatar.subject.reference_scale
        if self.cfg.dataset.pose_code_path:
            params = read_params(Path(self.cfg.dataset.pose_code_path))
            return torch.from_numpy(params["pose"][0]).float(), float(params["scale"].reshape(-1)[0])
        raise ConfigError("dataset.pose_transfer is relative, but the avatar records no neutral pose (a GHA run or one "
                          "from before such records) and dataset.pose_code_path is empty: set "
                          "dataset.pose_code_path to a params.npz of the avatar's own subject, or "
                          "dataset.pose_transfer=absolute to use the driver's pose and scale as they are")

    def _check_index(self, index: int) -> int:
        if not 0 <= index < len(self.dataset):
            raise DataError(f"frame {index} does not exist: the driver has {len(self.dataset)} frames (0.."
                            f"{len(self.dataset) - 1})")
        return index

    def _inputs(self, index: int) -> Dict[str, torch.Tensor]:
        """Frame `index`'s generate() inputs and camera, batch of 1, on the device."""
        item = self.dataset[self._check_index(index)]
        inputs = {key: self.driving[key][index:index + 1].to(self.device) for key in ("exp_coeff", "pose", "scale")}
        for key in ("pose_code", "viewmat", "intrinsics"):
            inputs[key] = item[key][None].float().to(self.device)
        return inputs

    @torch.no_grad()
    def generate(self, index: int) -> Gaussians:
        """Posed Gaussians of frame `index` (batch of 1): [1, N, ...]."""
        inputs = self._inputs(index)
        return self.model.generate(inputs["exp_coeff"], inputs["pose"], inputs["scale"], pose_code=inputs["pose_code"])

    @torch.no_grad()
    def render_frame(self, index: int) -> Tuple[torch.Tensor, Gaussians]:
        """Frame `index` at the output resolution R: -> (image [1, 3, R, R] in [0, 1], posed Gaussians)."""
        inputs = self._inputs(index)
        # The dataset's K is in pixels of the output image; render_frame scales it to the render.
        frame = render_frame(self.model, self.post_render, inputs["exp_coeff"], inputs["pose"], inputs["scale"],
                             inputs["viewmat"], inputs["intrinsics"], self.cfg.dataset.resolution,
                             self.cfg.render.backend, pose_code=inputs["pose_code"])
        return frame.image.clamp(0.0, 1.0), frame.gaussians

    def export_ply(self, index: int, path: Optional[str | os.PathLike] = None) -> Path:
        """Write frame `index`'s posed Gaussians as a 3DGS `.ply` (default `{output}/frame_{index:06d}.ply`)."""
        path = Path(path) if path is not None else self.output_dir / f"frame_{index:06d}.ply"
        return export_gaussians_ply(path, self.generate(index))

    def export_spz(self, index: int, path: Optional[str | os.PathLike] = None) -> Path:
        """Write frame `index`'s posed Gaussians as a compressed `.spz` (default `{output}/frame_{index:06d}.spz`)."""
        path = Path(path) if path is not None else self.output_dir / f"frame_{index:06d}.spz"
        return export_gaussians_spz(path, self.generate(index))

    def run(self, export_ply: Optional[int] = None, progress: bool = True,
            export_spz: Optional[int] = None) -> Dict[str, Any]:
        """Render every frame, write the PNGs and the mp4 (and frame `export_ply`'s `.ply`, frame `export_spz`'s
        `.spz` when given).

        Returns frames (count), frames_dir, video, ply and spz (or None), fps (frames per second of generate +
        render + super-resolution, without the first, warm-up frame, synchronised on CUDA; image writing excluded).
        """
        for index in (export_ply, export_spz):
            if index is not None:
                self._check_index(index)
        frames_dir = self.output_dir / "frames"
        frames_dir.mkdir(parents=True, exist_ok=True)
        video_path = self.output_dir / f"{self.cfg.recorder.name}.mp4"
        # ffmpeg picks the container from the extension, so the temporary file keeps `.mp4`; renamed when complete.
        partial = video_path.with_name(f".{video_path.stem}.partial.mp4")
        times = []
        writer = imageio.get_writer(partial, format="FFMPEG", mode="I", fps=self.cfg.video_fps, codec="libx264",
                                    quality=8, macro_block_size=1, ffmpeg_log_level="error")
        try:
            for index in tqdm(range(len(self.dataset)), desc="reenactment", unit="frame", disable=not progress):
                synchronize(self.device)
                start = time.perf_counter()
                image, _ = self.render_frame(index)
                synchronize(self.device)
                times.append(time.perf_counter() - start)
                frame = self._compose(index, image)
                write_image(frames_dir / f"{index:06d}.png", frame)
                writer.append_data(frame)
        except BaseException:
            writer.close()
            partial.unlink(missing_ok=True)
            raise
        writer.close()
        os.replace(partial, video_path)
        ply = self.export_ply(export_ply) if export_ply is not None else None
        spz = self.export_spz(export_spz) if export_spz is not None else None
        timed = times[1:] or times
        fps = len(timed) / sum(timed) if sum(timed) > 0 else float("inf")
        log.info("reenactment: %d frames at %.1f FPS -> %s", len(times), fps, video_path)
        return {"frames": len(times), "frames_dir": frames_dir, "video": video_path, "ply": ply, "spz": spz,
                "fps": fps}

    def _compose(self, index: int, image: torch.Tensor) -> np.ndarray:
        """[1, 3, R, R] output -> uint8 [R, R, 3], or [R, 2R, 3] with the driver's image on the left."""
        output = image[0]
        if self.dataset.image_paths:
            driver = self.dataset[index]["images"].to(output.device, output.dtype)
            output = torch.cat([driver, output], dim=2)
        return (output.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)

