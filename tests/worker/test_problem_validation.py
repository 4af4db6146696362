"""Problem validation (degenerate problems) and the documented rule table."""

from __future__ import annotations

from pathlib import Path

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.rules import RULES
from triton_referee.worker.static_checks import ProblemSourceError

ROOT = Path(__file__).resolve().parents[2]
HONEST_FILL = """
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def fill_kernel(out_ptr, n, value, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out_ptr + offs, tl.zeros([BLOCK], dtype=tl.float32) + value, mask=offs < n)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        out = torch.empty_like(x)
        fill_kernel[(triton.cdiv(x.numel(), 256),)](out, x.numel(), 1.0, BLOCK=256)
        return out
"""

CONSTANT = """
import torch
import torch.nn as nn

n = 64


class Model(nn.Module):
    def forward(self, x):
        return torch.ones_like(x)


def get_inputs():
    return [torch.randn(n)]


def get_init_inputs():
    return []
"""

INPUT_IGNORED = CONSTANT.replace("return torch.ones_like(x)", "return x * 0 + 1")


@pytest.mark.parametrize("source", [CONSTANT, INPUT_IGNORED], ids=["constant", "input_ignored"])
def test_degenerate_problem_is_refused(source: str) -> None:
    """A problem that cannot tell a kernel from a constant judges nothing (docs/judging.md): a problem
    error, not a warning that changes nothing; ALLOW_DEGENERATE = True judges it anyway."""
    with pytest.raises(ProblemSourceError, match="degenerate problem"):
        evaluate(Problem(source=source), Submission(source=HONEST_FILL), EvalConfig(device="cpu", trials=1))
    result = evaluate(
        Problem(source=source + "\nALLOW_DEGENERATE = True\n"), Submission(source=HONEST_FILL), EvalConfig(device="cpu", trials=1)
    )
    assert result.verdict == Verdict.correct  # the fill kernel does match


def test_ordinary_problem_gets_no_degenerate_warning() -> None:
    example = ROOT / "examples" / "relu"
    result = evaluate(
        Problem(source=(example / "reference.py").read_text()),
        Submission(source=(example / "candidate.py").read_text()),
        EvalConfig(device="cpu", trials=1),
    )
    assert result.verdict == Verdict.correct
    assert "degenerate_problem" not in [w.rule for w in result.anti_cheat.warnings]


def test_the_rules_catalogue_documents_every_rule() -> None:
    catalogue = (ROOT / "docs" / "anticheat.md").read_text()
    for rule_id in RULES:
        assert f"| `{rule_id}` |" in catalogue, rule_id


def test_problem_allowlist_admits_a_named_torch_op() -> None:
    """The partial fallback of tests/exploits/torch_fallback_partial.py (an `add` after the kernel)
    is fatal by default and accepted when the problem allows `add`."""
    problem = (ROOT / "tests" / "exploits" / "problem.py").read_text()
    candidate = Submission(source=(ROOT / "tests" / "exploits" / "torch_fallback_partial.py").read_text())
    allowed = evaluate(Problem(source=problem + '\nALLOWED_OPS = ["add"]\n'), candidate, EvalConfig(device="cpu", trials=1))
    assert allowed.verdict == Verdict.correct, allowed.anti_cheat.violations
    refused = evaluate(Problem(source=problem), candidate, EvalConfig(device="cpu", trials=1))
    assert "torch_fallback" in [v.rule for v in refused.anti_cheat.violations]
