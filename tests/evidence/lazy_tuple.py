# expect: non_plain_output — a tuple subclass that computes its outputs only when iterated
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


class LazyOutputs(tuple):
    def __new__(cls, x):
        made = super().__new__(cls, ())
        made.x = x
        return made

    def __iter__(self):
        return iter((launch(self.x, torch.empty_like(self.x)),))

    def __len__(self):
        return 1

    def __getitem__(self, index):
        return tuple(iter(self))[index]


class ModelNew(nn.Module):
    def forward(self, x):
        return LazyOutputs(x)
