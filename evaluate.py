"""Evaluate an avatar (raw checkpoints or a compact file) on the held-out cameras and frames.

    python evaluate.py --config config/train_gaussianhead_synthetic.yaml [key=value ...]

The avatar is `load_gaussianhead_checkpoint` (+ `load_supres_checkpoint` for a raw head), else the run's own
compact file or `gaussianhead_latest`. Prints a table and writes `{result_path}/{name}/evaluation.json`.
"""
from __future__ import annotations

import argparse
import logging

from lib.apps.evaluation import evaluate_avatar, format_table
from lib.config import TrainConfig, load_config
from lib.errors import exit_on_user_error
from lib.utils.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (GHA keys + our sections)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. eval.max_images=20")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    cfg = load_config(TrainConfig, args.config, args.overrides, stage="evaluate")
    results = evaluate_avatar(cfg, resolve_device(cfg.device, cfg.gpu_id))
    print(format_table(results))
    print(f"results: {results['path']}")


if __name__ == "__main__":
    exit_on_user_error(main)
