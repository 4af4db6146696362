# expect: correct — keeps sizes on the host (no device-to-host copy) and passes them as scalars
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
    def forward(self, x):
        n = int(x.numel())
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        affine_relu_kernel[(triton.cdiv(n, 2048),)](x, out, n, BLOCK=2048)
        return out
