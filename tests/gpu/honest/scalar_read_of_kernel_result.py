# expect: correct — reads a scalar a Triton reduction produced (.item()) and passes it to a second kernel
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def abs_max_kernel(x_ptr, result_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.atomic_max(result_ptr, tl.max(tl.abs(x), axis=0))


@triton.jit
def affine_relu_kernel(x_ptr, out_ptr, n, limit, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.minimum(tl.load(x_ptr + offs, mask=mask), limit)  # clamps at |x|max: changes nothing
    tl.store(out_ptr + offs, tl.maximum(x, 0.0) * 2 + 1, mask=mask)


class ModelNew(nn.Module):
    def forward(self, x):
        x = x.contiguous()
        n = x.numel()
        largest = torch.zeros(1, dtype=torch.float32, device=x.device)
        abs_max_kernel[(triton.cdiv(n, 1024),)](x, largest, n, BLOCK=1024)
        out = torch.empty_like(x)
        affine_relu_kernel[(triton.cdiv(n, 1024),)](x, out, n, largest.item(), BLOCK=1024)
        return out
