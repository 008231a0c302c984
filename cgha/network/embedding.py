"""NeRF-style positional embedding, with the same output layout as GHA's ``get_embedder``."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PositionalEmbedding"]


class PositionalEmbedding(nn.Module):
    """``x -> [x, sin(2^0 x), cos(2^0 x), sin(2^1 x), cos(2^1 x), ..., sin(2^(F-1) x), cos(2^(F-1) x)]``.

    Each block is the full ``in_dim`` vector, blocks ordered by frequency and, within a frequency, sin before
    cos: the order GHA (and NeRF) concatenate in, so MLP weights trained on GHA's embedding line up. The
    frequencies ``2^0 .. 2^(F-1)`` are log-sampled and unscaled by pi, as in GHA.

    Args:
        in_dim: size of the last input dim.
        num_freqs: number of frequencies ``F >= 0`` (GHA's ``multires``).
        include_input: prepend ``x`` itself.

    Attributes:
        out_dim: ``in_dim * (include_input + 2 * num_freqs)``.
    """

    def __init__(self, in_dim: int, num_freqs: int, include_input: bool = True) -> None:
        super().__init__()
        if not isinstance(in_dim, int) or in_dim < 1:
            raise ValueError(f"in_dim must be a positive integer, got {in_dim!r}")
        if not isinstance(num_freqs, int) or num_freqs < 0:
            raise ValueError(f"num_freqs must be a non-negative integer, got {num_freqs!r}")
        if num_freqs == 0 and not include_input:
            raise ValueError("an embedding with num_freqs=0 and include_input=False would be empty")
        self.in_dim = in_dim
        self.num_freqs = num_freqs
        self.include_input = include_input
        self.out_dim = in_dim * (int(include_input) + 2 * num_freqs)
        # Not persistent: the frequencies are fixed by the constructor, and GHA's checkpoints have no entry.
        self.register_buffer("freqs", 2.0 ** torch.arange(num_freqs, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``[..., in_dim]``. Returns: ``[..., out_dim]``, same dtype as ``x``."""
        if x.dim() < 1 or x.shape[-1] != self.in_dim:
            raise ValueError(f"expected input [..., {self.in_dim}], got {list(x.shape)}")
        parts = [x] if self.include_input else []
        if self.num_freqs > 0:
            scaled = x[..., None, :] * self.freqs.to(x.dtype)[:, None]  # [..., F, in_dim]
            sincos = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=-2)  # [..., F, 2, in_dim]
            parts.append(sincos.flatten(-3))
        return torch.cat(parts, dim=-1)

    def extra_repr(self) -> str:
        return f"in_dim={self.in_dim}, num_freqs={self.num_freqs}, include_input={self.include_input}"
