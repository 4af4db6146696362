"""Problems for the benchmarks: a tiny one (y = 2x) for the CPU runs, small ones (the four examples
and ten elementwise ops) for latency and throughput, and the three large ones whose speedup must
hold still (issue 6). Each comes with an honest Triton candidate. `nonce` adds a comment so the
service does not answer a repeat from its result cache: every submission is evaluated."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@dataclass(frozen=True)
class BenchProblem:
    name: str
    reference: str
    candidate: str

    def submission(self, nonce: str) -> dict[str, str]:
        return {"reference": self.reference, "candidate": f"# bench submission {nonce}\n{self.candidate}", "name": self.name}


_ELEMENTWISE_REFERENCE = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return {torch_expr}


N = {n}


def get_inputs():
    return [torch.randn(N)]


def get_init_inputs():
    return []
"""

_ELEMENTWISE_CANDIDATE = """
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def {name}_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    x = tl.load(x_ptr + offsets, mask=mask)
    y = {triton_expr}
    tl.store(y_ptr + offsets, y, mask=mask)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        x = x.contiguous()
        y = torch.empty_like(x)
        n = x.numel()
        {name}_kernel[(triton.cdiv(n, {block}),)](x, y, n, BLOCK={block})
        return y
"""

# name -> (torch expression, Triton expression)
_OPS = {
    "relu": ("torch.relu(x)", "tl.maximum(x, 0.0)"),
    "sigmoid": ("torch.sigmoid(x)", "1.0 / (1.0 + tl.exp(-x))"),
    "tanh": ("torch.tanh(x)", "2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0"),
    "leaky_relu": ("torch.nn.functional.leaky_relu(x, 0.01)", "tl.where(x > 0, x, 0.01 * x)"),
    "square": ("x * x", "x * x"),
    "abs": ("torch.abs(x)", "tl.abs(x)"),
    "exp": ("torch.exp(x)", "tl.exp(x)"),
    "scale_shift": ("x * 2.0 + 1.0", "x * 2.0 + 1.0"),
    "silu": ("torch.nn.functional.silu(x)", "x / (1.0 + tl.exp(-x))"),
    "hardtanh": ("torch.clamp(x, -1.0, 1.0)", "tl.minimum(tl.maximum(x, -1.0), 1.0)"),
}


def elementwise(name: str, n: int, block: int = 1024) -> BenchProblem:
    torch_expr, triton_expr = _OPS[name]
    return _elementwise(name, torch_expr, triton_expr, n, block)


def _elementwise(name: str, torch_expr: str, triton_expr: str, n: int, block: int) -> BenchProblem:
    reference = _ELEMENTWISE_REFERENCE.format(torch_expr=torch_expr, n=n)
    candidate = _ELEMENTWISE_CANDIDATE.format(name=name, triton_expr=triton_expr, block=block)
    return BenchProblem(f"{name}_{n}", textwrap.dedent(reference).lstrip(), textwrap.dedent(candidate).lstrip())


def example(name: str) -> BenchProblem:
    return BenchProblem(name, (EXAMPLES / name / "reference.py").read_text(), (EXAMPLES / name / "candidate.py").read_text())


def tiny() -> BenchProblem:
    """y = 2x on 256 values in one block: the smallest problem the engine checks in full, for the CPU
    runs (Triton's interpreter) that measure everything around the kernel."""
    return _elementwise("double", "x * 2", "x * 2", 256, 256)


def static_reject(tag: str) -> str:
    """A distinct candidate the worker answers without running it (no @triton.jit kernel)."""
    return f"# {tag}\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x * 2\n"


def small_problems() -> list[BenchProblem]:
    """Fourteen small problems: the four examples and ten elementwise ops of 1M-2M values."""
    sizes = [1 << 20, 3 << 19, 1 << 21]
    return [example(n) for n in ("relu", "softmax", "matmul", "linear_gelu")] + [
        elementwise(name, sizes[i % len(sizes)]) for i, name in enumerate(_OPS)
    ]


_SOFTMAX_REFERENCE = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.softmax(x, dim=-1)


ROWS = 8192
COLS = 4096
INPUT_SETS = [{}]


def get_inputs():
    return [torch.randn(ROWS, COLS)]


def get_init_inputs():
    return []
"""

_MATMUL_REFERENCE = """
import torch
import torch.nn as nn


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, A, B):
        return torch.matmul(A, B)


M = 2048
N = 2048
K = 2048
INPUT_SETS = [{}]


def get_inputs():
    return [torch.randn(M, K), torch.randn(K, N)]


def get_init_inputs():
    return []
"""


def large_problems() -> list[BenchProblem]:
    """The three problems of the speedup-stability target: 64M fp32 elementwise, an 8192x4096 fp32
    softmax and a 2048^3 fp32 matmul (one input set each, so every evaluation times the same shapes)."""
    relu = elementwise("relu", 64 << 20, block=4096)
    relu = BenchProblem(
        "relu_64M", relu.reference.replace("\ndef get_inputs", "\nINPUT_SETS = [{}]\n\n\ndef get_inputs"), relu.candidate
    )
    softmax = BenchProblem(
        "softmax_8192x4096", textwrap.dedent(_SOFTMAX_REFERENCE).lstrip(), (EXAMPLES / "softmax" / "candidate.py").read_text()
    )
    matmul_candidate = (
        (EXAMPLES / "matmul" / "candidate.py")
        .read_text()
        .replace("BLOCK_M, BLOCK_N, BLOCK_K = 32, 32, 32", "BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32")
    )
    matmul = BenchProblem("matmul_2048", textwrap.dedent(_MATMUL_REFERENCE).lstrip(), matmul_candidate)
    return [relu, softmax, matmul]
