"""Keep freed host memory inside the process (glibc): PyTorch's CPU tensors of more than 128 KiB are allocated with
mmap and given back to the kernel when freed, so every forward pass pays page faults and page zeroing for each of
them again. On 2 CPU cores that cost as much as the arithmetic: the shipped avatar's generate step took 2.08 s, 1.09 s
with freed memory kept (benchmarks/results, docs/viewer.md). Raising glibc's mmap and trim thresholds keeps large
blocks in the heap for reuse; the process's resident memory then stays near its peak instead of shrinking.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

# mallopt parameters (glibc malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # glibc's largest: blocks up to 1 GiB come from the heap
_TRIM_THRESHOLD = (1 << 31) - 1  # never give the heap's top back


def keep_freed_memory_in_process() -> bool:
    """Raise glibc's mmap and trim thresholds (see the module docstring); False where the C library is not glibc
    (macOS, Windows, musl) or mallopt refused, and nothing changes."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1 and done
    except (OSError, AttributeError) as error:
        log.debug("mallopt unavailable: %s", error)
        return False
