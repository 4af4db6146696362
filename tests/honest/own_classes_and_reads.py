# expect: correct — its own Counter subclass and module attributes, read-only use of torch's dispatch helpers
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

import collections

import torch.utils._python_dispatch as python_dispatch


class Calls(collections.Counter):
    def items(self):  # overriding in its own subclass changes nothing of the harness's
        return sorted(super().items())


CALLS = Calls()
PUSH = python_dispatch._push_mode  # reading is fine; replacing is not


class ModelNew(nn.Module):
    def forward(self, x):
        CALLS[tuple(x.shape)] += 1
        return launch(x, torch.empty_like(x))
