# expect: accepted — catches an exception of its own and looks at its traceback, replays nothing (the neighbour of replay_through_traceback)
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


def _depth():
    try:
        raise LookupError
    except LookupError as exc:
        frame, depth = exc.__traceback__.tb_frame, 0
    while frame is not None and depth < 3:
        frame, depth = frame.f_back, depth + 1
    return depth


class ModelNew(nn.Module):
    def forward(self, x):
        _depth()
        return launch(x, torch.empty_like(x))
