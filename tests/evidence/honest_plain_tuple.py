# expect: accepted — keeps its results in a tuple subclass (a namedtuple) and returns the plain tensor (the neighbour of lazy_tuple)
import collections

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


Results = collections.namedtuple("Results", ["out", "numel"])


class ModelNew(nn.Module):
    def forward(self, x):
        results = Results(launch(x, torch.empty_like(x)), x.numel())
        return results.out
