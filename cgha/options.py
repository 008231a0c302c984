"""The building blocks of typed config sections, shared by every component that owns one.

A component (a network, the compaction strategy, an avatar model) declares its section as a dataclass whose fields
are `option(default, help, min=..., max=..., choices=...)` and, where keys constrain each other, a
`check(prefix)` method raising ConfigError; `cgha.config` composes the sections into the top-level schemas, loads
YAML strictly and calls the checks. This module imports nothing heavier than the standard library, so a component
module can declare its section without importing the loader.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import field
from typing import Any, List, Optional, Sequence, Type

from cgha.errors import ConfigError

# Dimensions GHA fixes in its module code rather than its config; configs are checked against them.
GAUSSIAN_FEATURE_DIM = 128
POSE_DIM = 6
GAUSSIAN_ATTRIBUTE_DIM = 8  # scale (3) + rotation (4) + opacity (1) offsets


def option(default: Any, help: str = "", *, min: Optional[float] = None, max: Optional[float] = None,
           choices: Optional[Sequence[Any]] = None, min_exclusive: bool = False) -> Any:
    """A dataclass field carrying its documentation and range/choice constraints as metadata."""
    metadata = {"help": help, "min": min, "max": max, "choices": choices, "min_exclusive": min_exclusive}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def section(cls: Type[Any]) -> Any:
    """A nested section field with the section's defaults."""
    return field(default_factory=cls)


def embedding_dim(in_dim: int, num_freqs: int) -> int:
    """Output width of the positional embedding [x, sin(2^k x), cos(2^k x)] for k < num_freqs."""
    return in_dim * (1 + 2 * num_freqs)


def check_mlp(key: str, dims: List[int], in_dim: Optional[int] = None, out_dim: Optional[int] = None,
              explain: str = "") -> None:
    """An MLP's layer widths: at least two, positive, and matching its input/output widths when given."""
    if len(dims) < 2 or any(d < 1 for d in dims):
        raise ConfigError(f"'{key}' must list at least two positive layer widths, got {dims}")
    if in_dim is not None and dims[0] != in_dim:
        raise ConfigError(f"'{key}' starts with {dims[0]} but its input is {in_dim} wide ({explain})")
    if out_dim is not None and dims[-1] != out_dim:
        raise ConfigError(f"'{key}' ends with {dims[-1]} but must output {out_dim}")


def check_thresholds(prefix: str, near: float, far: float) -> None:
    """GHA's landmark-distance blend needs dist_threshold_near < dist_threshold_far."""
    if near >= far:
        raise ConfigError(f"'{prefix}.dist_threshold_near' ({near}) must be smaller than "
                          f"'{prefix}.dist_threshold_far' ({far})")


def check_bbox(key: str, bbox: List[List[float]]) -> None:
    if len(bbox) != 3 or any(len(axis) != 2 for axis in bbox):
        raise ConfigError(f"'{key}' must be [[x0, x1], [y0, y1], [z0, z1]], got {bbox}")
    for axis, (low, high) in zip("xyz", bbox):
        if not low < high:
            raise ConfigError(f"'{key}' has an empty {axis} range [{low}, {high}]")
