"""Train the Gaussian prior over K identities (one-shot avatars come from it: fit_oneshot.py).

    python train_prior.py --config config/train_prior_demo.yaml [key=value ...]
    torchrun --nproc-per-node 2 train_prior.py --config config/train_prior_full.yaml      # DDP (NCCL / gloo)

The same command runs on one process or under torchrun on N: identities are sharded over the processes, gradients
are all-reduced, only rank 0 writes `{recorder.checkpoint_path}/{recorder.name}/prior_latest` (and the training
state it resumes from). Missing identities are generated first (data.generate). docs/prior.md has the details.
"""
from __future__ import annotations

import json

from cgha.apps.cli import config_parser, setup_logging
from cgha.errors import exit_on_user_error


def main() -> None:
    from cgha.prior.config import load_prior_config
    from cgha.prior.distributed import process_group
    from cgha.prior.train import PriorTrainer

    args = config_parser(__doc__, override_example="train.iters=200").parse_args()
    setup_logging()
    cfg = load_prior_config(args.config, args.overrides)
    with process_group(cfg.device) as proc:
        summary = PriorTrainer(cfg, proc).fit()
        if proc.is_writer:
            print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    exit_on_user_error(main)
