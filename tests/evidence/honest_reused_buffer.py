# expect: accepted — keeps one output buffer per input shape and writes it on every call (the neighbour of replay_by_identity)
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
        self.buffers = {}

    def forward(self, x):
        out = self.buffers.get(tuple(x.shape))
        if out is None:
            out = self.buffers[tuple(x.shape)] = torch.empty_like(x)
        return launch(x, out)
