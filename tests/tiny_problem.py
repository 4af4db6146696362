"""The smallest problem the engine checks in full (y = 2x on a 1-D tensor) and a Triton candidate
for it, shared by the service and integration tests. FACTOR in the template is the kernel's
multiplier: "2" is the honest candidate."""

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

CANDIDATE_TEMPLATE = textwrap.dedent(
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

CANDIDATE = CANDIDATE_TEMPLATE.replace("FACTOR", "2")
