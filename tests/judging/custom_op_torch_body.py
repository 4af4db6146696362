# expect: torch_fallback — a custom op whose body launches a decoy kernel and computes the answer with torch
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def affine_relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=mask), 0.0) * 2 + 1, mask=mask)


@torch.library.custom_op("referee_test::decoy_affine_relu", mutates_args=())
def decoy_affine_relu(x: torch.Tensor) -> torch.Tensor:
    x = x.contiguous()
    scratch = torch.empty_like(x)
    affine_relu_kernel[(triton.cdiv(x.numel(), 1024),)](x, scratch, x.numel(), BLOCK=1024)
    return torch.relu(x) * 2 + 1


@decoy_affine_relu.register_fake
def _(x):
    return torch.empty_like(x)


class ModelNew(nn.Module):
    def forward(self, x):
        return decoy_affine_relu(x)
