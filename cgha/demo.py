"""The main job on the synthetic subjects: generate -> mesh head -> Gaussian head with compaction -> evaluate (held-out
cameras and frames, and cross-identity ground truth: identity 0's avatar driven by identity 1's codes against identity
0 rendered making them) -> cross-identity free-view reenactment, with one summary at the end.

Every stage reads the shipped configs of one scale (`config/*{suffix}.yaml`) with only `device` and the paths that
chain the stages overridden, so each step can be re-run by hand with the same config (the summary prints the
commands). Stages resume: an interrupted demo continues where it stopped, and a finished stage costs only its
evaluation when the demo is run again.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from cgha.apps.evaluation import evaluate_avatar
from cgha.apps.reenactment import Reenactment
from cgha.trainer.stages import train_gaussian_head, train_mesh_head
from cgha.config import ReenactConfig, TrainConfig, load_config
from cgha.errors import ConfigError, DataError
from cgha.recorder.run_files import RunFiles
from cgha.synthetic import SubjectArgumentError, generate_subject
from cgha.utils.atomic import write_bytes_atomic
from cgha.utils.image_io import read_rgb, write_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoScale:
    """Subject sizes of one schedule; resolutions, networks and iteration counts live in the configs."""
    name: str
    config_suffix: str
    cameras: int
    frames: int          # identity 0, the avatar
    driver_frames: int   # identity 1, whose expressions drive the video


SCALES = {
    "demo": DemoScale("demo", "_synthetic_demo", cameras=8, frames=20, driver_frames=48),
    "full": DemoScale("full", "_synthetic", cameras=16, frames=40, driver_frames=80),
}
# Views of the cross-identity ground truth evaluated (evenly spaced over its frames and cameras): enough for a stable
# mean, few enough for the CPU demo's time budget.
CROSS_IDENTITY_IMAGES = 64
AVATAR_IDENTITY, DRIVER_IDENTITY = 0, 1
STRIP_FRAMES = 4  # reenactment frames in the summary strip image
# Summary row labels of the evaluated splits.
HELD_OUT_LABELS = {"test_cameras": "held-out cameras", "test_frames": "held-out frames",
                   "out_of_rig": "out-of-rig cameras"}


def default_scale(device: torch.device) -> str:
    """The CPU runs the demo schedule; a GPU runs the full one."""
    return "full" if device.type == "cuda" else "demo"


@dataclass
class DemoConfigs:
    mesh: TrainConfig
    gaussian: TrainConfig
    reenact: ReenactConfig
    files: Dict[str, Path]           # stage -> YAML file
    overrides: Dict[str, List[str]]  # stage -> the overrides the demo applied


def load_demo_configs(config_dir: Path, scale: DemoScale, device: str) -> DemoConfigs:
    """The three configs of `scale`, chained: the Gaussian head starts from this mesh head, and the video is
    rendered from the Gaussian head's compact file."""
    files = {stage: config_dir / f"{stage}{scale.config_suffix}.yaml"
             for stage in ("train_meshhead", "train_gaussianhead", "reenactment")}
    overrides = {stage: [f"device={device}"] for stage in files}
    mesh = load_config(TrainConfig, files["train_meshhead"], overrides["train_meshhead"], stage="meshhead")
    overrides["train_gaussianhead"].append(f"load_meshhead_checkpoint={RunFiles.of(mesh).checkpoint('meshhead')}")
    gaussian = load_config(TrainConfig, files["train_gaussianhead"], overrides["train_gaussianhead"],
                           stage="gaussianhead")
    if not gaussian.compact.enable:
        raise ConfigError(f"{files['train_gaussianhead']}: the demo shows compaction; set compact.enable: true")
    overrides["reenactment"] += [f"load_gaussianhead_checkpoint={RunFiles.of(gaussian).compact}",
                                 "load_supres_checkpoint="]
    reenact = load_config(ReenactConfig, files["reenactment"], overrides["reenactment"], stage="reenactment")
    return DemoConfigs(mesh, gaussian, reenact, files, overrides)


def timed(step: Callable[[], Any]) -> Tuple[Any, float]:
    start = time.perf_counter()
    result = step()
    return result, time.perf_counter() - start


def evaluation_overrides(cfg: TrainConfig) -> List[str]:
    """Point the Gaussian-head config at its run's compact file and learnt pose offsets (the held-out cameras
    use them)."""
    delta = RunFiles.of(cfg).checkpoint("delta_poses")
    return [f"load_gaussianhead_checkpoint={RunFiles.of(cfg).compact}", "load_supres_checkpoint=",
            f"load_delta_poses_checkpoint={delta if delta.is_file() else ''}"]


def _evaluate(cfgs: DemoConfigs, device: torch.device) -> Dict[str, Any]:
    stage = "train_gaussianhead"
    overrides = cfgs.overrides[stage] + evaluation_overrides(cfgs.gaussian)
    return evaluate_avatar(load_config(TrainConfig, cfgs.files[stage], overrides, stage="evaluate"), device)


