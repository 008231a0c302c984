"""The main job: a compact, animatable Gaussian head avatar from the synthetic multi-view subject, end to end.

Generates two synthetic identities (if absent), trains the mesh head and the Gaussian head with codebook compaction
on identity 0, evaluates the compact avatar on held-out cameras and frames, and renders identity 0 driven by
identity 1's expressions as a free-view video. Prints one summary table and the output paths.

    python demo.py                  # CPU: the demo schedule (config/*_synthetic_demo.yaml)
    python demo.py --device cuda    # GPU: the full schedule (config/*_synthetic.yaml), better quality

Re-running continues an interrupted demo; delete checkpoints/, log/ and results/ runs to start over.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from cgha.apps.cli import setup_logging
from cgha.demo import SCALES, default_scale, format_summary, run_demo
from cgha.errors import exit_on_user_error
from cgha.utils.device import resolve_device

ROOT = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--scale", choices=sorted(SCALES), default=None,
                        help="schedule: demo (the default on CPU) or full (the default on a GPU)")
    args = parser.parse_args()
    setup_logging()
    device = resolve_device(args.device)
    scale = SCALES[args.scale or default_scale(device)]
    # The configs name repo-relative data and output paths.
    os.chdir(ROOT)
    summary = run_demo(Path("config"), scale, device, Path("results"))
    print(format_summary(summary))


if __name__ == "__main__":
    exit_on_user_error(main)
