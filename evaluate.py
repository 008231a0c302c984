"""Evaluate an avatar (raw checkpoints or a compact file) on the held-out cameras and frames.

    python evaluate.py --config config/train_gaussianhead_synthetic.yaml [key=value ...]

The avatar is `load_gaussianhead_checkpoint` (+ `load_supres_checkpoint` for a raw head), else the run's own
compact file or `gaussianhead_latest`. Prints a table and writes `{result_path}/{name}/evaluation.json`.
"""
from __future__ import annotations

from cgha.apps.cli import config_parser, parse_config
from cgha.apps.evaluation import evaluate_avatar, format_table
from cgha.config import TrainConfig
from cgha.errors import exit_on_user_error


def main() -> None:
    parser = config_parser(__doc__, override_example="eval.max_images=20")
    _, cfg, device = parse_config(parser, TrainConfig, stage="evaluate")
    results = evaluate_avatar(cfg, device)
    print(format_table(results))
    print(f"results: {results['path']}")


if __name__ == "__main__":
    exit_on_user_error(main)