def cross_identity_root(avatar_root: Path) -> Path:
    """Where the demo writes identity 0 rendered with identity 1's expression and pose codes (beside identity 0)."""
    return avatar_root.parent / f"id{AVATAR_IDENTITY}_codes_of_id{DRIVER_IDENTITY}"


def cross_identity_overrides(cfg: TrainConfig, root: Path) -> List[str]:
    """Overrides that make `evaluate.py` on the Gaussian-head config `cfg` score its run's compact avatar driven by
    identity 1's codes against the ground truth of its own identity making them (`root`): every view (no pose
    offsets: these frames were never trained on), written to its own evaluation folder."""
    return evaluation_overrides(cfg) + [
        f"dataset.dataroot={root}", "load_delta_poses_checkpoint=", "eval.splits=[all]",
        f"eval.max_images={CROSS_IDENTITY_IMAGES}", f"recorder.name={cfg.recorder.name}_cross_identity"]


def _evaluate_cross_identity(cfgs: DemoConfigs, root: Path, device: torch.device) -> Dict[str, Any]:
    stage = "train_gaussianhead"
    overrides = cfgs.overrides[stage] + cross_identity_overrides(cfgs.gaussian, root)
    return evaluate_avatar(load_config(TrainConfig, cfgs.files[stage], overrides, stage="evaluate"), device)


def write_strip(frames_dir: Path, count: int, out_path: Path) -> Path:
    """`count` evenly spaced reenactment frames side by side in one JPEG (for the README and a quick look)."""
    frames = sorted(frames_dir.glob("*.png"))
    picks = np.linspace(0, len(frames) - 1, num=min(count, len(frames))).round().astype(int)
    strip = np.concatenate([(read_rgb(frames[i]) * 255.0 + 0.5).astype(np.uint8) for i in picks], axis=1)
    write_image(out_path, strip)
    return out_path


