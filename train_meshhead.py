"""Stage 1: fit the mesh head (geometry guidance) to a subject.

    python train_meshhead.py --config config/train_meshhead_synthetic.yaml [key=value ...]
"""
from __future__ import annotations

import argparse
import logging

from lib.apps.training import train_mesh_head
from lib.config import TrainConfig, load_config
from lib.errors import exit_on_user_error
from lib.utils.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (GHA keys + our sections)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_iters=200")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    cfg = load_config(TrainConfig, args.config, args.overrides, stage="meshhead")
    metrics = train_mesh_head(cfg, resolve_device(cfg.device, cfg.gpu_id))
    if metrics:
        print(f"held-out cameras: mask IoU {metrics['mask_iou']:.4f}, PSNR {metrics['psnr']:.2f} dB")


if __name__ == "__main__":
    exit_on_user_error(main)
