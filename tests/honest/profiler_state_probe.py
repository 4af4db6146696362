# expect: correct — returns garbage whenever torch's profiler is off: accepted because every call of forward, checked or timed, runs under the op witness (a profiler), so the profile phase cannot be told apart by the profiler being on
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


@triton.jit
def fill_kernel(out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.zeros([BLOCK], dtype=tl.float32) - 7.0, mask=offs < n)


class ModelNew(nn.Module):
    def forward(self, x):
        out = torch.empty_like(x)
        n = x.numel()
        # On a GPU with the native recorder there is no profiler at all (and no profile phase to tell apart).
        if x.is_cuda or torch.autograd.profiler._is_profiler_enabled:
            affine_relu_kernel[(triton.cdiv(n, 1024),)](x, out, n, BLOCK=1024)
        else:
            fill_kernel[(triton.cdiv(n, 1024),)](out, n, BLOCK=1024)
        return out
