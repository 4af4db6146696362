# expect: accepted — keeps the CPU busy from an interval timer's signal handler whenever its process is idle (while the reference is timed); neutralised, not refused: its process is stopped then
import signal
import time

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


BUSY = {"handled": 0}


def _busy(signum, frame):
    BUSY["handled"] += 1
    until = time.perf_counter() + 0.008
    while time.perf_counter() < until:
        pass


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        signal.signal(signal.SIGALRM, _busy)
        signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)

    def forward(self, x):
        return launch(x, torch.empty_like(x))
