# expect: output_not_written_by_kernel — a kernel runs, but the output is a torch copy of the input's column (computed elsewhere)
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
        affine_relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, torch.empty_like(x), x.numel(), BLOCK=1024)
        column = x[:, 3].contiguous()
        column.numpy()[:] = column.numpy().clip(0) * 2 + 1
        return column
