"""The `compact` config section, owned by the compaction strategy: when quantisation starts, codebook sizes, which
attribute groups are quantised, and the precisions of the compressed file."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Dict, List, Mapping, Sequence

from cgha.errors import ConfigError
from cgha.options import option, section


# Network precisions: floats, or per-output-channel integers at 8, 6 or 4 bits (cgha.compact.channel_quant).
NETWORK_PRECISIONS = ("fp32", "fp16", "int8", "int6", "int4")


@dataclass
class CompactStoreConfig:
    """Precisions and coding of the compressed avatar file (cgha/compact/avatar_file.py, docs/compaction.md)."""
    positions: str = option("fp16", "Gaussian positions: floats, or a grid of position_bits per axis (Morton "
                            "differences)", choices=("fp32", "fp16", "grid"))
    position_bits: int = option(16, "grid cells per axis = 2**position_bits (positions: grid); also the grid "
                                "that orders the Gaussians along the Morton curve", min=4, max=21)
    codebooks: str = option("fp16", "codebook rows (int8: per-column scales)", choices=("fp32", "fp16", "int8"))
    attributes: str = option("fp16", "per-Gaussian attributes no codebook covers", choices=("fp32", "fp16"))
    network: str = option("fp16", "the avatar's MLP weights (intN: per-output-channel scales; biases and "
                          "tensors under 64 values stay fp16)", choices=NETWORK_PRECISIONS)
    post_render: str = option("", "super-resolution weights; empty: as network", choices=("",) + NETWORK_PRECISIONS)
    opacity: str = option("uint8", "opacity", choices=("fp32", "fp16", "uint8"))
    entropy: str = option("lzma", "lossless coder over every array (stdlib; Gaussians are Morton-sorted either "
                          "way)", choices=("none", "zlib", "lzma"))


@dataclass
class CompactMaskConfig:
    """Learned Gaussian masking (Lee et al. 2024; cgha/compact/gaussian_mask.py): fewer Gaussians."""
    weight: float = option(0.0, "weight of the masking loss mean(sigmoid(mask)); 0 = off (Lee et al.: 0.0005)",
                           min=0.0)
    lr: float = option(0.01, "learning rate of the mask logits (Lee et al.: 0.01)", min=0.0)
    threshold: float = option(0.01, "a Gaussian is masked while sigmoid(mask) <= this (Lee et al.: 0.01)",
                              min=0.0, max=1.0)
    prune_every: int = option(1000, "iterations between deletions of the masked Gaussians (and once at the end)",
                              min=1)


@dataclass
class CompactSection:
    """K-means codebook quantisation of per-Gaussian attributes (Compact3D)."""
    enable: bool = option(False, "quantise attributes and write the compressed avatar")
    start_epoch: int = option(100, "epoch at which quantisation starts", min=0)
    start_iter: int = option(-1, "iteration at which quantisation starts; overrides start_epoch when >= 0", min=-1)
    codebook_size: int = option(2000, "codebook rows of every group without its own size", min=2)
    codebook_sizes: Dict[str, int] = option({}, "per-group codebook sizes, e.g. {feature: 4096}")
    groups: List[str] = option(["scale_rot", "feature"], "attribute groups, from the avatar model's (GHA: scale_rot, scale, rotation, feature)")
    kmeans_iters: int = option(5, "Lloyd iterations of the initial k-means", min=1)
    assign_every: int = option(100, "iterations between index re-assignments", min=1)
    qat: bool = option(False, "quantisation-aware training of the networks from the start of compaction: steps see "
                       "the weights at the store.network / store.post_render intN precision (straight-through); "
                       "needs one of them to be intN")
    store: CompactStoreConfig = section(CompactStoreConfig)
    mask: CompactMaskConfig = section(CompactMaskConfig)

    def check(self, available: Mapping[str, Sequence[str]], prefix: str = "compact") -> None:
        """Groups against the avatar model's quantisable groups (`available`: group -> the attributes it covers):
        known, listed once, no attribute in two groups, codebook sizes only for listed groups."""
        for group in self.groups:
            if group not in available:
                close = difflib.get_close_matches(group, list(available), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ConfigError(f"'{prefix}.groups' has unknown group '{group}'{hint}; valid for this avatar "
                                  f"model: {', '.join(available)}")
        if len(set(self.groups)) != len(self.groups):
            raise ConfigError(f"'{prefix}.groups' lists a group twice: {self.groups}")
        owner: Dict[str, str] = {}
        for group in self.groups:
            for attribute in available[group]:
                if attribute in owner:
                    raise ConfigError(f"'{prefix}.groups': '{owner[attribute]}' and '{group}' both quantise "
                                      f"'{attribute}'; use one of them")
                owner[attribute] = group
        for group, size in self.codebook_sizes.items():
            if group not in self.groups:
                raise ConfigError(f"'{prefix}.codebook_sizes.{group}' names a group not in {prefix}.groups "
                                  f"{self.groups}")
            if size < 2:
                raise ConfigError(f"'{prefix}.codebook_sizes.{group}' must be >= 2, got {size}")
        integer = [key for key in ("network", "post_render") if getattr(self.store, key).startswith("int")]
        if self.qat and not integer:
            raise ConfigError(f"'{prefix}.qat' trains the networks at the file's integer precision, but "
                              f"{prefix}.store.network={self.store.network} and {prefix}.store.post_render="
                              f"{self.store.post_render or '(as network)'} are floats: set one to int8/int6/int4 "
                              f"(e.g. the x40 preset) or qat to false")
