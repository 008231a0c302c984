"""The process group of a `torchrun` launch (or none for a plain `python` run): which process this is, its device,
and the collectives the training loop needs. NCCL between GPUs, gloo between CPU processes.

    with process_group("auto") as proc:      # torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_*
        proc.rank, proc.world, proc.device
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Dict, Iterator

import torch
import torch.distributed as dist

from cgha.errors import ConfigError
from cgha.utils.device import resolve_device

# A rank that crashed leaves the others waiting in a collective: give up after this long rather than hang forever.
_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Process:
    """rank of world processes; device: where it trains; distributed: whether a process group is running."""
    rank: int
    world: int
    device: torch.device
    distributed: bool

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes checkpoints and logs."""
        return self.rank == 0


def _env_int(name: str) -> int:
    value = os.environ.get(name, "")
    if not value.isdigit():
        raise ConfigError(f"environment variable {name}={value!r}: launch with torchrun (it sets RANK, WORLD_SIZE, "
                          f"LOCAL_RANK) or run without it for one process")
    return int(value)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[Process]:
    """This process's place in the launch. Under torchrun (even with one process, so that its timings include DDP's
    all-reduce as a larger launch's do): a process group (NCCL with each
    process on cuda:LOCAL_RANK when `device` is auto/cuda and CUDA is present, else gloo on the CPU), destroyed on
    exit. Otherwise (plain `python`) one process on `device` (the config's `device`), no group."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 and "LOCAL_RANK" not in os.environ:
        yield Process(0, 1, resolve_device(device), False)
        return
    rank, local_rank = _env_int("RANK"), _env_int("LOCAL_RANK")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if device.startswith("cuda") and not use_cuda:
        raise ConfigError(f"device '{device}' was requested but CUDA is not available (use device=cpu for gloo)")
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but this machine has {torch.cuda.device_count()} GPU(s): "
                              f"start at most that many processes per node (torchrun --nproc-per-node)")
        target = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(target)
        dist.init_process_group("nccl", rank=rank, world_size=world, timeout=_TIMEOUT, device_id=target)
    else:
        target = torch.device("cpu")
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=_TIMEOUT)
    try:
        yield Process(rank, world, target, True)
    finally:
        dist.destroy_process_group()


def mean_over_processes(values: Dict[str, float], proc: Process) -> Dict[str, float]:
    """The mean of each value over the processes (every process must call it with the same keys)."""
    if not proc.distributed or not values:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([values[key] for key in keys], dtype=torch.float64, device=proc.device)
    dist.all_reduce(tensor)
    return {key: float(value) / proc.world for key, value in zip(keys, tensor.tolist())}


def sum_over_processes(tensor: torch.Tensor, proc: Process) -> torch.Tensor:
    """Element-wise sum of a tensor over the processes (in place; the tensor itself when there is one process)."""
    if proc.distributed:
        dist.all_reduce(tensor)
    return tensor


def barrier(proc: Process) -> None:
    if proc.distributed:
        dist.barrier()
