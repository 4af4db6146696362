# expect: correct, torch_epilogue — per-block partial sums in Triton, their .sum() in torch (a small epilogue)
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
        blocks = triton.cdiv(n, 512)
        partials = torch.empty(blocks, dtype=torch.float32, device=x.device)
        partial_sum_kernel[(blocks,)](x, partials, n, BLOCK=512)
        return partials.sum()
