"""Triton 3.6 compiles a C launcher per kernel argument-type pattern (gcc, ~0.4 s). Through the warm
pool, the first candidate with a pattern compiles it and the zygote learns the pattern; a later,
different candidate with the same argument types takes the zygote's verified build instead.
Run with bench/gpu_session.sh."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from triton_referee.sandbox.harness.triton_cache import launchers_supported
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.pool import WarmPool

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.gpu


def test_a_later_candidate_with_the_same_argument_types_takes_the_learned_launcher() -> None:
    assert launchers_supported(), "this Triton builds no per-pattern launcher: the cache has nothing to do here"
    problem = Problem(source=(EXAMPLES / "relu" / "reference.py").read_text())
    honest = (EXAMPLES / "relu" / "candidate.py").read_text()
    # Another kernel body and block size, the same argument types.
    variant = honest.replace("y = tl.where(x > 0, x, 0.0)", "y = tl.maximum(x, 0.0)").replace("BLOCK = 4096", "BLOCK = 1024")
    assert variant != honest
    with WarmPool("cuda", spares=2, warm_target="auto") as pool:
        first = evaluate(problem, Submission(source=honest), EvalConfig(device="cuda"), pool=pool.client)
        assert first.verdict == Verdict.correct, first.feedback
        assert first.environment.launchers_seeded == 0
        assert first.environment.launchers_built, first.environment
        deadline = time.monotonic() + 60
        while pool.client.request({"op": "ping"})["warm"]["launchers"] < 1:
            log = pool.log_path.read_text(errors="replace")[-3000:] if pool.log_path.exists() else ""
            assert time.monotonic() < deadline, f"the zygote did not build the launcher; its log:\n{log}"
            time.sleep(0.2)
        second = evaluate(problem, Submission(source=variant), EvalConfig(device="cuda"), pool=pool.client)
        assert second.verdict == Verdict.correct, second.feedback
        assert second.environment.launchers_seeded >= 1
        assert second.performance.speedup is not None
