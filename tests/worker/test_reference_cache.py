"""The reference timing cache: reused for the same problem and card, never across problems."""

from __future__ import annotations

from pathlib import Path

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.reference_cache import ReferenceCache

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _evaluate(problem: str, cache: ReferenceCache):
    return evaluate(
        Problem(source=(EXAMPLES / problem / "reference.py").read_text()),
        Submission(source=(EXAMPLES / problem / "candidate.py").read_text()),
        EvalConfig(device="cpu", trials=1),
        reference_cache=cache,
    )


def test_second_evaluation_of_a_problem_reuses_the_reference_timing(tmp_path: Path) -> None:
    cache = ReferenceCache(tmp_path / "cache")
    first = _evaluate("relu", cache)
    second = _evaluate("relu", cache)
    assert first.verdict == second.verdict == Verdict.correct
    assert first.performance.reference_cached is False
    assert second.performance.reference_cached is True
    assert second.performance.reference_ms == first.performance.reference_ms
    # Another worker process sharing the directory finds it too; another problem does not.
    shared = ReferenceCache(tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    other = _evaluate("softmax", shared)
    assert other.performance.reference_cached is False
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_cache_key_depends_on_card_versions_and_plan() -> None:
    environment = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11", "triton": "3.6"}
    base = ReferenceCache.key("abc", [{}], environment, {"sets": 4})
    assert base == ReferenceCache.key("abc", [{}], dict(environment), {"sets": 4})
    assert base != ReferenceCache.key("abc", [{}], {**environment, "device": "NVIDIA H200"}, {"sets": 4})
    assert base != ReferenceCache.key("abc", [{}], {**environment, "triton": "3.9"}, {"sets": 4})
    assert base != ReferenceCache.key("abc", [{}, {"n": 7}], environment, {"sets": 4})
    assert base != ReferenceCache.key("abd", [{}], environment, {"sets": 4})
