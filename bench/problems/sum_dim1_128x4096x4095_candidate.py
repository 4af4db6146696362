# An honest Triton candidate for sum_dim1_128x4096x4095.py: each program sums one batch's block of
# columns down the reduced dimension, in fp32.
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def sum_rows_kernel(x_ptr, y_ptr, rows, cols, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr):
    batch = tl.program_id(0).to(tl.int64)
    col = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    col_mask = col < cols
    base = x_ptr + batch * rows * cols
    total = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for start in range(0, rows, BLOCK_R):
        row = start + tl.arange(0, BLOCK_R)
        mask = (row[:, None] < rows) & col_mask[None, :]
        block = tl.load(base + row[:, None].to(tl.int64) * cols + col[None, :], mask=mask, other=0.0)
        total += tl.sum(block, axis=0)
    tl.store(y_ptr + batch * cols + col, total, mask=col_mask)


class ModelNew(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert self.dim == 1 and x.dim() == 3
        x = x.contiguous()
        batch, rows, cols = x.shape
        y = torch.empty((batch, 1, cols), device=x.device, dtype=x.dtype)
        grid = (batch, triton.cdiv(cols, 128))
        sum_rows_kernel[grid](x, y, rows, cols, BLOCK_R=32, BLOCK_C=128)
        return y
