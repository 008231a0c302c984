"""Vector quantisers of per-Gaussian attribute groups (Compact3D k-means codebooks, straight-through estimator).

The continuous parameters of an avatar model stay the optimised quantities; the forward pass substitutes
`codebook[index]` for them with a straight-through estimator, so gradients reach the continuous values unchanged.
Codebook rows follow their members (`refresh`, every step) and members change codebook rows only at
`reassign` (every `assign_every` steps), as in the original compacted GHA.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cgha.compact.kmeans import DEFAULT_CHUNK_SIZE, assign, cluster_means, kmeans, segment_plan

class VectorQuantizer(nn.Module):
    """A k-means codebook for the rows of one attribute group.

    Buffers (persistent, so `state_dict` and resume restore them exactly): codebook [K, D] and index [N] int64.
    Both are empty until `initialise`; loading a state dict resizes them to the stored shapes.
    """

    def __init__(self, num_codes: int, kmeans_iters: int = 5, seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__()
        if num_codes < 1:
            raise ValueError(f"num_codes must be >= 1, got {num_codes}")
        self.num_codes = num_codes
        self.kmeans_iters = kmeans_iters
        self.seed = seed
        self.chunk_size = chunk_size
        self.register_buffer("codebook", torch.zeros(0, 0))
        self.register_buffer("index", torch.zeros(0, dtype=torch.int64))
        self._plan = None  # segment_plan of the index, and the index state it belongs to
        self._plan_key = None

    @property
    def initialised(self) -> bool:
        return self.index.numel() > 0

    def _check(self, x: torch.Tensor) -> None:
        if not self.initialised:
            raise RuntimeError("VectorQuantizer used before initialise()")
        if x.ndim != 2 or x.shape[0] != self.index.shape[0] or x.shape[1] != self.codebook.shape[1]:
            raise ValueError(f"expected rows [{self.index.shape[0]}, {self.codebook.shape[1]}], got {list(x.shape)}")

    @torch.no_grad()
    def initialise(self, x: torch.Tensor) -> None:
        """Run seeded k-means on x [N, D] (K clamped to N) and store codebook [K, D] and index [N]."""
        generator = torch.Generator().manual_seed(self.seed)
        centers, idx = kmeans(x.detach(), self.num_codes, self.kmeans_iters, generator, self.chunk_size)
        self.codebook = centers.to(x.dtype)
        self.index = idx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Straight-through quantisation of x [N, D]: the value is codebook[index], the gradient w.r.t. x is
        the identity. Returns [N, D]."""
        self._check(x)
        quantized = self.codebook[self.index].to(x.dtype)
        # Same estimator as x + (q - x).detach(), but the value is exactly q (x - x is exactly 0 in floating
        # point, whereas x + (q - x) can round away from q), so the rendered attributes are the codebook rows.
        return quantized + (x - x.detach())

    @torch.no_grad()
    def refresh(self, x: torch.Tensor) -> None:
        """Set every codebook row to the mean of its members in x [N, D]; rows without members keep their value
        (no host sync, so this is cheap enough for every step)."""
        self._check(x)
        means, counts = cluster_means(x.detach(), self.index, self.codebook.shape[0], self._segment_plan())
        self.codebook.copy_(torch.where(counts[:, None] > 0, means.to(self.codebook.dtype), self.codebook))

    def _segment_plan(self):
        """segment_plan(index), rebuilt only when the index changed (re-assignment, initialise, loading, any
        in-place edit: each changes the tensor's storage or its version counter): it is kept across the steps in
        between, which saves a sort and a host synchronisation per refresh."""
        index = self.index
        key = (index.data_ptr(), index._version, index.shape[0], index.device, self.codebook.shape[0])
        if key != self._plan_key:
            self._plan, self._plan_key = segment_plan(index, self.codebook.shape[0]), key
        return self._plan

    @torch.no_grad()
    def reassign(self, x: torch.Tensor) -> None:
        """Point every row of x [N, D] at its nearest codebook row."""
        self._check(x)
        self.index.copy_(assign(x.detach(), self.codebook, self.chunk_size))

    @torch.no_grad()
    def select_rows(self, rows: torch.Tensor) -> None:
        """Follow an edit of the quantised rows: row i becomes the current row rows[i] (rows [M] int64), so a
        duplicated row keeps its code and a deleted one loses it."""
        if self.initialised:
            self.index = self.index.index_select(0, rows.to(self.index.device))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # The shapes are only known after initialise(); adopt the stored ones so a fresh module can resume.
        for name in ("codebook", "index"):
            key = prefix + name
            if key in state_dict:
                stored = state_dict[key]
                setattr(self, name, torch.empty(stored.shape, dtype=stored.dtype, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


@dataclass(frozen=True)
class GroupSpec:
    """What an avatar model lets compaction quantise: group -> the attributes its rows concatenate (in order), and
    the attributes quantised by direction only (rotations: only the direction of a quaternion matters to the
    renderer, so codebook rows should not spend capacity on its length)."""
    groups: Mapping[str, Tuple[str, ...]]
    unit_norm: Tuple[str, ...] = ()

    @classmethod
    def of(cls, model) -> "GroupSpec":
        """The spec an AvatarModel class (or instance) declares."""
        return cls(dict(model.compact_groups), tuple(model.unit_norm_attributes))

    def check(self, groups: Sequence[str]) -> None:
        """Known groups, each once, no attribute in two of them; ValueError otherwise."""
        for group in groups:
            if group not in self.groups:
                raise ValueError(f"unknown compact group '{group}', expected one of {tuple(self.groups)}")
        if len(set(groups)) != len(groups):
            raise ValueError(f"compact groups listed twice: {list(groups)}")
        covered = [attribute for group in groups for attribute in self.groups[group]]
        if len(set(covered)) != len(covered):
            raise ValueError(f"compact groups {list(groups)} quantise an attribute twice; e.g. 'scale_rot' already "
                             f"quantises scale and rotation: use it or scale/rotation")

    def rows(self, attributes: Mapping[str, torch.Tensor], groups: Iterable[str]) -> Dict[str, torch.Tensor]:
        """Each group's rows [N, sum of its attributes' widths] from per-Gaussian attributes [N, ...]."""
        out = {}
        for group in groups:
            parts = [F.normalize(attributes[name], dim=-1) if name in self.unit_norm else attributes[name]
                     for name in self.groups[group]]
            out[group] = parts[0] if len(parts) == 1 else torch.cat(parts, -1)
        return out

    def split(self, values: Mapping[str, torch.Tensor], widths: Mapping[str, int]) -> Dict[str, torch.Tensor]:
        """Inverse of `rows`: group rows back to attributes by name, given each attribute's width (a group of one
        attribute needs none: its rows are the attribute)."""
        out = {}
        for group, value in values.items():
            start = 0
            names = self.groups[group]
            for name in names:
                width = value.shape[1] if len(names) == 1 else widths[name]
                out[name] = value[:, start:start + width]
                start += width
            if start != value.shape[1]:
                raise ValueError(f"compact group '{group}' has rows of width {value.shape[1]}, but its attributes "
                                 f"{self.groups[group]} are {start} wide")
        return out


class GroupedQuantizer(nn.Module):
    """One VectorQuantizer per configured attribute group of an avatar model (`spec`: GroupSpec.of(model)).

    Codebook size of a group: `codebook_sizes.get(group, codebook_size)`, clamped to the number of Gaussians at
    initialise(). Each group's k-means is seeded with `seed + position of the group in spec.groups`.
    """

    def __init__(self, groups: Iterable[str], spec: GroupSpec, codebook_size: int = 2000,
                 codebook_sizes: Optional[Mapping[str, int]] = None, kmeans_iters: int = 5, seed: int = 0,
                 chunk_size: int = DEFAULT_CHUNK_SIZE):
        super().__init__()
        groups = list(groups)
        spec.check(groups)
        sizes = dict(codebook_sizes or {})
        self.groups, self.spec = groups, spec
        order = list(spec.groups)
        self.quantizers = nn.ModuleDict({
            group: VectorQuantizer(sizes.get(group, codebook_size), kmeans_iters, seed + order.index(group),
                                   chunk_size)
            for group in groups})

    @classmethod
    def from_config(cls, compact, spec: GroupSpec, seed: int = 0) -> "GroupedQuantizer":
        """Build from a cgha.compact.config.CompactSection."""
        return cls(compact.groups, spec, compact.codebook_size, compact.codebook_sizes, compact.kmeans_iters, seed)

    @property
    def initialised(self) -> bool:
        return all(q.initialised for q in self.quantizers.values())

    @property
    def covered_attributes(self) -> Tuple[str, ...]:
        return tuple(name for group in self.groups for name in self.spec.groups[group])

    def codebook_sizes(self) -> Dict[str, int]:
        """Rows of every group's codebook (after clamping to N; the configured size before initialise)."""
        return {g: (q.codebook.shape[0] if q.initialised else q.num_codes) for g, q in self.quantizers.items()}

    def initialise(self, attributes: Mapping[str, torch.Tensor]) -> None:
        """K-means every group on the current attributes (the model's canonical_attributes())."""
        for group, rows in self.spec.rows(attributes, self.groups).items():
            self.quantizers[group].initialise(rows)

    def refresh(self, attributes: Mapping[str, torch.Tensor]) -> None:
        """Codebook rows := means of their members, for every group."""
        for group, rows in self.spec.rows(attributes, self.groups).items():
            self.quantizers[group].refresh(rows)

    def reassign(self, attributes: Mapping[str, torch.Tensor]) -> None:
        """Indices := nearest codebook rows, for every group."""
        for group, rows in self.spec.rows(attributes, self.groups).items():
            self.quantizers[group].reassign(rows)

    def select_rows(self, rows: torch.Tensor) -> None:
        """Every group's indices follow a selection of the Gaussians (VectorQuantizer.select_rows)."""
        for quantizer in self.quantizers.values():
            quantizer.select_rows(rows)

    def quantized_attributes(self, attributes: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Straight-through quantised substitutes for generate(attributes=...): only the attributes the groups
        cover, same shapes; gradients flow to the continuous attributes."""
        rows = self.spec.rows(attributes, self.groups)
        widths = {name: attributes[name].shape[-1] for name in self.covered_attributes}
        return self.spec.split({group: self.quantizers[group](value) for group, value in rows.items()}, widths)
