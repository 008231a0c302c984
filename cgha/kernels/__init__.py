"""Fused GPU kernels (Triton) and the rule that picks them or their pure-PyTorch twins.

Every kernel here has a twin written with plain PyTorch ops that defines its semantics: the twin runs on CPUs (and
on GPUs without Triton), and the CUDA tests compare kernel and twin, as gsplat does for its CUDA code. Triton ships
with the CUDA builds of PyTorch on Linux, so no extra install is needed where the kernels can run.

Backend names, accepted by every public function of this package:

* ``"auto"``: the Triton kernel for CUDA tensors when Triton imports, the twin otherwise. Setting the environment
  variable ``CGHA_KERNELS=torch`` makes ``auto`` always pick the twin (to rule the kernels out when debugging).
* ``"triton"``: the kernel; an error when Triton does not import. CPU tensors are only accepted under Triton's
  interpreter (``TRITON_INTERPRET=1``, slow; the CPU test-suite uses it to check the kernels' logic).
* ``"torch"``: the twin.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch

__all__ = ["BACKENDS", "launch_device", "resolve_backend", "triton_available"]

BACKENDS = ("auto", "triton", "torch")


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """True when Triton imports (it is part of PyTorch's CUDA builds on Linux)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install raising anything else
        return False
    return True


def interpreting() -> bool:
    """True when Triton kernels run in its CPU interpreter (``TRITON_INTERPRET=1`` before the first import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """``"triton"`` or ``"torch"`` for a call on ``tensor`` (see the module docstring); ValueError on bad requests."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        forced_twin = os.environ.get("CGHA_KERNELS", "") == "torch"
        return "triton" if tensor.is_cuda and not forced_twin and triton_available() else "torch"
    if backend == "triton":
        if not triton_available():
            raise ImportError("backend='triton' but Triton does not import; use backend='torch' (or 'auto')")
        if not tensor.is_cuda and not interpreting():
            raise ValueError(f"backend='triton' needs CUDA tensors (got {tensor.device}) unless TRITON_INTERPRET=1")
    return backend


def launch_device(t: torch.Tensor):
    """Context making ``t``'s GPU the current one while kernels are launched: Triton launches on the current device,
    which need not be the tensors' (e.g. ``gpu_id: 1`` in a config)."""
    if t.is_cuda and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
