"""Stage 3: drive a trained avatar (raw or compact file) with another sequence to PNG frames and an mp4.

    python reenactment.py --config config/reenactment_synthetic.yaml [key=value ...] [--export-ply K] [--export-spz K]
    python reenactment.py --config checkpoints/demo/reenactment.yaml --driver-video clip.mp4   # or 0: a webcam

--driver-video tracks the video (cgha.tracking, needs the extra `track`) into a subject folder, reused when tracked
from the same file with the same arguments, and drives the avatar with its expressions and head motion relative to
its first frame, beside the avatar (docs/viewer.md).
"""
from __future__ import annotations

from pathlib import Path

from cgha.apps.cli import config_parser, int_at_least, parse_config
from cgha.apps.driver_video import DriverVideoOptions, driver_overrides, track_driver_video
from cgha.apps.reenactment import Reenactment
from cgha.config import ReenactConfig, load_config
from cgha.errors import exit_on_user_error


def main() -> None:
    parser = config_parser(__doc__, config_help="YAML config (GHA's reenactment keys + our sections)",
                           override_example="dataset.freeview=false")
    parser.add_argument("--export-ply", type=int, default=None, metavar="K",
                        help="also write frame K's posed Gaussians as a 3D Gaussian Splatting .ply")
    parser.add_argument("--export-spz", type=int, default=None, metavar="K",
                        help="also write frame K's posed Gaussians as a compressed .spz (needs the extra `export`)")
    parser.add_argument("--driver-video", metavar="VIDEO",
                        help="drive with this video (or webcam index 0, 1, ...), tracked first; replaces the "
                             "config's driver")
    parser.add_argument("--driver-out", type=Path, default=None,
                        help="--driver-video: the tracked subject folder (default data/driver_<video name>)")
    parser.add_argument("--fov", type=float, default=None,
                        help="--driver-video: field of view across its longer side, degrees (default: the tracker's)")
    parser.add_argument("--max-frames", type=int_at_least(1), default=None,
                        help="--driver-video: use at most this many frames (a webcam records this many, default 150)")
    args, cfg, device = parse_config(parser, ReenactConfig, stage="reenactment")
    if args.driver_video is not None:
        options = DriverVideoOptions(device=str(device), out=args.driver_out, fov_deg=args.fov,
                                     max_frames=args.max_frames)
        subject = track_driver_video(args.driver_video, options)
        cfg = load_config(ReenactConfig, args.config, list(args.overrides) + driver_overrides(subject),
                          stage="reenactment")
    result = Reenactment(cfg, device).run(export_ply=args.export_ply, export_spz=args.export_spz)
    print(f"frames: {result['frames']} -> {result['frames_dir']}")
    print(f"video: {result['video']}")
    for kind in ("ply", "spz"):
        if result[kind] is not None:
            print(f"{kind}: {result[kind]}")
    print(f"fps: {result['fps']:.2f}")


if __name__ == "__main__":
    exit_on_user_error(main)
