# expect: correct — applies the ReLU to its input in place, as the reference does, and writes the result
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def relu_inplace_affine_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    r = tl.maximum(tl.load(x_ptr + offs, mask=mask), 0.0)
    tl.store(x_ptr + offs, r, mask=mask)
    tl.store(out_ptr + offs, r * 2 + 1, mask=mask)


class ModelNew(nn.Module):
    def forward(self, x):
        out = torch.empty_like(x)
        relu_inplace_affine_kernel[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
        return out
