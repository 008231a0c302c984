"""Stage 3: drive a trained avatar (raw or compact file) with another sequence to PNG frames and an mp4.

    python reenactment.py --config config/reenactment_synthetic.yaml [key=value ...] [--export-ply K]
"""
from __future__ import annotations

import argparse
import logging

from lib.apps.reenactment import Reenactment
from lib.config import ReenactConfig, load_config
from lib.errors import exit_on_user_error
from lib.utils.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (GHA's reenactment keys + our sections)")
    parser.add_argument("--export-ply", type=int, default=None, metavar="K",
                        help="also write frame K's posed Gaussians as a 3D Gaussian Splatting .ply")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. dataset.freeview=false")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    cfg = load_config(ReenactConfig, args.config, args.overrides, stage="reenactment")
    result = Reenactment(cfg, resolve_device(cfg.device, cfg.gpu_id)).run(export_ply=args.export_ply)
    print(f"frames: {result['frames']} -> {result['frames_dir']}")
    print(f"video: {result['video']}")
    if result["ply"] is not None:
        print(f"ply: {result['ply']}")
    print(f"fps: {result['fps']:.2f}")


if __name__ == "__main__":
    exit_on_user_error(main)
