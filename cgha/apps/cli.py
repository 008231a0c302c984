"""What every entry script does before its own work: the `--config FILE [key=value ...]` command line, readable
logs, the validated config and the device it names."""
from __future__ import annotations

import argparse
import logging
from typing import Tuple, Type, TypeVar

import torch

from cgha.config import load_config
from cgha.utils.device import resolve_device

T = TypeVar("T")


def int_at_least(low: int):
    """An argparse ``type``: an integer >= ``low``, else an error naming the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def config_parser(doc: str, config_help: str = "YAML config (GHA keys + our sections)",
                  override_example: str = "train.max_iters=200") -> argparse.ArgumentParser:
    """A parser with `--config` and the dotted overrides; scripts add their own options before parsing."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Every config key, its type, default and meaning: docs/config.md. Run from "
                                            "the repository root: the shipped configs name paths relative to it.")
    parser.add_argument("--config", required=True, help=config_help)
    parser.add_argument("overrides", nargs="*", help=f"dotted key=value overrides, e.g. {override_example}")
    return parser


def parse_config(parser: argparse.ArgumentParser, schema: Type[T], stage: str
                 ) -> Tuple[argparse.Namespace, T, torch.device]:
    """Parse the command line, start logging, load and validate the config for `stage`; returns (args, cfg,
    device)."""
    args = parser.parse_args()
    setup_logging()
    cfg = load_config(schema, args.config, args.overrides, stage=stage)
    return args, cfg, resolve_device(cfg.device, cfg.gpu_id)
