"""Are all entries of a few tensors finite? One kernel launch, read later without an extra synchronisation point.

``start_finite_check(tensors)`` queues the check on the tensors' current stream and returns a handle whose
``all_finite()`` reads the answer (waiting for the queued work up to the check, not for what was queued after it).
The gsplat rasteriser wrapper starts it before the projection and reads it after the tile intersection, which has
synchronised anyway, so the check costs one kernel launch on the host (~25 us), where PyTorch ops (concatenate,
sum, compare, copy) cost ~0.15 ms of host time on a ~1 ms render that is bound by host-side launch overhead.

Triton path: every program scans one block of every tensor and, if it sees NaN or +-inf, writes this call's
generation number into a per-device int64 word with ``atomic_max``; the word never needs clearing, because each
call has a larger generation than every earlier one. Twin: ``torch.isfinite(t).all()`` per tensor.
"""
from __future__ import annotations

import itertools

import torch

from cgha.kernels import launch_device, resolve_backend, triton_available

__all__ = ["start_finite_check"]

_MAX_TENSORS = 8
_BLOCK = 4096
_generations = itertools.count(1)
_flags: dict = {}  # device -> int64 word holding the generation of the latest call that saw a non-finite value


class _PendingCheck:
    """A queued Triton check: ``all_finite()`` reads the flag word (waits for the GPU up to the check)."""

    def __init__(self, flag: torch.Tensor, generation: int) -> None:
        self.flag, self.generation = flag, generation

    def all_finite(self) -> bool:
        return int(self.flag.item()) != self.generation


class _Done:
    """An answer already known (the twin ran, or there was nothing to check)."""

    def __init__(self, finite: bool) -> None:
        self.finite = finite

    def all_finite(self) -> bool:
        return self.finite


def start_finite_check(tensors, backend: str = "auto"):
    """Queue a check that every entry of ``tensors`` (floating point, one device, at most 8) is finite.

    Returns a handle whose ``all_finite()`` gives the answer. With the twin (CPU tensors) the answer is computed
    here. Non-contiguous tensors are copied first.
    """
    tensors = [t for t in tensors if t.numel()]
    if not tensors:
        return _Done(True)
    if len(tensors) > _MAX_TENSORS:
        raise ValueError(f"start_finite_check takes at most {_MAX_TENSORS} tensors, got {len(tensors)}")
    if resolve_backend(backend, tensors[0]) == "torch":
        with torch.no_grad():
            return _Done(all(bool(torch.isfinite(t).all()) for t in tensors))
    device = tensors[0].device
    flag = _flags.get(device)
    if flag is None:
        flag = _flags[device] = torch.zeros(1, dtype=torch.int64, device=device)
    generation = next(_generations)
    # The kernel reads each tensor as a flat array: a contiguous one as it is (no reshape: even a view costs host
    # time at this scale), others through a copy.
    flat = [t if t.is_contiguous() else t.contiguous() for t in tensors]
    sizes = [t.numel() for t in flat]
    pad = _MAX_TENSORS - len(flat)
    with launch_device(flat[0]):
        _finite_kernel[(triton.cdiv(max(sizes), _BLOCK),)](*flat, *(flat[:1] * pad), *sizes, *((0,) * pad), flag,
                                                           generation, BLOCK=_BLOCK)
    return _PendingCheck(flag, generation)


if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def _scan(ptr, n, offsets):
        """1 if any of the entries at ``offsets`` (< n) is NaN or +-inf, else 0."""
        x = tl.load(ptr + offsets, mask=offsets < n, other=0.0).to(tl.float32)
        bad = (x != x) | (tl.abs(x) == float("inf"))
        return tl.max(bad.to(tl.int32), axis=0)

    # Sizes and the generation change from call to call: no value specialisation, so one compiled kernel serves.
    @triton.jit(do_not_specialize=["n0", "n1", "n2", "n3", "n4", "n5", "n6", "n7", "generation"])
    def _finite_kernel(p0, p1, p2, p3, p4, p5, p6, p7, n0, n1, n2, n3, n4, n5, n6, n7, flag_ptr, generation,
                       BLOCK: tl.constexpr):
        offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        bad = _scan(p0, n0, offsets) | _scan(p1, n1, offsets) | _scan(p2, n2, offsets) | _scan(p3, n3, offsets)
        bad = bad | _scan(p4, n4, offsets) | _scan(p5, n5, offsets) | _scan(p6, n6, offsets) | _scan(p7, n7, offsets)
        if bad != 0:
            tl.atomic_max(flag_ptr, generation.to(tl.int64))
