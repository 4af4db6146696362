# expect: correct — a Triton reduction; the mean made on the host from its scalar and returned as a new tensor
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def sum_kernel(x_ptr, total_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.atomic_add(total_ptr, tl.sum(x, axis=0))


class ModelNew(nn.Module):
    def forward(self, x):
        x = x.contiguous()
        n = x.numel()
        total = torch.zeros(1, dtype=torch.float32, device=x.device)
        sum_kernel[(triton.cdiv(n, 512),)](x, total, n, BLOCK=512)
        return torch.tensor(total.item() / n, dtype=x.dtype, device=x.device)
