# expect: timed_output_mismatch — replays the output it gave for an input object it has seen before
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
    def __init__(self):
        super().__init__()
        self.seen = {}  # id -> (input, output); the input is kept so its id cannot be reused

    def forward(self, x):
        known = self.seen.get(id(x))
        if known is not None and known[0] is x:
            return known[1]
        out = launch(x, torch.empty_like(x))
        self.seen[id(x)] = (x, out)
        return out
