"""Held-out evaluation of an avatar (raw checkpoints or a compact file): image metrics, bytes on disk and speed.

    results = evaluate_avatar(cfg, device)   # also writes {result_path}/{name}/evaluation.json
    print(format_table(results))

Per split of `eval.splits` (test_cameras: training frames seen from held-out cameras; test_frames: held-out
frames seen from training cameras; out_of_rig: training frames seen from the evaluation-only cameras outside the
training rig, skipped on subjects that have none; all: every frame from every rig camera): PSNR and SSIM at the render resolution (first 3 channels of the coarse
render vs `images_coarse`) and at the output resolution (super-resolved vs `images`), each over the full image and
masked; LPIPS when asked for and available; the warm, synchronised time of generate + render + super-resolution.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from cgha.avatar.inference import Avatar, batch_render_inputs, load_avatar, load_delta_poses, render_batch
from cgha.config import TrainConfig
from cgha.dataset import GaussianDataset
from cgha.dataset.loader import evenly_spaced_indices
from cgha.errors import CheckpointError, ConfigError
from cgha.recorder.images import grid
from cgha.recorder.run_files import RunFiles
from cgha.utils.atomic import write_bytes_atomic
from cgha.utils.device import synchronize
from cgha.utils.image_io import write_image
from cgha.utils.lpips import load_lpips
from cgha.utils.cameras import project_points
from cgha.utils.metrics import composite_on_white, masked_psnr, masked_ssim, mouth_box_mask, psnr, ssim
from cgha.utils.paths import ensure_writable_folders

log = logging.getLogger(__name__)

WARMUP_PASSES = 2  # untimed passes first: CUDA context, cuDNN autotuning and allocator caches settle
RESULT_FILE = "evaluation.json"


# ---------------------------------------------------------------------------------------------- evaluation
def _mean(values: List[torch.Tensor]) -> float:
    return float(torch.cat(values).mean())


def _speed(times_ms: List[float]) -> Dict[str, Any]:
    median = statistics.median(times_ms)
    return {"ms_per_frame": median, "fps": 1000.0 / max(median, 1e-9),
            "timed_frames": len(times_ms)}


@torch.no_grad()
def _evaluate_split(avatar: Avatar, dataset: GaussianDataset, indices: List[int], delta_poses: Optional[torch.Tensor],
                    backend: str, device: torch.device, lpips_net: Optional[Callable], warm: bool,
                    sheet_positions: Sequence[int] = ()
                    ) -> Tuple[Dict[str, Any], List[float], List[Tuple[torch.Tensor, torch.Tensor]]]:
    """Metrics of one split, the per-frame times in ms of generate + render + post-render, and the (target,
    output) pairs [3, R, R] on the CPU of the evaluated positions listed in `sheet_positions`. The metrics include
    `per_camera`: {camera id: output PSNR over that camera's evaluated images}, so a split's mean can be traced to
    the views that lose (e.g. the out-of-rig side views vs the closer one)."""
    sums: Dict[str, List[torch.Tensor]] = {}
    per_camera: Dict[str, List[torch.Tensor]] = {}
    times: List[float] = []
    pairs: List[Tuple[torch.Tensor, torch.Tensor]] = []

    def add(key: str, value: torch.Tensor) -> None:
        sums.setdefault(key, []).append(value.detach().float().cpu())

    for position, index in enumerate(indices):
        batch = {key: value[None].to(device) for key, value in dataset[index].items()}
        passes = WARMUP_PASSES + 1 if position == 0 and not warm else 1
        for _ in range(passes):  # only the last pass of the first frame is timed
            synchronize(device)
            start = time.perf_counter()
            _, render = render_batch(avatar.model, avatar.post_render, batch, delta_poses, backend)
            output = avatar.post_render(render)
            synchronize(device)
            elapsed = (time.perf_counter() - start) * 1000.0
        times.append(elapsed)
        coarse = render[:, :3].clamp(0, 1).float()
        output = output.clamp(0, 1).float()
        if position in sheet_positions:
            pairs.append((batch["images"][0].float().cpu(), output[0].cpu()))
        suffix, _, image, _ = batch_render_inputs(batch, avatar.post_render)
        for level, predicted, target, mask in (("render", coarse, image, batch[f"masks{suffix}"]),
                                               ("output", output, batch["images"], batch["masks"])):
            add(f"{level}.psnr", psnr(predicted, target))
            add(f"{level}.ssim", ssim(predicted, target))
            add(f"{level}.psnr_masked", masked_psnr(predicted, target, mask))
            add(f"{level}.ssim_masked", masked_ssim(predicted, target, mask))
        camera = dataset.cameras[int(batch["view_id"])]
        per_camera.setdefault(camera, []).append(psnr(output, batch["images"]).detach().float().cpu())
        if batch["landmarks_3d"].shape[1] >= 68:
            # The mouth alone: a closed mouth under an open driver's jaw barely moves a whole-image PSNR.
            pixels, _ = project_points(batch["landmarks_3d"].float(), batch["viewmat"], batch["intrinsics"])
            mouth = mouth_box_mask(pixels.float(), *output.shape[-2:])
            if bool(mouth.any()):
                add("output.psnr_mouth", masked_psnr(output, batch["images"], mouth))
        if lpips_net is not None:
            add("output.lpips", lpips_net(output, batch["images"], normalize=True).flatten())
            add("output.lpips_masked", lpips_net(composite_on_white(output, batch["masks"]),
                                                 composite_on_white(batch["images"], batch["masks"]),
                                                 normalize=True).flatten())
    metrics: Dict[str, Any] = {"render": {}, "output": {}}
    for key, values in sums.items():
        level, name = key.split(".")
        metrics[level][name] = _mean(values)
    metrics["per_camera"] = {camera: _mean(values) for camera, values in sorted(per_camera.items())}
    return metrics, times, pairs


def write_contact_sheet(path: Path, pairs: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> Path:
    """Ground truth (top row) over the avatar's output (bottom row), one column per (target, output) pair."""
    write_image(path, grid([[target for target, _ in pairs], [output for _, output in pairs]]))
    return path


def evaluate_avatar(cfg: TrainConfig, device: torch.device) -> Dict[str, Any]:
    """Evaluate the configured avatar on every split of `cfg.eval.splits`; writes and returns the results.

    Pose offsets (`load_delta_poses_checkpoint`, optional) are applied on test_cameras and out_of_rig, whose frames
    were trained on, never on test_frames (no offset was learnt for them); on `all` they are applied as in training.
    Masked PSNR is the MSE over mask pixels only; masked SSIM is the SSIM of both images composited with the mask
    on white. Returns {"name", "device", "render_backend", "avatar": {kind, files, bytes, total_bytes},
    "num_gaussians", "lpips", "splits": {split: {num_images, render_resolution, output_resolution, pose_offsets,
    render: {psnr, ssim, psnr_masked, ssim_masked}, output: {same (+ psnr_mouth: PSNR inside a box around the lips
    when the subject has iBUG-68 landmarks; + lpips, lpips_masked)}, per_camera: {camera id: output PSNR},
    speed: {ms_per_frame,
    fps, timed_frames}}}, "speed": over all evaluated frames, "path": the JSON file}.
    """
    out_dir = Path(cfg.recorder.result_path) / cfg.recorder.name
    ensure_writable_folders({"recorder.result_path (or recorder.name)": out_dir})  # before minutes of metrics
    if device.type == "cuda":
        # Fixed-size super-resolution input: autotuned convolutions, as in training.
        torch.backends.cudnn.benchmark = True
    avatar = load_avatar(cfg, device, run=RunFiles.of(cfg))
    delta_path = Path(cfg.load_delta_poses_checkpoint) if cfg.load_delta_poses_checkpoint else None
    if delta_path is not None and not delta_path.is_file():
        raise CheckpointError(f"delta-poses checkpoint not found: {delta_path} (load_delta_poses_checkpoint)")
    lpips_net, lpips_status = load_lpips(cfg.eval.lpips, device)
    subject = None
    delta_poses: Optional[torch.Tensor] = None
    splits: Dict[str, Any] = {}
    all_times: List[float] = []
    for split in cfg.eval.splits:
        dataset = GaussianDataset(cfg.dataset, split=split, views="all", expected_exp_dim=avatar.model.expression_dim,
                                  exp_dim_key="the avatar's expression dimension", subject=subject)
        subject = dataset.subject
        if delta_path is not None and delta_poses is None:
            delta_poses = load_delta_poses(delta_path, dataset.num_frames).to(device)
        indices = evenly_spaced_indices(len(dataset), cfg.eval.max_images)
        if split == "out_of_rig" and not subject.out_of_rig_cameras:
            # Optional by nature (only subjects rendered with them have them): absent from the results, not a hole.
            log.info("the subject has no out-of-rig cameras; split out_of_rig skipped")
            continue
        if not indices:
            log.warning("split %s is empty (no held-out cameras/frames configured); skipped", split)
            splits[split] = {"num_images": 0}
            continue
        offsets = delta_poses if split != "test_frames" else None
        sheet_positions = evenly_spaced_indices(len(indices), cfg.eval.sheet_images) if cfg.eval.sheet_images else []
        metrics, times, pairs = _evaluate_split(avatar, dataset, indices, offsets, cfg.render.backend, device,
                                                lpips_net, warm=bool(all_times), sheet_positions=sheet_positions)
        all_times += times
        resolution = dataset.resolution
        splits[split] = {"num_images": len(indices), "render_resolution": resolution // avatar.post_render.upscale,
                         "output_resolution": resolution, "pose_offsets": offsets is not None,
                         **metrics, "speed": _speed(times)}
        if pairs:
            splits[split]["sheet"] = str(write_contact_sheet(out_dir / f"{split}_sheet.jpg", pairs))
    if not all_times:
        raise ConfigError(f"nothing to evaluate: the splits {cfg.eval.splits} are empty; set dataset.eval_camera_ids "
                          f"/ dataset.eval_frame_ids (or dataset.split_from_meta=true), or eval.splits=[all]")
    path = out_dir / RESULT_FILE
    results = {"name": cfg.recorder.name, "device": str(device), "render_backend": cfg.render.backend,
               "avatar": avatar.source, "model": avatar.model.kind,
               "num_gaussians": avatar.model.num_gaussians, "lpips": lpips_status,
               "splits": splits, "speed": _speed(all_times), "path": str(path)}
    write_bytes_atomic(path, (json.dumps(results, indent=2) + "\n").encode())
    return results


# -------------------------------------------------------------------------------------------------- table
def format_table(results: Dict[str, Any]) -> str:
    """Plain-text table: one row per split (render / output PSNR and SSIM, full and masked, LPIPS, speed)."""
    header = ["split", "images", "render", "PSNR", "SSIM", "PSNR-m", "SSIM-m", "output", "PSNR", "SSIM", "PSNR-m",
              "SSIM-m", "LPIPS", "ms", "FPS"]
    rows = [header]
    for split, entry in results["splits"].items():
        if not entry.get("num_images"):
            rows.append([split, "0"] + ["-"] * (len(header) - 2))
            continue
        row = [split, str(entry["num_images"])]
        for level, size in (("render", entry["render_resolution"]), ("output", entry["output_resolution"])):
            values = entry[level]
            row += [f"{size}^2", f"{values['psnr']:.2f}", f"{values['ssim']:.4f}", f"{values['psnr_masked']:.2f}",
                    f"{values['ssim_masked']:.4f}"]
        lpips_value = entry["output"].get("lpips")
        row += [f"{lpips_value:.4f}" if lpips_value is not None else "-", f"{entry['speed']['ms_per_frame']:.1f}",
                f"{entry['speed']['fps']:.1f}"]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows]
    avatar = results["avatar"]
    parts = ", ".join(f"{part} {size / 1e6:.3f} MB" for part, size in avatar["bytes"].items())
    lines.append("(PSNR/SSIM after each resolution are at that resolution; -m: masked)")
    lines.append(f"avatar: {avatar['kind']}, {avatar['total_bytes'] / 1e6:.3f} MB on disk ({parts}); "
                 f"{results['num_gaussians']} Gaussians; LPIPS {results['lpips']}")
    speed = results["speed"]
    lines.append(f"speed (generate + render + super-resolution, median over {speed['timed_frames']} frames on "
                 f"{results['device']}): {speed['ms_per_frame']:.1f} ms/frame, {speed['fps']:.1f} FPS")
    return "\n".join(lines)
