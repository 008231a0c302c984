"""The hook for a learned matting model the user provides (e.g. BackgroundMattingV2, as GHA used).

A matting model is any Python callable

    alpha = model(image, background)

with ``image`` and ``background`` RGB uint8 numpy arrays [H, W, 3] of the same camera and size, returning the
foreground alpha [H, W] (also accepted: [H, W, 1] or [1, H, W]) as float in [0, 1] or uint8 in [0, 255]. It is named
on the command line as ``package.module:function`` (importable, e.g. on PYTHONPATH) or ``path/to/file.py:function``;
``function`` may be a dotted attribute path (``Wrapper.run``). Load weights once, at import time or on first call;
nothing is downloaded by this repository. docs/preprocessing.md has a BackgroundMattingV2 wrapper as an example.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable

import numpy as np

from cgha.errors import UserError

__all__ = ["MattingFn", "MattingModelError", "load_matting_model", "apply_matting"]

MattingFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class MattingModelError(UserError):
    """A --matting-model that cannot be loaded, or that returns something that is not an alpha matte."""


def load_matting_model(spec: str) -> MattingFn:
    """The callable named by ``module:attribute`` or ``file.py:attribute``."""
    target, sep, attribute = str(spec).rpartition(":")
    if not sep or not target or not attribute:
        raise MattingModelError(f"--matting-model {spec!r}: expected 'package.module:function' or "
                                "'path/to/file.py:function'")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _module_from_file(Path(target), spec)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise MattingModelError(f"--matting-model {spec!r}: cannot import {target} ({error}); put it on "
                                    "PYTHONPATH or give a file path") from None
    try:
        model = functools.reduce(getattr, attribute.split("."), module)
    except AttributeError:
        raise MattingModelError(f"--matting-model {spec!r}: {target} has no attribute {attribute}") from None
    if not callable(model):
        raise MattingModelError(f"--matting-model {spec!r}: {attribute} is not callable")
    return model


def _module_from_file(path: Path, spec: str):
    if not path.is_file():
        raise MattingModelError(f"--matting-model {spec!r}: file not found: {path}")
    name = "_matting_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # registered first, as for an import: dataclasses and pickling look it up
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def apply_matting(model: MattingFn, image: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Run ``model`` on one view and check its answer.

    Args:
        image, background: RGB uint8 [H, W, 3].
    Returns:
        float32 [H, W] in [0, 1].
    """
    height, width = image.shape[:2]
    name = getattr(model, "__name__", type(model).__name__)
    # Copies: a model that writes into its inputs must not change the plate shared by other views.
    alpha = np.asarray(model(image.copy(), background.copy()))
    if alpha.ndim == 3 and 1 in (alpha.shape[0], alpha.shape[-1]):
        alpha = alpha.reshape(alpha.shape[1:] if alpha.shape[0] == 1 else alpha.shape[:2])
    if alpha.shape != (height, width):
        raise MattingModelError(f"matting model {name} returned shape {list(alpha.shape)}, expected "
                                f"[{height}, {width}] for a {width}x{height} image")
    if alpha.dtype == np.uint8:
        return alpha.astype(np.float32) / 255.0
    if alpha.dtype == bool:
        return alpha.astype(np.float32)
    if not np.issubdtype(alpha.dtype, np.floating):
        raise MattingModelError(f"matting model {name} returned dtype {alpha.dtype}; expected float in [0, 1] "
                                "or uint8")
    alpha = alpha.astype(np.float32)
    if not np.isfinite(alpha).all() or alpha.min() < -1e-3 or alpha.max() > 1.0 + 1e-3:
        raise MattingModelError(f"matting model {name} returned values outside [0, 1] "
                                f"(min {np.nanmin(alpha):.3g}, max {np.nanmax(alpha):.3g})")
    return np.clip(alpha, 0.0, 1.0)
