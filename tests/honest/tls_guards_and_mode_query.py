# expect: correct — TLS context managers around the launch (inference_mode, no_grad) and a read of the dispatch-mode state
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

from torch.utils._python_dispatch import is_in_torch_dispatch_mode


class ModelNew(nn.Module):
    def forward(self, x):
        self.traced = is_in_torch_dispatch_mode()
        with torch.inference_mode(False), torch.no_grad():
            return launch(x, torch.empty_like(x))
