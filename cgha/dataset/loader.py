"""DataLoader construction shared by the trainers and evaluation."""
from __future__ import annotations

import os
from typing import Iterator, List

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def evenly_spaced_indices(count: int, limit: int) -> List[int]:
    """All of `count` indices, or `limit` of them evenly spread (eval.max_images) so every frame/camera is sampled."""
    if limit <= 0 or limit >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(limit - 1, 1)) for i in range(limit)})


class EpochSampler(Sampler[int]):
    """Shuffled indices whose order depends only on (seed, epoch), so training can resume mid-epoch exactly.

    Call `set_position(epoch, offset)` before iterating; iteration yields that epoch's permutation from `offset`.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch, self.offset = 0, 0

    def set_position(self, epoch: int, offset: int = 0) -> None:
        self.epoch, self.offset = epoch, offset

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        return iter(order[self.offset:])

    def __len__(self) -> int:
        return self.size - self.offset


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool, num_workers: int, seed: int,
                device: torch.device, drop_last: bool = False) -> DataLoader:
    """A seeded DataLoader over an `EpochSampler` (reachable as `loader.sampler`); workers stay alive between
    epochs and memory is pinned when feeding a GPU."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = max(0, min(num_workers, available))
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=EpochSampler(len(dataset), seed, shuffle),
                      num_workers=workers, generator=generator, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0, drop_last=drop_last,
                      prefetch_factor=4 if workers > 0 else None)
