"""Stage 2: fit the dynamic Gaussian head and the super-resolution network to a subject.

    python train_gaussianhead.py --config config/train_gaussianhead_synthetic.yaml [key=value ...]
"""
from __future__ import annotations

from cgha.apps.cli import config_parser, parse_config
from cgha.trainer.stages import train_gaussian_head
from cgha.config import TrainConfig
from cgha.errors import exit_on_user_error


def main() -> None:
    _, cfg, device = parse_config(config_parser(__doc__), TrainConfig, stage="gaussianhead")
    metrics = train_gaussian_head(cfg, device)
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    exit_on_user_error(main)
