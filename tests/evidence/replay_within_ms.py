# expect: timed_output_mismatch — replays the previous output when called again within a millisecond
import time

import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def affine_relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(out_ptr + offs, tl.maximum(x, 0.0) * 2 + 1, mask=mask)


def launch(x, out):
    n = x.numel()
    affine_relu_kernel[(triton.cdiv(n, 1024),)](x, out, n, BLOCK=1024)
    return out


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.last = None
        self.returned_at = 0.0

    def forward(self, x):
        if self.last is not None and self.last.shape == x.shape and time.perf_counter() - self.returned_at < 1e-3:
            out = self.last
        else:
            out = launch(x, torch.empty_like(x))
        self.last = out
        self.returned_at = time.perf_counter()
        return out
