# expect: correct — forward is marked @torch.compiler.disable, which imports torch._dynamo when first called
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
    @torch.compiler.disable
    def forward(self, x):
        x = x.contiguous()
        out = torch.empty_like(x)
        affine_relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, out, x.numel(), BLOCK=1024)
        return out
