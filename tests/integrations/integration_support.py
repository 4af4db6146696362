"""Sources shared by the integration tests: a y = 2x problem and candidates for it."""

from __future__ import annotations

import textwrap

REFERENCE = textwrap.dedent(
    """
    import torch
    import torch.nn as nn


    class Model(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, x):
            return x * 2


    n = 256


    def get_inputs():
        return [torch.randn(n)]


    def get_init_inputs():
        return []
    """
)

_HEADER = textwrap.dedent(
    """
    import torch
    import torch.nn as nn
    import triton
    import triton.language as tl


    @triton.jit
    def double_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * FACTOR, mask=mask)


    class ModelNew(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, x):
            x = x.contiguous()
            out = torch.empty_like(x)
            double_kernel[(triton.cdiv(x.numel(), 256),)](x, out, x.numel(), BLOCK=256)
            return out
    """
)

CANDIDATE = _HEADER.replace("FACTOR", "2")
WRONG = _HEADER.replace("FACTOR", "3")  # every element off by x
COMPILE_ERROR = _HEADER.replace("FACTOR", "scale")  # an undefined name inside the kernel
# A candidate that computes with torch and launches nothing: cheating (no_triton_launch, torch_fallback).
CHEAT = _HEADER.replace("double_kernel[(triton.cdiv(x.numel(), 256),)](x, out, x.numel(), BLOCK=256)\n        return out",
                        "return x * 2").replace("FACTOR", "2")
assert CHEAT != CANDIDATE and "return x * 2" in CHEAT

FAST = {"trials": 1, "timing_sets": 1, "max_timing_seconds": 0.05, "device": "cpu"}


def completion(source: str, lang: str = "python") -> str:
    """A typical completion: thinking, prose, a sketch block, the answer block."""
    return (f"<think>\nThe reference doubles x. ```python\nprint('draft')\n```\nI'll write a kernel.\n</think>\n"
            f"Here is a sketch of the launch:\n\n```python\ngrid = (triton.cdiv(n, 256),)\n```\n\n"
            f"And the full solution:\n\n```{lang}\n{source}```\n\nThis should be fast.")
