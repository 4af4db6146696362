# expect: background_thread — tries to start a thread that keeps the CPU busy whenever it is idle (while the reference is timed)
import threading

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


def _spin():
    while True:
        sum(range(10000))


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.spinner = None

    def forward(self, x):
        if self.spinner is None:
            self.spinner = threading.Thread(target=_spin, daemon=True)
            try:
                self.spinner.start()
            except PermissionError:  # refused by the harness; carry on as if it ran
                pass
        return launch(x, torch.empty_like(x))
