"""Stage 2: fit the dynamic Gaussian head and the super-resolution network to a subject.

    python train_gaussianhead.py --config config/train_gaussianhead_synthetic.yaml [key=value ...]
"""
from __future__ import annotations

import argparse
import logging

from lib.apps.training import train_gaussian_head
from lib.config import TrainConfig, load_config
from lib.errors import exit_on_user_error
from lib.utils.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (GHA keys + our sections)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_iters=200")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    cfg = load_config(TrainConfig, args.config, args.overrides, stage="gaussianhead")
    metrics = train_gaussian_head(cfg, resolve_device(cfg.device, cfg.gpu_id))
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    exit_on_user_error(main)
