"""Triton helper shared by the kernels: cast an fp32 result to the output dtype, rounding to nearest even.

Triton's plain ``.to(tl.bfloat16)`` was seen to truncate on an H100 (a full-ulp error against PyTorch's rounding in
the CUDA tests), so every kernel that writes a narrower float asks for round-to-nearest-even explicitly. (Triton's
CPU interpreter truncates whatever is asked; the interpreter tests allow for that.)
"""
from __future__ import annotations

from lib.kernels import triton_available

if triton_available():
    import triton
    import triton.language as tl

    @triton.jit
    def rounded(x, dtype: tl.constexpr):
        """``x`` (fp32) as ``dtype``, rounded to nearest even when ``dtype`` is narrower."""
        if dtype == tl.float32:
            return x
        else:
            return x.to(dtype, fp_downcast_rounding="rtne")
