# expect: correct — reads its output through out.numpy() after the launch (a finiteness check) without writing it
# device: cpu — out.numpy() reads host memory; a CUDA tensor has no .numpy()
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


class ModelNew(nn.Module):
    def forward(self, x):
        out = launch(x, torch.empty_like(x))
        self.finite = bool(np.isfinite(out.numpy()).all())
        return out
