"""`python demo.py --video my.mp4`: a compact monocular avatar from one video, end to end (issue 18).

Stages: track the video into a subject folder (cgha.tracking, in process; reused when already tracked with the same
arguments) -> train a mesh head on the tracked subject (config/train_meshhead_monocular.yaml on a GPU, the demo mesh
head on the CPU; skipped with `mesh_head=False`) -> train the monocular Gaussian head from the mesh head's points (or
from MonoGaussianAvatar's sphere of points) with scheduled insertion/deletion and compaction
(config/train_gaussianhead_monocular_demo.yaml on the CPU, config/train_gaussianhead_monocular.yaml on a GPU) ->
evaluate the compact avatar on the held-out frames (the last 15 % of the tracked frames) -> reenact it with
the video's own expressions and poses, and with the synthetic identity 1's (relative head motion) -> one summary.

Every stage reads the shipped config with only the paths, resolution, device and length overridden, and the summary
prints the commands that redo each stage. docs/monocular.md explains the choices.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch

from cgha.apps.evaluation import evaluate_avatar
from cgha.apps.reenactment import Reenactment
from cgha.config import ReenactConfig, TrainConfig, load_config, save_config
from cgha.demo import (evaluation_overrides, format_minutes, format_rows, metrics_text, size_text, split_summary, timed,
                       write_strip)
from cgha.errors import ConfigError, DataError
from cgha.recorder.run_files import RunFiles
from cgha.synthetic import SubjectArgumentError, generate_monocular_subject
from cgha.tracking.pipeline import DEFAULT_FOV_DEG
from cgha.trainer.stages import train_gaussian_head, train_mesh_head
from cgha.utils.atomic import write_bytes_atomic

from .estimate import TrainingEstimate, estimate_training, start_point_count
from .track import HOLDOUT_FRACTION, TrackedSubject, inspect_video, track_command, track_or_reuse

log = logging.getLogger(__name__)

CONFIG_FILES = {"cpu": "train_gaussianhead_monocular_demo.yaml", "cuda": "train_gaussianhead_monocular.yaml"}
# The mesh heads whose networks those Gaussian-head configs' meshheadmodule sections read.
MESH_HEAD_CONFIG_FILES = {"cpu": "train_meshhead_synthetic_demo.yaml", "cuda": "train_meshhead_monocular.yaml"}
# The mesh head's length when its config counts epochs (the CPU's): 10 epochs of the 54 training frames of the
# monocular demo video, 90 s on 2 cores (docs/monocular.md). In iterations, so a long video does not lengthen it.
MESH_HEAD_ITERATIONS = 540
DRIVER_IDENTITY = 1  # the synthetic demo's driver; its seed is its identity, as there
DRIVER_FRAMES = {"cpu": 40, "cuda": 120}
STRIP_FRAMES = 4
EVAL_SHEET_IMAGES = 4  # held-out views (ground truth over output) in one image beside evaluation.json


@dataclass
class VideoDemoOptions:
    """One run of the video demo. Paths relative to the working directory (demo.py runs from the repository root).

    Attributes:
        video: the input video; device: where tracking's fit, training and rendering run.
        out: the subject folder (None: `{data_root}/video_<stem>`).
        fov_deg: the camera's field of view across the longer side of the frame (cgha.tracking's --fov).
        max_frames: track at most this many frames (None: all).
        resolution: image side of the tracked subject and the avatar (None: the config's dataset.resolution).
        driver_frames: frames of the synthetic driver (None: 40 on the CPU, 120 on a GPU).
        train_overrides: extra `key=value` overrides of the training config, applied last (tests shorten the
            schedule with them; not a command-line option).
        track_options: extra cgha.tracking TrackOptions fields (tests: a smaller face model).
        photometric: refine the tracked head poses photometrically (the tracker's `--photometric`); None: on a GPU
            (about 25 s for 300 frames at 512²), not on the CPU (about 2.7 s per frame at 256² on 2 cores, while the
            rest of the CPU demo takes minutes whatever the video's length). Measured on the CPU demo, 3 seeds:
            held-out frames +1.83 dB (docs/monocular.md).
        estimate: time a few training steps first and log how long training will take.
        mesh_head: train a mesh head on the tracked subject first and start the Gaussian head from it (the
            default); False: MonoGaussianAvatar's sphere start. Measured on the synthetic videos, docs/points.md:
            the mesh-head start is 1.5-3 dB better on held-out frames and new views, for 90 s of mesh head on 2
            CPU cores (demo) or an H100 (full scale).
        mesh_head_overrides: extra `key=value` overrides of the mesh head's config, applied last (tests).
    """
    video: Path
    device: torch.device
    out: Optional[Path] = None
    config_dir: Path = Path("config")
    data_root: Path = Path("data")
    results_root: Path = Path("results")
    fov_deg: Optional[float] = None
    max_frames: Optional[int] = None
    resolution: Optional[int] = None
    driver_frames: Optional[int] = None
    train_overrides: Sequence[str] = ()
    track_options: Dict[str, Any] = field(default_factory=dict)
    photometric: Optional[bool] = None
    estimate: bool = True
    mesh_head: bool = True
    mesh_head_overrides: Sequence[str] = ()


def safe_name(stem: str) -> str:
    """A video's file stem as a folder / run name: letters, digits, '_', '-' (anything else becomes '_')."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", stem) or "video"


def training_iterations(cfg: TrainConfig, train_frames: int) -> int:
    """The run's length in iterations, whatever the video's length.

    The point schedule (points.every / stop_iter) and compact.start_iter count iterations, so an epoch-based length
    would move the end of training relative to them: a 30-frame video at 10 epochs would stop before compaction
    starts, a 600-frame one would train ten times longer. Both monocular configs therefore set `train.max_iters`;
    a config that counts epochs instead trains for `train.epochs` x the video's training frames.
    """
    if cfg.train.max_iters > 0:
        return cfg.train.max_iters
    return cfg.train.epochs * train_frames


@dataclass
class _Run:
    """The configs of one video demo run and the overrides that made them (for the re-run commands)."""
    config_file: Path
    train: TrainConfig
    train_overrides: List[str]
    reenact: Dict[str, ReenactConfig]
    reenact_files: Dict[str, Path]


def _subject_overrides(options: VideoDemoOptions, subject: TrackedSubject, name: str) -> List[str]:
    """What points a stage's config at the tracked subject and a run of its own (both stages share them)."""
    return [f"device={options.device}", f"dataset.dataroot={subject.root}",
            f"dataset.original_resolution={subject.resolution}", "dataset.camera_ids=[]",
            "dataset.eval_camera_ids=[]", "dataset.eval_frame_ids=[]", "dataset.split_from_meta=true",
            # A subject tracked again is new data: start over instead of resuming the old subject's run.
            f"train.resume={str(subject.reused).lower()}", f"recorder.name={name}", f"recorder.logdir=log/{name}"]


def _mesh_head_config(options: VideoDemoOptions, subject: TrackedSubject) -> Tuple[Path, TrainConfig, List[str]]:
    """The mesh head's config file, config and overrides: the device's mesh head on the tracked subject's one
    camera, at its config's resolution or the subject's when that is smaller."""
    config_file = options.config_dir / MESH_HEAD_CONFIG_FILES[options.device.type]
    base = load_config(TrainConfig, config_file, [f"device={options.device}"], stage="meshhead")
    name = f"video_{safe_name(options.video.stem)}_meshhead"
    iterations = base.train.max_iters if base.train.max_iters > 0 else MESH_HEAD_ITERATIONS
    overrides = [*_subject_overrides(options, subject, name),
                 f"dataset.resolution={min(base.dataset.resolution, subject.resolution)}",
                 "dataset.num_sample_view=1", "train.epochs=0", f"train.max_iters={iterations}",
                 *options.mesh_head_overrides]
    return config_file, load_config(TrainConfig, config_file, overrides, stage="meshhead"), overrides


class TrainPlan(NamedTuple):
    """The video demo's training run: its config, the overrides that made it, and the Gaussians it starts from."""

    cfg: TrainConfig
    overrides: List[str]
    start_points: int


def _train_config(options: VideoDemoOptions, config_file: Path, subject: TrackedSubject,
                  mesh_head: Optional[Path] = None) -> TrainPlan:
    """The training config of the run and the overrides that made it (docs/monocular.md, "Training config");
    `mesh_head`: the checkpoint to start from (points.init=model) instead of the config's sphere. The start count
    is computed once here (a mesh-head start builds the model) and reused by the estimate."""
    base = load_config(TrainConfig, config_file, [f"device={options.device}"], stage="gaussianhead")
    name = f"video_{safe_name(options.video.stem)}_{config_file.stem.replace('train_gaussianhead_', '')}"
    if mesh_head is not None:
        name += "_meshstart"
    start = ["points.init=model", f"load_meshhead_checkpoint={mesh_head}"] if mesh_head is not None else []
    common = [*_subject_overrides(options, subject, name), f"dataset.resolution={subject.resolution}",
              "train.epochs=0", f"train.max_iters={training_iterations(base, len(subject.train_frames))}", *start]
    overrides = [*common, *options.train_overrides]
    cfg = load_config(TrainConfig, config_file, overrides, stage="gaussianhead")
    start_points = start_point_count(cfg, options.device)
    if mesh_head is not None and _start_fills_max_points(cfg, start_points):
        overrides = [*common, "points.every=0", *options.train_overrides]
        cfg = load_config(TrainConfig, config_file, overrides, stage="gaussianhead")
    expected = "model" if mesh_head is not None else "sphere"
    if cfg.points.init != expected:
        start_text = "starts from its mesh head" if mesh_head is not None else "trains without a mesh head"
        raise ConfigError(f"{config_file}: the video demo {start_text}; points.init must be {expected}, got "
                          f"{cfg.points.init}")
    if not cfg.compact.enable:
        raise ConfigError(f"{config_file}: the demo shows compaction; set compact.enable: true")
    if cfg.compact.start_iter >= cfg.train.max_iters:
        raise ConfigError(f"{config_file}: compact.start_iter {cfg.compact.start_iter} is not before the end of "
                          f"training (iteration {cfg.train.max_iters}): compaction would never start")
    return TrainPlan(cfg, overrides, start_points)


def _tracking_extras(options: VideoDemoOptions) -> Dict[str, Any]:
    """TrackOptions fields beyond the demo's own: `photometric` only when on, so a subject tracked before the option
    existed keeps matching its reuse record."""
    return {**({"photometric": True} if tracks_photometrically(options) else {}), **options.track_options}


def tracks_photometrically(options: VideoDemoOptions) -> bool:
    """Whether the demo refines the tracked poses photometrically: as asked, else on a GPU only (see
    VideoDemoOptions.photometric)."""
    return options.photometric if options.photometric is not None else options.device.type == "cuda"


def _start_fills_max_points(cfg: TrainConfig, start: int) -> bool:
    """Whether the run's point edits could only delete: its `start` (the mesh head's points) is not below
    points.max_points. On the synthetic videos such edits deleted nothing (docs/points.md: the same numbers as no
    edits), so the demo trains the mesh head's points as a fixed set, as GHA does, rather than run edits that the
    trainer warns about."""
    if not cfg.points.only_deletes(start):  # also False when the config makes no edits
        return False
    log.info("the mesh head gives %d points, not below points.max_points (%d): the points are a fixed set "
             "(points.every=0)", start, cfg.points.max_points)
    return True


def _reenact_configs(options: VideoDemoOptions, cfg: TrainConfig, subject: TrackedSubject, driver: Path,
                     out_dir: Path, fps: float) -> Tuple[Dict[str, ReenactConfig], Dict[str, Path]]:
    """Two reenactments of the compact avatar from the video's camera, each beside its driver's frames: `own`
    (the video's tracked expressions and poses as they are) and `synthetic` (identity 1's expressions, its head
    motion relative to its first frame applied to the avatar's own first pose)."""
    first = subject.frames[0]
    camera = subject.root / "cameras" / first / f"camera_{subject.camera}.npz"
    common = [f"device={options.device}", f"load_gaussianhead_checkpoint={RunFiles.of(cfg).compact}",
              "load_supres_checkpoint=", f"dataset.camera_path={camera}", "dataset.freeview=false",
              f"dataset.original_resolution={subject.resolution}", f"dataset.resolution={subject.resolution}",
              f"recorder.result_path={options.results_root / 'reenactment'}", f"video_fps={fps:g}"]
    drivers = {
        "own": [f"dataset.dataroot={subject.root}", f"dataset.image_files=images/*/image_{subject.camera}.jpg",
                "dataset.pose_transfer=absolute", f"recorder.name={cfg.recorder.name}_own"],
        "synthetic": [f"dataset.dataroot={driver}", "dataset.image_files=images/*/image_cam00.jpg",
                      f"dataset.pose_code_path={subject.root / 'params' / first / 'params.npz'}",
                      "dataset.pose_transfer=relative", f"recorder.name={cfg.recorder.name}_id{DRIVER_IDENTITY}"],
    }
    configs, files = {}, {}
    for kind, overrides in drivers.items():
        configs[kind] = load_config(ReenactConfig, None, common + overrides, stage="reenactment")
        files[kind] = out_dir / f"reenactment_{kind}.yaml"
    return configs, files


def _generate_driver(options: VideoDemoOptions, resolution: int) -> Path:
    """The synthetic identity 1, monocular preset, at the avatar's resolution (generated once, then reused)."""
    frames = options.driver_frames or DRIVER_FRAMES[options.device.type]
    root = options.data_root / "synthetic_mono_driver" / f"id{DRIVER_IDENTITY}_{frames}f_{resolution}"
    existed = root.exists()
    log.info("synthetic driver: identity %d, %d frames at %d^2 -> %s", DRIVER_IDENTITY, frames, resolution, root)
    try:
        return generate_monocular_subject(root, identity=DRIVER_IDENTITY, frames=frames, resolution=resolution,
                                          seed=DRIVER_IDENTITY, device=options.device)
    except SubjectArgumentError:
        if not existed:
            raise
        raise DataError(f"{root} exists but is not the demo's synthetic identity {DRIVER_IDENTITY} ({frames} frames "
                        f"at {resolution}^2): delete it to regenerate it") from None


def _log_estimate(estimate: TrainingEstimate, device: torch.device) -> None:
    steps = ", ".join(f"{seconds:.2f} s at {count} Gaussians" for count, seconds in estimate.step_seconds.items())
    log.info("estimate on %s: training %d iterations takes about %s (measured %s per iteration), then evaluation "
             "and reenactment render %d frames, about %s (%.2f s each); the probe took %.0f s", device,
             estimate.iterations, format_minutes(estimate.training_seconds), steps, estimate.render_frames,
             format_minutes(estimate.render_total_seconds), estimate.render_seconds, estimate.probe_seconds)


def run_video_demo(options: VideoDemoOptions) -> Dict[str, Any]:
    """Run every stage; returns the summary (also written to `{results_root}/video_<stem>/summary.json`)."""
    device = options.device
    video = inspect_video(options.video, options.max_frames)  # a bad video fails before anything is written
    config_file = options.config_dir / CONFIG_FILES[device.type]
    base = load_config(TrainConfig, config_file, [f"device={device}"], stage="gaussianhead")
    resolution = options.resolution or base.dataset.resolution
    fov = options.fov_deg if options.fov_deg is not None else DEFAULT_FOV_DEG
    stem = safe_name(options.video.stem)
    out = options.out or options.data_root / f"video_{stem}"
    out_dir = options.results_root / f"video_{stem}"
    times: Dict[str, float] = {}

    stages = 6 if options.mesh_head else 5
    stage = iter(range(1, stages + 1))
    log.info("stage %d/%d: tracking", next(stage), stages)
    subject, times["track"] = timed(lambda: track_or_reuse(video, out, resolution, fov, options.max_frames,
                                                           str(device), _tracking_extras(options)))
    out_dir.mkdir(parents=True, exist_ok=True)
    mesh: Optional[Dict[str, Any]] = None
    mesh_checkpoint: Optional[Path] = None
    if options.mesh_head:
        mesh_file, mesh_cfg, mesh_overrides = _mesh_head_config(options, subject)
        log.info("stage %d/%d: mesh head on the tracked subject (%s)", next(stage), stages, mesh_file)
        mesh_metrics, times["mesh_head"] = timed(lambda: train_mesh_head(mesh_cfg, device))
        mesh_checkpoint = RunFiles.of(mesh_cfg).checkpoint("meshhead")
        mesh = {"config": str(mesh_file), "checkpoint": str(mesh_checkpoint), "held_out": mesh_metrics,
                "overrides": mesh_overrides}
    cfg, overrides, start_points = _train_config(options, config_file, subject, mesh_checkpoint)
    if mesh is not None:
        mesh["points"] = "edited" if cfg.points.editing else "fixed"
    driver_frames = options.driver_frames or DRIVER_FRAMES[device.type]

    estimate: Optional[TrainingEstimate] = None
    finished = cfg.train.resume and RunFiles.of(cfg).compact.is_file()
    if options.estimate and not finished:
        render_frames = len(subject.held_out) + len(subject.frames) + driver_frames
        estimate, times["estimate"] = timed(lambda: estimate_training(cfg, device, render_frames, start_points))
        _log_estimate(estimate, device)
    log.info("stage %d/%d: monocular Gaussian head (%s start, %s, compaction), %d iterations on %d training frames",
             next(stage), stages, "mesh-head" if mesh is not None else "sphere",
             "point insertion/deletion" if cfg.points.editing else "a fixed set of points", cfg.train.max_iters,
             len(subject.train_frames))
    training_eval, times["train"] = timed(lambda: train_gaussian_head(cfg, device))

    log.info("stage %d/%d: evaluation of the compact avatar on the %d held-out frames", next(stage), stages,
             len(subject.held_out))
    eval_overrides = overrides + evaluation_overrides(cfg) + ["eval.splits=[test_frames]",
                                                              f"eval.sheet_images={EVAL_SHEET_IMAGES}"]
    evaluation, times["evaluate"] = timed(lambda: evaluate_avatar(
        load_config(TrainConfig, config_file, eval_overrides, stage="evaluate"), device))

    log.info("stage %d/%d: synthetic driver", next(stage), stages)
    driver, times["driver"] = timed(lambda: _generate_driver(options, subject.resolution))
    reenact, reenact_files = _reenact_configs(options, cfg, subject, driver, out_dir, video.fps or 25.0)
    log.info("stage %d/%d: reenactment with the video's own expressions and with identity %d's", next(stage), stages,
             DRIVER_IDENTITY)
    videos, times["reenact"] = timed(lambda: {kind: Reenactment(c, device).run() for kind, c in reenact.items()})
    for kind, c in reenact.items():
        save_config(c, reenact_files[kind])

    strip = write_strip(Path(videos["synthetic"]["frames_dir"]), STRIP_FRAMES, out_dir / "reenactment_strip.jpg")
    report = json.loads(RunFiles.of(cfg).compact_report.read_text())
    held = evaluation["splits"]["test_frames"]
    summary = {
        "video": str(options.video), "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "tracking": {"subject": str(subject.root), "reused": subject.reused, "frames_found": subject.frames_found,
                     "frames_tracked": len(subject.frames), "dropped": subject.dropped,
                     "train_frames": len(subject.train_frames), "held_out_frames": len(subject.held_out),
                     "held_out_fraction": HOLDOUT_FRACTION, "reprojection_px": subject.reprojection_px,
                     "resolution": subject.resolution, "fov_deg": fov,
                     "photometric": tracks_photometrically(options)},
        "config": str(config_file), "iterations": cfg.train.max_iters, "mesh_head": mesh,
        "estimate": estimate.to_dict() if estimate else None,
        "seconds": {**times, "total": sum(times.values())},
        "held_out": {"test_frames": split_summary(held)},
        "training_eval": training_eval,
        "size": {"raw_mb": report["raw_bytes"] / 1e6, "compact_mb": report["compact_bytes"] / 1e6,
                 "ratio": report["ratio"], "num_gaussians": report["num_gaussians"],
                 "codebook_sizes": report["codebook_sizes"]},
        "fps": {"evaluation": evaluation["speed"]["fps"],
                "reenactment": {kind: result["fps"] for kind, result in videos.items()}},
        "paths": {"subject": str(subject.root), "video_own": str(videos["own"]["video"]),
                  "video_synthetic": str(videos["synthetic"]["video"]), "strip": str(strip),
                  "compact_avatar": str(RunFiles.of(cfg).compact), "evaluation": str(evaluation["path"]),
                  "held_out_sheet": held.get("sheet"), "driver": str(driver)},
        "commands": _commands(video, out, subject, fov, options, config_file, overrides, cfg, reenact_files, mesh),
    }
    summary_path = out_dir / "summary.json"
    summary["paths"]["summary"] = str(summary_path)
    write_bytes_atomic(summary_path, (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def _commands(video, out: Path, subject: TrackedSubject, fov: float, options: VideoDemoOptions, config_file: Path,
              overrides: List[str], cfg: TrainConfig, reenact_files: Dict[str, Path],
              mesh: Optional[Dict[str, Any]]) -> List[str]:
    """The commands that redo each stage with the same settings."""
    mesh_head = [" ".join([f"python train_meshhead.py --config {mesh['config']}", *mesh["overrides"]])] if mesh else []
    train = " ".join([f"python train_gaussianhead.py --config {config_file}", *overrides])
    evaluate = " ".join([f"python evaluate.py --config {config_file}", *overrides, *evaluation_overrides(cfg),
                         "eval.splits=[test_frames]"])
    return [track_command(video, out, subject.resolution, fov, options.max_frames, str(options.device),
                          tracks_photometrically(options)), *mesh_head,
            train, evaluate, *(f"python reenactment.py --config {path}" for path in reenact_files.values())]


def format_video_summary(summary: Dict[str, Any]) -> str:
    """The video demo's summary as aligned plain-text rows (as the synthetic demo's)."""
    track = summary["tracking"]
    reused = ", reused from an earlier run" if track["reused"] else ""
    refined = ", poses refined photometrically" if track.get("photometric") else ""
    reprojection = (f", landmark reprojection median {track['reprojection_px']:.2f} px"
                    if track["reprojection_px"] is not None else "")
    rows: List[Tuple[str, str]] = [
        ("video", f"{summary['video']}: {track['frames_found']} frames found, {track['frames_tracked']} tracked "
                  f"({track['dropped']} dropped) at {track['resolution']}^2{reprojection}{refined}{reused}"),
        ("frames", f"{track['train_frames']} trained on, {track['held_out_frames']} held out (the last "
                   f"{track['held_out_fraction']:.0%}); {summary['iterations']} iterations of {summary['config']}"),
    ]
    if summary.get("mesh_head"):
        mesh = summary["mesh_head"]
        fixed = ("; its points a fixed set (no insertion: not below points.max_points)"
                 if mesh.get("points") == "fixed" else "")
        rows.append(("start", f"the mesh head of {mesh['config']} trained on the video ({mesh['checkpoint']})"
                              f"{fixed}"))
    held = summary["held_out"]["test_frames"]
    rows.append(("held-out frames", f"{metrics_text(held)} over {held['images']} images at {held['resolution']}^2"))
    rows.append(("avatar size", size_text(summary["size"])))
    fps = summary["fps"]
    rows.append(("speed", f"{fps['reenactment']['own']:.1f} FPS reenactment, {fps['evaluation']:.1f} FPS evaluation "
                          f"({summary['device']})"))
    seconds = summary["seconds"]
    estimate = summary["estimate"]
    if estimate:
        rows.append(("estimate", f"training {format_minutes(estimate['training_seconds'])} estimated, "
                                 f"{format_minutes(seconds['train'])} taken"))
    stages = ", ".join(f"{name.replace('_', ' ')} {seconds[name]:.0f} s" for name in
                       ("track", "mesh_head", "estimate", "train", "evaluate", "driver", "reenact") if name in seconds)
    rows.append(("wall time", f"{format_minutes(seconds['total'])} ({stages})"))
    for name in ("video_own", "video_synthetic", "strip", "compact_avatar", "evaluation", "summary"):
        rows.append((name.replace("_", " "), summary["paths"][name]))
    return format_rows(rows, summary["commands"])
