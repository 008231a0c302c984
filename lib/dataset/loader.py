"""DataLoader construction shared by the trainers and evaluation."""
from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int,
                device: torch.device, drop_last: bool = False) -> DataLoader:
    """A seeded DataLoader; workers stay alive between epochs and memory is pinned when feeding a GPU.

    Per-worker RNGs derive from `seed`, so random view sampling is reproducible for a given number of workers.
    """
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(0, min(num_workers, available))
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, generator=generator,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0, drop_last=drop_last,
                      prefetch_factor=4 if workers > 0 else None)
