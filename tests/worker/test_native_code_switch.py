"""The operator's switch for native code (REFEREE_ALLOW_NATIVE_CODE=1: the worker's settings pass it to
`evaluate` as `allow_native_code=True`, never a request): without it a candidate that copies a shared
library into its directory and loads it is `cheating` (native_code: the refused load and the ELF file
found); with it the same candidate is judged on its work alone. Fresh harness processes on the CPU
(Triton's interpreter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.settings import JudgeSettings

TESTS = Path(__file__).resolve().parents[1]  # the corpora are data folders of tests/
PROBLEM = Problem(source=(TESTS / "exploits" / "problem.py").read_text())
CANDIDATE = Submission(source=(TESTS / "exploits" / "native_library_copied.py").read_text())
CONFIG = EvalConfig(device="cpu", trials=2, timeout_s=120)


def test_native_code_is_cheating_without_the_switch() -> None:
    result = evaluate(PROBLEM, CANDIDATE, CONFIG)
    assert result.verdict == Verdict.cheating, result.feedback
    evidence = [v.evidence for v in result.anti_cheat.violations if v.rule == "native_code"]
    assert any("files" in e and "libfast.so" in e["files"] for e in evidence), evidence  # the ELF file in its directory
    assert any("loading a native library" in str(e.get("events")) for e in evidence), evidence  # the refused load


def test_native_code_is_allowed_with_the_operator_switch() -> None:
    result = evaluate(PROBLEM, CANDIDATE, CONFIG, allow_native_code=True)
    assert result.anti_cheat.violations == [], result.anti_cheat.violations
    assert result.verdict == Verdict.correct, result.feedback


def test_the_switch_is_read_by_the_judges_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REFEREE_ALLOW_NATIVE_CODE", raising=False)
    assert JudgeSettings().allow_native_code is False
    monkeypatch.setenv("REFEREE_ALLOW_NATIVE_CODE", "1")
    assert JudgeSettings().allow_native_code is True
