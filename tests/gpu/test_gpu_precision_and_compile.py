"""GPU tests for KernelBench's precision switch and the torch.compile baseline (issue 19, item 6):
run on a CUDA host with `bench/gpu_session.sh tests` (deselected elsewhere by the `gpu` marker)."""

from __future__ import annotations

from pathlib import Path

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.gpu


def _check(problem: str, **config: object):
    return evaluate(
        Problem(source=(EXAMPLES / problem / "reference.py").read_text()),
        Submission(source=(EXAMPLES / problem / "candidate.py").read_text()),
        EvalConfig(device="cuda", **config),
    )


def test_the_compile_baseline_is_timed_next_to_eager() -> None:
    result = _check("softmax", compile_baseline=True)
    assert result.verdict == Verdict.correct, result.feedback
    perf = result.performance
    assert perf.compiled_reference_ms is not None and perf.compiled_reference_ms.n >= 20
    assert perf.speedup is not None and perf.speedup_vs_compiled is not None
    assert perf.speedup_vs_compiled == pytest.approx(perf.compiled_reference_ms.median / perf.candidate_ms.median)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_low_precision_inputs_and_parameters_on_the_gpu(precision: str) -> None:
    # relu's candidate writes an output of its input's dtype (parameters cast: tests/worker/test_precision.py).
    result = _check("relu", precision=precision)
    assert result.verdict == Verdict.correct, result.feedback
    assert (result.correctness.atol, result.correctness.rtol) == (1e-2, 1e-2)
