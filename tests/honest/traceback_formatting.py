# expect: correct — formats a caught exception with traceback.format_exc and logging (the stdlib reads the frames, not the candidate)
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

import logging
import traceback

log = logging.getLogger("candidate")


def block_for(n):
    try:
        return {1024: 1024}[n]
    except KeyError:
        log.debug("no tuned block for %d: %s", n, traceback.format_exc(limit=1))
        return 1024


class ModelNew(nn.Module):
    def forward(self, x):
        block_for(x.numel())
        return launch(x, torch.empty_like(x))
