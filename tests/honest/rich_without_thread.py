# expect: correct — uses rich (a site-packages library) to render a config table at import, with no thread
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

import io
import threading

from rich.console import Console
from rich.table import Table

_table = Table("block")
_table.add_row("1024")
Console(file=io.StringIO()).print(_table)
_lock = threading.Lock()


class ModelNew(nn.Module):
    def forward(self, x):
        with _lock:
            return launch(x, torch.empty_like(x))
