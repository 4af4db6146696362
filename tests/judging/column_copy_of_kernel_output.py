# expect: correct — the kernel writes the whole result; forward returns a contiguous copy of one column of it
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def affine_relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=mask), 0.0) * 2 + 1, mask=mask)


class ModelNew(nn.Module):
    def forward(self, x):
        x = x.contiguous()
        full = torch.empty_like(x)
        affine_relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, full, x.numel(), BLOCK=1024)
        return full[:, 3].contiguous()
