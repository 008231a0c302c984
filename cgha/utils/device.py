"""Turn the config's `device` / GHA's `gpu_id` into a torch.device."""
from __future__ import annotations

import torch

from cgha.errors import ConfigError


def resolve_device(device: str, gpu_id: int = 0) -> torch.device:
    """`auto` -> cuda:{gpu_id} when CUDA is available else cpu; `cuda` -> cuda:{gpu_id}; `cuda:N`, `cpu` as given."""
    if device == "auto":
        return torch.device(f"cuda:{gpu_id}") if torch.cuda.is_available() else torch.device("cpu")
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' was requested but CUDA is not available on this machine (use device=cpu)")
    index = gpu_id if device == "cuda" else int(device.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device cuda:{index} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    return torch.device(f"cuda:{index}")


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work on `device` (for honest wall-clock timings); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def use_fast_training_kernels(device: torch.device) -> None:
    """On CUDA: TF32 matmuls (the MLPs) and autotuned convolutions (the fixed-size super-resolution input), the
    settings Gaussian-head training runs with; benchmarks call this too so they time the same kernels."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
