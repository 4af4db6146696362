"""A sticky CUDA error (an illegal address in a Triton kernel) ends as the candidate's runtime error,
and an honest job right after it, on the same GPU and in the same process, passes: the poisoned
CUDA context died with its harness process. Run with bench/gpu_session.sh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.pool import PoolClient, WarmPool

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.gpu

# The relu candidate storing a terabyte past its output, unmasked: CUDA's illegal memory access,
# which poisons the context for every later call in that process.
ILLEGAL_ADDRESS = (
    (EXAMPLES / "relu" / "candidate.py")
    .read_text()
    .replace("    tl.store(out_ptr + offs, y, mask=mask)", "    tl.store(out_ptr + offs + (1 << 40), y)")
)


@pytest.fixture(scope="module")
def gpu_pool() -> Iterator[PoolClient]:
    with WarmPool("cuda", spares=2, warm_target="auto") as pool:
        yield pool.client


@pytest.mark.parametrize("pooled", [False, True], ids=["fresh", "warm_pool"])
def test_an_illegal_address_then_an_honest_job_on_the_same_gpu(pooled: bool, request: pytest.FixtureRequest) -> None:
    assert "1 << 40" in ILLEGAL_ADDRESS
    pool = request.getfixturevalue("gpu_pool") if pooled else None
    problem = Problem(source=(EXAMPLES / "relu" / "reference.py").read_text())
    poisoned = evaluate(problem, Submission(source=ILLEGAL_ADDRESS), EvalConfig(device="cuda", timeout_s=120), pool=pool)
    assert poisoned.verdict == Verdict.runtime_error, (poisoned.verdict, poisoned.error, poisoned.feedback)
    message = f"{poisoned.error} {poisoned.output}".lower()
    assert "illegal" in message or "cuda" in message, poisoned.error
    honest = evaluate(
        problem, Submission(source=(EXAMPLES / "relu" / "candidate.py").read_text()), EvalConfig(device="cuda"), pool=pool
    )
    assert honest.verdict == Verdict.correct, (honest.verdict, honest.error, honest.feedback)
    assert honest.performance.meaningful and honest.performance.speedup is not None
