"""KernelBench's precision switch (issue 19, item 6) on the CPU interpreter: floating-point inputs and
both models' parameters in the requested dtype, and KernelBench's 1e-2 tolerance for fp16. (bf16
and the torch.compile baseline are tested on the GPU: tests/gpu/test_gpu_precision_and_compile.py.)"""

from __future__ import annotations

from tests.tiny_problem import REFERENCE

# An honest kernel that refuses any input dtype but the one it was written for.
DTYPE_CHECKING = """
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def double_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 2, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        if x.dtype != torch.DTYPE or self.scale.dtype != torch.DTYPE:
            raise TypeError(f"written for DTYPE, got input {x.dtype} and parameter {self.scale.dtype}")
        x = x.contiguous()
        out = torch.empty_like(x)
        double_kernel[(triton.cdiv(x.numel(), 256),)](x, out, x.numel(), BLOCK=256)
        return out
"""


def test_fp16_reaches_inputs_and_parameters(evaluate_source) -> None:
    half = DTYPE_CHECKING.replace("DTYPE", "float16")
    result = evaluate_source(REFERENCE, half, precision="fp16", trials=1)
    assert result.verdict.value == "correct", result.feedback
    assert (result.correctness.atol, result.correctness.rtol) == (1e-2, 1e-2)  # KernelBench's fp16 tolerance
    # The same candidate at the default precision gets fp32 and fails as it says.
    default = evaluate_source(REFERENCE, half, trials=1)
    assert default.verdict.value == "runtime_error" and "written for float16, got input torch.float32" in default.feedback


def test_an_explicit_tolerance_wins_over_the_precision_default(evaluate_source) -> None:
    result = evaluate_source(REFERENCE, DTYPE_CHECKING.replace("DTYPE", "float16"), precision="fp16", trials=1, atol=1e-3)
    assert result.verdict.value == "correct"
    assert (result.correctness.atol, result.correctness.rtol) == (1e-3, 1e-2)


def test_the_cli_refuses_an_unknown_precision(run_check, write_pair) -> None:
    reference, candidate = write_pair(REFERENCE, DTYPE_CHECKING.replace("DTYPE", "float32"))
    code, _, stderr = run_check(reference, candidate, "--precision", "fp8")
    assert code == 2 and "--precision" in stderr and all(f"'{choice}'" in stderr for choice in ("fp32", "fp16", "bf16"))
