"""GPU tests: run on a CUDA host with `bench/gpu_session.sh` (they are deselected elsewhere by the
`gpu` marker, never skipped to get green)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.evaluate import evaluate
from sandbox.models import EvalConfig, Problem, Submission, Verdict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.gpu


def _check(problem: str, candidate: str = "candidate.py"):
    return evaluate(
        Problem(source=(EXAMPLES / problem / "reference.py").read_text()),
        Submission(source=(EXAMPLES / problem / candidate).read_text()),
        EvalConfig(device="cuda"),
    )


@pytest.mark.parametrize("problem", ["relu", "softmax", "matmul", "linear_gelu"])
def test_honest_examples_are_correct_and_timed(problem: str) -> None:
    result = _check(problem)
    assert result.verdict == Verdict.correct, result.feedback
    assert result.environment.interpreter is False
    perf = result.performance
    assert perf.meaningful and perf.method == "cuda_events+l2_flush"
    assert perf.candidate_ms is not None and perf.candidate_ms.n >= 20
    assert perf.speedup is not None and perf.speedup > 0
    assert perf.speedup_ci95 is not None and perf.speedup_ci95[0] <= perf.speedup <= perf.speedup_ci95[1]
    assert result.reward == pytest.approx(perf.speedup)


def test_compile_error_is_reported_as_such_on_gpu() -> None:
    result = _check("relu", "candidate_compile_error.py")
    assert result.verdict == Verdict.compile_error
    assert "slope" in result.feedback
