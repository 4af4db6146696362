"""Under docker the engine's signals cannot reach the harness: the candidate's container is paused
(`docker pause`) while the reference is timed, and only a timing taken so is cached (docs/evidence.md)."""

from __future__ import annotations

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.reference_cache import ReferenceCache

from ..tiny_problem import CANDIDATE, REFERENCE


def test_the_candidates_container_is_paused_while_the_reference_is_timed(make_isolation) -> None:
    isolation = make_isolation("docker")
    cache = ReferenceCache()
    result = evaluate(
        Problem(source=REFERENCE),
        Submission(source=CANDIDATE),
        EvalConfig(device="cpu", trials=1),
        isolation=isolation,
        reference_cache=cache,
    )
    assert result.verdict == Verdict.correct, (result.error, result.feedback)
    states = result.performance.candidate_state_while_reference_timed
    assert result.performance.reference_timed_alone is True and list(states.values()) == ["paused"], states
    again = evaluate(
        Problem(source=REFERENCE),
        Submission(source=CANDIDATE),
        EvalConfig(device="cpu", trials=1),
        isolation=isolation,
        reference_cache=cache,
    )
    assert again.verdict == Verdict.correct and again.performance.reference_cached is True  # it was cached
