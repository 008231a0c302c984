"""Stage 3: drive a trained avatar (raw or compact file) with another sequence to PNG frames and an mp4.

    python reenactment.py --config config/reenactment_synthetic.yaml [key=value ...] [--export-ply K]
"""
from __future__ import annotations

from cgha.apps.cli import config_parser, parse_config
from cgha.apps.reenactment import Reenactment
from cgha.config import ReenactConfig
from cgha.errors import exit_on_user_error


def main() -> None:
    parser = config_parser(__doc__, config_help="YAML config (GHA's reenactment keys + our sections)",
                           override_example="dataset.freeview=false")
    parser.add_argument("--export-ply", type=int, default=None, metavar="K",
                        help="also write frame K's posed Gaussians as a 3D Gaussian Splatting .ply")
    args, cfg, device = parse_config(parser, ReenactConfig, stage="reenactment")
    result = Reenactment(cfg, device).run(export_ply=args.export_ply)
    print(f"frames: {result['frames']} -> {result['frames_dir']}")
    print(f"video: {result['video']}")
    if result["ply"] is not None:
        print(f"ply: {result['ply']}")
    print(f"fps: {result['fps']:.2f}")


if __name__ == "__main__":
    exit_on_user_error(main)
