"""DataLoader construction shared by the trainers and evaluation."""
from __future__ import annotations

import os
from typing import Iterator, List, NamedTuple, Optional, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def evenly_spaced_indices(count: int, limit: int) -> List[int]:
    """All of `count` indices, or `limit` of them evenly spread (eval.max_images) so every frame/camera is sampled."""
    if limit <= 0 or limit >= count:
        return list(range(count))
    return sorted({round(i * (count - 1) / max(limit - 1, 1)) for i in range(limit)})


class Draw(NamedTuple):
    """One training item as the sampler hands it to a dataset: its index and the seed of the item's own random
    choices (which cameras). An item is then a function of (train.seed, epoch, position) alone: the same with any
    number of loader workers (whose RNG states a checkpoint cannot hold) and after a resume."""

    index: int
    seed: int


DatasetKey = Union[int, Draw]


def resolve_key(key: DatasetKey) -> Tuple[int, Optional[torch.Generator]]:
    """(index, generator for the item's random choices): a seeded generator for a `Draw`, None (torch's global
    generator) for a plain index such as `dataset[3]`."""
    if isinstance(key, Draw):
        return key.index, torch.Generator().manual_seed(key.seed)
    return int(key), None


class EpochSampler(Sampler[Draw]):
    """Shuffled indices and per-item seeds that depend only on (seed, epoch), so training resumes mid-epoch exactly.

    Call `set_position(epoch, offset)` before iterating; iteration yields that epoch's `Draw`s from `offset`.
    """

    _ITEM_SEED_LIMIT = 2 ** 62

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.epoch, self.offset = 0, 0

    def set_position(self, epoch: int, offset: int = 0) -> None:
        self.epoch, self.offset = epoch, offset

    def __iter__(self) -> Iterator[Draw]:
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist() if self.shuffle else list(range(self.size))
        # Drawn after the permutation, so the order is the one earlier versions used.
        seeds = torch.randint(self._ITEM_SEED_LIMIT, (self.size,), generator=generator).tolist()
        return iter([Draw(index, seed) for index, seed in zip(order, seeds)][self.offset:])

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
