"""The anti-cheat corpus: every file in tests/exploits/ names on its first line what must reject it:
`# expect: RULE` (verdict `cheating` with that rule among the violations) or `# expect: verdict=V`
(cheats that simply fail: partial work, precision downgrades, forged verdicts). Every file in
tests/honest/ must be accepted with no fatal violation. All run against tests/exploits/problem.py
on the CPU with Triton's interpreter, in processes forked by the warm pool (the production path;
tests/test_verdicts.py covers fresh processes); tests/gpu/ runs the GPU-only classes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from sandbox.evaluate import evaluate
from sandbox.models import EvalConfig, Problem, Submission, Verdict

HERE = Path(__file__).parent
PROBLEM = Problem(source=(HERE / "exploits" / "problem.py").read_text())
EXPLOITS = sorted(p for p in (HERE / "exploits").glob("*.py") if p.name != "problem.py")
HONEST = sorted((HERE / "honest").glob("*.py"))


def expected_rule(path: Path) -> str:
    match = re.match(r"# expect: (\S+)", path.read_text())
    assert match, f"{path.name} must start with '# expect: RULE'"
    return match.group(1)


def check(path: Path, pool: Any):
    return evaluate(PROBLEM, Submission(source=path.read_text()), EvalConfig(device="cpu", trials=2, timeout_s=60), pool=pool)


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
