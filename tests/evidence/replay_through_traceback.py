# expect: timed_output_mismatch — reaches the harness's frames through an exception's traceback and replays the last kept output
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


def _harness_outputs():
    try:
        raise LookupError
    except LookupError as exc:
        frame = exc.__traceback__.tb_frame
    while frame is not None:
        kept = frame.f_locals.get("outputs")
        if isinstance(kept, list) and kept and frame.f_code.co_filename != __file__:
            return kept
        frame = frame.f_back
    return None


class ModelNew(nn.Module):
    def forward(self, x):
        kept = _harness_outputs()
        if kept:
            last = kept[-1]
            if isinstance(last, torch.Tensor) and last.shape == x.shape:
                return last
        return launch(x, torch.empty_like(x))
