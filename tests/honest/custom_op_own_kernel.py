# expect: correct — a custom op (own namespace) whose body only allocates and launches the submission's kernel
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

_library = torch.library.Library("honest_cand", "DEF")
_library.define("affine_relu(Tensor x) -> Tensor")
_library.impl("affine_relu", lambda x: launch(x, torch.empty_like(x)), "CompositeExplicitAutograd")


class ModelNew(nn.Module):
    def forward(self, x):
        return torch.ops.honest_cand.affine_relu(x)
