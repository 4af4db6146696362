# expect: verdict=incorrect — normalises but ignores weight, bias and eps (right only while weight is 1 and bias 0)
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def layernorm_kernel(x_ptr, out_ptr, cols, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    offs = tl.arange(0, BLOCK)
    mask = offs < cols
    x = tl.load(x_ptr + row * cols + offs, mask=mask, other=0.0)
    mean = tl.sum(x, axis=0) / cols
    centered = tl.where(mask, x - mean, 0.0)
    var = tl.sum(centered * centered, axis=0) / cols
    tl.store(out_ptr + row * cols + offs, centered / tl.sqrt(var + 1e-5), mask=mask)


class ModelNew(nn.Module):
    def __init__(self, features):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        out = torch.empty_like(x)
        rows, cols = x.shape
        layernorm_kernel[(rows,)](x, out, cols, BLOCK=triton.next_power_of_2(cols))
        return out
