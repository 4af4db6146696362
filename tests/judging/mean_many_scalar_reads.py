# expect: device_to_host_transfer — per-block partials read one by one to the host and summed there
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def partial_sum_kernel(x_ptr, partial_ptr, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(partial_ptr + pid, tl.sum(x, axis=0))


class ModelNew(nn.Module):
    def forward(self, x):
        x = x.contiguous()
        n = x.numel()
        blocks = triton.cdiv(n, 128)
        partials = torch.empty(blocks, dtype=torch.float32, device=x.device)
        partial_sum_kernel[(blocks,)](x, partials, n, BLOCK=128)
        total = sum(partials[i].item() for i in range(blocks))
        return torch.tensor(total / n, dtype=x.dtype, device=x.device)
