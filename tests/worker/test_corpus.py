"""The anti-cheat corpus: every file in tests/exploits/ names on its first line what must reject it:
`# expect: RULE` (verdict `cheating` with that rule among the violations) or `# expect: verdict=V`
(cheats that simply fail: partial work, precision downgrades, forged verdicts). Every file in
tests/honest/ must be accepted with no fatal violation. All run against tests/exploits/problem.py
on the CPU with Triton's interpreter, in processes forked by the warm pool (the production path;
tests/worker/test_verdicts.py covers fresh processes); tests/gpu/ runs the GPU-only classes. Then every
file again with the reference-data cache warm: judged from cached inputs and expected outputs, each
must get the verdict and the rules it got from a live reference."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, EvaluationResult, Problem, Submission, Verdict
from triton_referee.worker.reference_cache import ReferenceCache
from triton_referee.worker.reference_data import ReferenceDataCache

TESTS = Path(__file__).resolve().parents[1]  # the corpora are data folders of tests/
PROBLEM = Problem(source=(TESTS / "exploits" / "problem.py").read_text())
EXPLOITS = sorted(p for p in (TESTS / "exploits").glob("*.py") if p.name != "problem.py")
HONEST = sorted((TESTS / "honest").glob("*.py"))


def expected_rule(path: Path) -> str:
    match = re.match(r"# expect: (\S+)", path.read_text())
    assert match, f"{path.name} must start with '# expect: RULE'"
    return match.group(1)


def cpu_only(path: Path) -> bool:
    """A file whose second line says `# device: cpu` (its class needs host memory as the output)."""
    return "\n# device: cpu" in path.read_text()[:400]


_UNCACHED: dict[Path, EvaluationResult] = {}


def check(path: Path, pool: Any, caches: tuple[ReferenceCache, ReferenceDataCache] | None = None) -> EvaluationResult:
    """Evaluate one file; without `caches` once per session (the cached-reference test compares with it)."""
    if caches is None and path in _UNCACHED:
        return _UNCACHED[path]
    timing, data = caches or (None, None)
    result = evaluate(
        PROBLEM,
        Submission(source=path.read_text()),
        EvalConfig(device="cpu", trials=2, timeout_s=60),
        pool=pool,
        reference_cache=timing,
        reference_data=data,
    )
    if caches is None:
        _UNCACHED[path] = result
    return result


@pytest.mark.parametrize("path", EXPLOITS, ids=lambda p: p.stem)
def test_exploit_is_rejected(path: Path, warm_pool: Any) -> None:
    expected = expected_rule(path)
    result = check(path, warm_pool)
    rules = [v.rule for v in result.anti_cheat.violations]
    assert not result.correct and result.reward <= 0, (result.verdict, rules)
    if expected.startswith("verdict="):
        assert result.verdict.value == expected.removeprefix("verdict="), (result.verdict, rules, result.feedback)
        return
    assert result.verdict == Verdict.cheating, (result.verdict, rules, result.feedback)
    assert expected in rules, rules
    assert result.reward == -1.0
    fired = next(v for v in result.anti_cheat.violations if v.rule == expected)
    assert fired.evidence and fired.message
    assert f"rule {expected} fired" in result.feedback


@pytest.mark.parametrize("path", HONEST, ids=lambda p: p.stem)
def test_honest_kernel_is_accepted(path: Path, warm_pool: Any) -> None:
    assert expected_rule(path) == "correct"
    result = check(path, warm_pool)
    assert result.anti_cheat.violations == [], result.anti_cheat.violations
    assert result.verdict == Verdict.correct, result.feedback
    assert result.anti_cheat.triton_launches > 0


@pytest.fixture(scope="module")
def warm_caches(warm_pool: Any) -> tuple[ReferenceCache, ReferenceDataCache]:
    """Caches holding the problem's reference timing and data, stored by an honest evaluation."""
    caches = ReferenceCache(), ReferenceDataCache(max_uses=10_000)
    stored = check(HONEST[0], warm_pool, caches)
    assert stored.verdict == Verdict.correct and stored.performance.reference_outputs_cached is False
    assert len(caches[1].store.keys()) == 1
    return caches


@pytest.mark.parametrize("path", EXPLOITS + HONEST, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_cached_reference_data_gives_the_same_verdict(path: Path, warm_pool: Any, warm_caches: Any) -> None:
    uncached = check(path, warm_pool)
    cached = check(path, warm_pool, warm_caches)
    if "reference.setup" in uncached.timings_ms.steps:  # not rejected by the static checks alone
        assert cached.performance.reference_outputs_cached is True
        if cached.correctness.recheck_passed is not None:  # the rechecks ran on the live model, built in the background
            assert "reference.background_setup" in cached.timings_ms.steps
    assert cached.verdict == uncached.verdict, (cached.feedback, uncached.feedback)
    assert cached.reward == uncached.reward
    assert sorted(v.rule for v in cached.anti_cheat.violations) == sorted(v.rule for v in uncached.anti_cheat.violations)