def run_demo(config_dir: Path, scale: DemoScale, device: torch.device, results_root: Path) -> Dict[str, Any]:
    """Run every stage; returns the summary (also written to `{results_root}/demo_{scale}/summary.json`)."""
    cfgs = load_demo_configs(config_dir, scale, str(device))
    times: Dict[str, float] = {}
    subjects = [Path(cfgs.gaussian.dataset.dataroot), Path(cfgs.reenact.dataset.dataroot)]
    cross_root = cross_identity_root(subjects[0])

    def generate() -> None:
        resolution = cfgs.gaussian.dataset.original_resolution
        # The trajectories of expression and head pose follow the seed and the frame count, the look follows the
        # identity: identity 0 at the driver's seed and length is the ground truth of identity 0 making identity 1's
        # expressions and motion.
        identities = ((AVATAR_IDENTITY, AVATAR_IDENTITY, scale.frames, subjects[0], cfgs.files["train_gaussianhead"]),
                      (DRIVER_IDENTITY, DRIVER_IDENTITY, scale.driver_frames, subjects[1], cfgs.files["reenactment"]),
                      (AVATAR_IDENTITY, DRIVER_IDENTITY, scale.driver_frames, cross_root, cfgs.files["train_gaussianhead"]))
        for identity, seed, frames, root, config in identities:
            log.info("synthetic identity %d with the codes of seed %d -> %s", identity, seed, root)
            existed = root.exists()
            try:
                generate_subject(root, identity=identity, frames=frames, cameras=scale.cameras,
                                 resolution=resolution, seed=seed, device=device)
            except SubjectArgumentError:
                if not existed:
                    raise
                # Never overwrite data the demo did not write with these arguments; say what the demo wanted.
                raise DataError(f"{root} exists but is not the demo's synthetic identity {identity} ({frames} frames, "
                                f"{scale.cameras} cameras at {resolution}^2): delete it to regenerate it, or set "
                                f"dataset.dataroot in {config} to another folder") from None

    _, times["generate"] = timed(generate)
    log.info("stage 1/4: mesh head")
    mesh_metrics, times["mesh_head"] = timed(lambda: train_mesh_head(cfgs.mesh, device))
    log.info("stage 2/4: Gaussian head with compaction")
    gaussian_metrics, times["gaussian_head"] = timed(lambda: train_gaussian_head(cfgs.gaussian, device))
    log.info("stage 3/4: evaluation of the compact avatar (held-out splits, cross-identity ground truth)")
    (evaluation, cross), times["evaluate"] = timed(
        lambda: (_evaluate(cfgs, device), _evaluate_cross_identity(cfgs, cross_root, device)))
    log.info("stage 4/4: free-view reenactment")
    video, times["reenact"] = timed(lambda: Reenactment(cfgs.reenact, device).run())

    out_dir = results_root / f"demo_{scale.name}"
    out_dir.mkdir(parents=True, exist_ok=True)
    strip = write_strip(Path(video["frames_dir"]), STRIP_FRAMES, out_dir / "reenactment_strip.jpg")
    report = json.loads(RunFiles.of(cfgs.gaussian).compact_report.read_text())
    summary = {
        "scale": scale.name,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "seconds": {**times, "total": sum(times.values())},
        "mesh_head": mesh_metrics,
        "held_out": {split: split_summary(entry) for split, entry in evaluation["splits"].items()
                     if entry.get("num_images")},
        "cross_identity": split_summary(cross["splits"]["all"]),
        "training_eval": gaussian_metrics,
        "size": {"raw_mb": report["raw_bytes"] / 1e6, "compact_mb": report["compact_bytes"] / 1e6,
                 "ratio": report["ratio"], "num_gaussians": report["num_gaussians"],
                 "codebook_sizes": report["codebook_sizes"]},
        "fps": {"evaluation": evaluation["speed"]["fps"], "reenactment": video["fps"]},
        "paths": {"video": str(video["video"]), "frames": str(video["frames_dir"]), "strip": str(strip),
                  "compact_avatar": str(RunFiles.of(cfgs.gaussian).compact),
                  "evaluation": str(evaluation["path"]), "cross_identity_evaluation": str(cross["path"]),
                  "preview": str(subjects[0] / "preview.jpg")},
        "commands": _commands(cfgs),
    }
    summary_path = out_dir / "summary.json"
    summary["paths"]["summary"] = str(summary_path)
    write_bytes_atomic(summary_path, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def split_summary(entry: Dict[str, Any]) -> Dict[str, Any]:
    """One evaluated split's output-resolution numbers for the summary."""
    return {"psnr": entry["output"]["psnr"], "ssim": entry["output"]["ssim"],
            "psnr_masked": entry["output"]["psnr_masked"], "psnr_mouth": entry["output"].get("psnr_mouth"),
            "images": entry["num_images"],
            "resolution": entry["output_resolution"]}


def _commands(cfgs: DemoConfigs) -> List[str]:
    """The entry-script commands that redo each stage with the same configs."""
    def command(script: str, stage: str, extra: Sequence[str] = ()) -> str:
        return " ".join([f"python {script} --config {cfgs.files[stage]}", *cfgs.overrides[stage], *extra])

    return [command("train_meshhead.py", "train_meshhead"),
            command("train_gaussianhead.py", "train_gaussianhead"),
            command("evaluate.py", "train_gaussianhead", evaluation_overrides(cfgs.gaussian)),
            command("reenactment.py", "reenactment")]


def format_minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def format_summary(summary: Dict[str, Any]) -> str:
    """The summary as aligned plain-text rows."""
    rows: List[Tuple[str, str]] = []
    for split, entry in summary["held_out"].items():
        rows.append((HELD_OUT_LABELS.get(split, f"held-out {split}"),
                     f"{metrics_text(entry)} over {entry['images']} images at {entry['resolution']}^2"))
    cross = summary["cross_identity"]
    rows.append(("cross-identity", f"{metrics_text(cross)} over {cross['images']} images: identity 0's avatar "
                                   f"driven by identity 1's codes vs identity 0 rendered making them"))
    mesh = summary["mesh_head"]
    if mesh:
        rows.append(("mesh head (held-out)", f"mask IoU {mesh['mask_iou']:.4f}, PSNR {mesh['psnr']:.2f} dB"))
    rows.append(("avatar size", size_text(summary["size"])))
    fps = summary["fps"]
    rows.append(("speed", f"{fps['reenactment']:.1f} FPS reenactment, {fps['evaluation']:.1f} FPS evaluation "
                          f"({summary['device']})"))
    seconds = summary["seconds"]
    rows.append(("wall time", f"{format_minutes(seconds['total'])} (generate {seconds['generate']:.0f} s, mesh head "
                              f"{seconds['mesh_head']:.0f} s, Gaussian head {seconds['gaussian_head']:.0f} s, "
                              f"evaluate {seconds['evaluate']:.0f} s, reenact {seconds['reenact']:.0f} s)"))
    for name in ("video", "strip", "compact_avatar", "evaluation", "summary"):
        rows.append((name.replace("_", " "), summary["paths"][name]))
    return format_rows(rows, summary["commands"])


def metrics_text(entry: Dict[str, Any]) -> str:
    """One evaluation's image metrics (an `evaluate.py` split entry) as a summary phrase; the mouth's PSNR when the
    entry has it."""
    mouth = f", mouth PSNR {entry['psnr_mouth']:.2f}" if entry.get("psnr_mouth") is not None else ""
    return f"PSNR {entry['psnr']:.2f} dB, SSIM {entry['ssim']:.4f} (masked PSNR {entry['psnr_masked']:.2f}{mouth})"


def size_text(size: Dict[str, Any]) -> str:
    """The summary's `size` entry: raw and compact megabytes, their ratio and the Gaussian count."""
    return (f"raw {size['raw_mb']:.2f} MB -> compact {size['compact_mb']:.2f} MB ({size['ratio']:.1f}x smaller), "
            f"{size['num_gaussians']} Gaussians")


def format_rows(rows: Sequence[Tuple[str, str]], commands: Sequence[str]) -> str:
    """(label, value) rows aligned in two columns, then the commands that redo each stage."""
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    lines.append("re-run a stage:")
    lines += [f"  {command}" for command in commands]
    return "\n".join(lines)
