"""Viewer and driving speed (issue 21): the viewer's server-side frame time per output size, and the driving
pipeline's frames per second.

Viewer frame: what one browser update costs the server, cgha.apps.viewer's FrameRenderer (generate -> rasterise ->
post-render -> uint8 on the host) plus the JPEG encoding viser sends (OpenCV, quality 90), for a square output of
each --sizes, from the viewer's start camera: with a new expression (generate -> ...), and with only the camera
moved (orbiting: the posed Gaussians are reused, rasterise -> ...); median of --repeats after --warmup. Driving:
`reenactment.py`'s loop (cgha.apps.reenactment.Reenactment.run) over --driver's frames with relative head motion;
its render-only FPS and the wall-clock FPS with the PNG and mp4 writing.

    python benchmarks/bench_viewer.py --avatar checkpoints/demo/avatar.cgha --device cuda --driver checkpoints/demo/driver --out viewer.json
    python benchmarks/bench_viewer.py --gaussians 100000 --device cpu --threads 2 --sizes 256 512
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import gha_scale_head, markdown_table  # noqa: E402
from cgha.apps.viewer.app import device_name  # noqa: E402
from cgha.apps.viewer.avatar_source import open_avatar  # noqa: E402
from cgha.apps.viewer.camera import ViewCamera, look_at_camera, start_view  # noqa: E402
from cgha.apps.viewer.motion import avatar_reference  # noqa: E402
from cgha.apps.viewer.renderer import FrameRenderer  # noqa: E402
from cgha.avatar.subject import AvatarSubject  # noqa: E402
from cgha.compact.avatar_file import save_compact_avatar  # noqa: E402
from cgha.compact.quantizer import GroupedQuantizer, GroupSpec  # noqa: E402
from cgha.config import ReenactConfig, TrainConfig, load_config  # noqa: E402
from cgha.dataset.expression_basis import ExpressionBasis  # noqa: E402
from cgha.synthetic.expression import EXPRESSION_MODEL, EXPRESSION_NAMES  # noqa: E402
from cgha.module.super_resolution import SuperResolutionModule  # noqa: E402
from cgha.utils.device import use_fast_training_kernels  # noqa: E402
from cgha.utils.host_memory import keep_freed_memory_in_process  # noqa: E402

JPEG_QUALITY = 90  # the viewer's default (ViewerOptions.jpeg_quality)


def stand_in_avatar(path: Path, gaussians: int, device: torch.device) -> Path:
    """An untrained GHA-scale avatar (the full-scale synthetic config: GHA's network sizes, 16 expression
    coefficients; `gaussians` + mouth points) with the default compaction, recording a synthetic subject's neutral
    pose and expression basis: frame time does not depend on training."""
    cfg = load_config(TrainConfig, ROOT / "config" / "train_gaussianhead_synthetic.yaml", [], stage="gaussianhead")
    head = gha_scale_head(cfg, gaussians, torch.Generator().manual_seed(0)).to(device)
    quantizer = GroupedQuantizer.from_config(cfg.compact, GroupSpec.of(head)).to(device)  # k-means on the device
    quantizer.initialise({key: value.detach() for key, value in head.canonical_attributes().items()})
    subject = AvatarSubject([0.0] * 6, 0.125, ExpressionBasis(EXPRESSION_MODEL, EXPRESSION_NAMES))
    save_compact_avatar(path, head, SuperResolutionModule(cfg.supresmodule), quantizer, cfg.compact.store,
                        subject=subject.to_dict())
    return path


def viewer_frame_times(renderer: FrameRenderer, camera: ViewCamera, size: int, repeats: int, warmup: int,
                       reference) -> dict:
    """Median ms of a frame (to uint8 on the host) with a new expression, of one with only the camera moved, and of
    the JPEG encoding, for a size x size output."""
    generator = torch.Generator().manual_seed(1)
    dim = renderer.avatar.model.expression_dim
    times = {"render_ms": [], "orbit_ms": [], "jpeg_ms": []}
    for step in range(warmup + repeats):
        expression = (0.3 * torch.rand(dim, generator=generator))
        scale = torch.tensor([reference.scale])
        frame = renderer.render(expression, reference.pose, scale, camera, size, size)
        nudge = 0.02 * reference.scale * (1 if step % 2 else -1)
        moved = ViewCamera(camera.wxyz, (camera.position[0] + nudge, *camera.position[1:]), camera.fov_y)
        orbit = renderer.render(expression, reference.pose, scale, moved, size, size)
        if not frame.generated or orbit.generated:
            raise RuntimeError("the renderer did not reuse the posed Gaussians for a camera-only frame")
        start = time.perf_counter()
        ok, _ = cv2.imencode(".jpg", frame.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        encoded = time.perf_counter() - start
        if not ok:
            raise RuntimeError("JPEG encoding failed")
        if step >= warmup:
            for key, seconds in (("render_ms", frame.seconds), ("orbit_ms", orbit.seconds), ("jpeg_ms", encoded)):
                times[key].append(seconds * 1000)
    row = {key: statistics.median(values) for key, values in times.items()}
    return {"output": size, "render": size // renderer.upscale, **row, "frame_ms": row["render_ms"] + row["jpeg_ms"],
            "fps": 1000.0 / (row["render_ms"] + row["jpeg_ms"]),
            "orbit_fps": 1000.0 / (row["orbit_ms"] + row["jpeg_ms"]), "repeats": repeats}


def driving_fps(avatar_path: Path, driver: Path, device: torch.device, resolution: int, out: Path) -> dict:
    """reenactment.py's loop on `driver` (relative head motion, GHA's frontal camera, side by side)."""
    from cgha.apps.reenactment import Reenactment

    cfg = load_config(ReenactConfig, None, [
        f"load_gaussianhead_checkpoint={avatar_path}", f"device={device}", f"dataset.dataroot={driver}",
        "dataset.image_files=images/*/image_cam00.jpg", "dataset.pose_transfer=relative", "dataset.freeview=false",
        f"dataset.original_resolution={resolution}", f"dataset.resolution={resolution}",
        f"recorder.result_path={out}", "recorder.name=bench_viewer_driving"], stage="reenactment")
    app = Reenactment(cfg, device)
    start = time.perf_counter()
    result = app.run(progress=False)
    wall = time.perf_counter() - start
    return {"driver": str(driver), "frames": result["frames"], "output": resolution, "render_fps": result["fps"],
            "wall_fps": result["frames"] / wall, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--avatar", type=Path, help="a .cgha file or a raw run folder (default: a GHA-scale stand-in)")
    parser.add_argument("--gaussians", type=int, default=100_000, help="the stand-in's Gaussians (without --avatar)")
    parser.add_argument("--stand-in", type=Path, help="keep the stand-in avatar here (reused when it exists)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (torch.set_num_threads); 0 = default")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--driver", type=Path, help="a driver subject folder: also time the driving pipeline")
    parser.add_argument("--drive-resolution", type=int, default=512)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    keep_freed_memory_in_process()  # as view.py and reenactment.py run (cgha.errors.exit_on_user_error)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    use_fast_training_kernels(device)
    with tempfile.TemporaryDirectory() as folder:
        avatar_path = args.avatar
        if avatar_path is None:
            avatar_path = args.stand_in or Path(folder) / "stand_in.cgha"
            if not avatar_path.is_file():
                stand_in_avatar(avatar_path, args.gaussians, device)
        avatar = open_avatar(avatar_path, device)
        reference = avatar_reference(avatar)
        renderer = FrameRenderer(avatar, device, args.backend)
        camera = look_at_camera(start_view(reference.pose.tolist(), reference.scale))
        rows = [viewer_frame_times(renderer, camera, size, args.repeats, args.warmup, reference) for size in args.sizes]
        driving = driving_fps(avatar_path, args.driver, device, args.drive_resolution, Path(folder)) \
            if args.driver else None
    result = {"device": device_name(device), "torch": torch.__version__, "date": datetime.date.today().isoformat(),
              "avatar": str(args.avatar) if args.avatar else f"GHA-scale stand-in ({args.gaussians} + mouth)",
              "gaussians": avatar.model.num_gaussians, "backend": args.backend, "viewer": rows, "driving": driving}
    print(f"{result['device']}: {result['avatar']}, {result['gaussians']} Gaussians")
    print(markdown_table("viewer frame (server side)", [
        ("output", "output", "{}^2"), ("render", "render", "{}^2"), ("render ms", "render_ms", "{:.1f}"),
        ("JPEG ms", "jpeg_ms", "{:.1f}"), ("frame ms", "frame_ms", "{:.1f}"), ("FPS", "fps", "{:.1f}"),
        ("orbit render ms", "orbit_ms", "{:.1f}"), ("orbit FPS", "orbit_fps", "{:.1f}")], rows))
    if driving:
        print(f"driving: {driving['frames']} frames at {driving['output']}^2: {driving['render_fps']:.1f} FPS "
              f"rendering, {driving['wall_fps']:.1f} FPS with PNG + mp4 writing")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
