"""GPU tests: run on a CUDA host with `bench/gpu_session.sh` (they are deselected elsewhere by the
`gpu` marker, never skipped to get green)."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.evaluate import evaluate
from worker.models import EvalConfig, Problem, Submission, Verdict

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


def test_harness_processes_get_one_hardware_queue_fresh_and_pooled() -> None:
    """CUDA_DEVICE_MAX_CONNECTIONS=1 (worker/process.py) reaches both a fresh harness process and a
    warm-pool spare, which made its context before it was assigned (under the zygote's environment)."""
    from worker.pool import WarmPool

    problem = Problem(source=(EXAMPLES / "relu" / "reference.py").read_text())
    candidate = ("import os\nprint('connections:', os.environ.get('CUDA_DEVICE_MAX_CONNECTIONS'), "
                 "open('/proc/self/environ', 'rb').read().count(b'CUDA_DEVICE_MAX_CONNECTIONS=1'))\n"
                 + (EXAMPLES / "relu" / "candidate.py").read_text())
    fresh = evaluate(problem, Submission(source=candidate), EvalConfig(device="cuda"))
    with WarmPool("cuda", spares=2) as pool:
        pooled = evaluate(problem, Submission(source=candidate), EvalConfig(device="cuda"), pool=pool.client)
    for result in (fresh, pooled):
        assert result.verdict == Verdict.correct, result.feedback
        # /proc/self/environ is what the process was started with: for a spare, the zygote's environment
        assert "connections: 1 1" in result.output.get("stdout", ""), result.output
