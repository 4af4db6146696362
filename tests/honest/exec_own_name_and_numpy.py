# expect: correct — exec of generated code under its own file name, and numpy for host-side launch parameters
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

import numpy as np

NAMESPACE = {}
exec(compile("def grid_size(n, block):\n    return (n + block - 1) // block\n", "<candidate-generated>", "exec"), NAMESPACE)


class ModelNew(nn.Module):
    def forward(self, x):
        n = int(np.prod(x.shape))
        out = torch.empty_like(x)
        affine_relu_kernel[(NAMESPACE["grid_size"](n, 1024),)](x, out, n, BLOCK=1024)
        return out
