"""Stage 2: fit the dynamic Gaussian head and the super-resolution network to a subject.

    python train_gaussianhead.py --config config/train_gaussianhead_synthetic.yaml [key=value ...]
"""
from __future__ import annotations

import argparse
import logging

from lib.config import TrainConfig, load_config
from lib.dataset import GaussianDataset
from lib.errors import exit_on_user_error
from lib.trainer.gaussian_head_trainer import GaussianHeadTrainer
from lib.utils.device import resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML config (GHA keys + our sections)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.max_iters=200")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")

    cfg = load_config(TrainConfig, args.config, args.overrides, stage="gaussianhead")
    device = resolve_device(cfg.device, cfg.gpu_id)
    dataset = GaussianDataset(cfg.dataset, split="train", expected_exp_dim=cfg.gaussianheadmodule.exp_coeffs_dim,
                              exp_dim_key="gaussianheadmodule.exp_coeffs_dim")
    subject = dataset.subject
    held_out = {split: GaussianDataset(cfg.dataset, split=split, views="all", subject=subject)
                for split, present in (("test_cameras", subject.eval_cameras), ("test_frames", subject.eval_frames))
                if present}
    metrics = GaussianHeadTrainer(cfg, device, dataset, held_out).fit()
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}")


if __name__ == "__main__":
    exit_on_user_error(main)
