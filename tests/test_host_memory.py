"""Freed host memory stays in the process on glibc (cgha/utils/host_memory.py): mallopt accepts the thresholds, so
repeated large CPU allocations stop costing page faults; elsewhere the call changes nothing and says so."""
from __future__ import annotations

import platform
import resource

import pytest
import torch

from cgha.utils.host_memory import keep_freed_memory_in_process

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="glibc's mallopt")
def test_large_tensors_reuse_heap_memory_instead_of_faulting_new_pages():
    def page_faults_of_repeated_allocations() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            torch.ones(4 << 20)  # 16 MiB, freed at once
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    assert keep_freed_memory_in_process()
    page_faults_of_repeated_allocations()  # the heap grows to its working size first
    # Without the thresholds each 16 MiB tensor is a fresh mmap (measured: 25-37k page faults per loop, every loop).
    assert page_faults_of_repeated_allocations() < 4096


@pytest.mark.skipif(GLIBC, reason="only where the C library is not glibc")
def test_other_c_libraries_are_left_alone():
    assert keep_freed_memory_in_process() is False
