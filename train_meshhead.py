"""Stage 1: fit the mesh head (geometry guidance) to a subject.

    python train_meshhead.py --config config/train_meshhead_synthetic.yaml [key=value ...]
"""
from __future__ import annotations

from cgha.apps.cli import config_parser, parse_config
from cgha.trainer.stages import train_mesh_head
from cgha.config import TrainConfig
from cgha.errors import exit_on_user_error


def main() -> None:
    _, cfg, device = parse_config(config_parser(__doc__), TrainConfig, stage="meshhead")
    metrics = train_mesh_head(cfg, device)
    if metrics:
        print(f"held-out cameras: mask IoU {metrics['mask_iou']:.4f}, PSNR {metrics['psnr']:.2f} dB")


if __name__ == "__main__":
    exit_on_user_error(main)
