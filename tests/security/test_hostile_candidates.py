"""Hostile candidates through the whole engine on each backend: every one gets a verdict, and the
next job on the same backend (the same pooled containers for docker) is an honest candidate that
must come out `correct`. The audit hook refuses most escapes first (`cheating`/`forbidden_call`);
the memory bomb and the endless loop are left to the operating-system layer."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict

from ..tiny_problem import CANDIDATE, CANDIDATE_TEMPLATE, REFERENCE

EXPLOITS = Path(__file__).resolve().parents[1] / "exploits"


def _with_prelude(prelude: str) -> str:
    """The honest tiny candidate with `prelude` run at import."""
    head, _, tail = CANDIDATE_TEMPLATE.replace("FACTOR", "2").partition("class ModelNew")
    return head + textwrap.dedent(prelude) + "\n\nclass ModelNew" + tail


def _escapes(*names: str) -> str:
    """The corpus exploits `names` (same kernel and ModelNew) as one candidate: each one's attack,
    in order, at import. Each attack catches the refusal and goes on, so every one of them runs."""
    sources = [(EXPLOITS / f"{name}.py").read_text() for name in names]
    head, marker, tail = sources[0].partition("class ModelNew")
    attacks = [source.partition("    return out\n")[2].partition("class ModelNew")[0] for source in sources[1:]]
    assert all(attacks) and marker, "the exploits no longer share the kernel/attack/ModelNew layout"
    return head + "".join(attacks) + marker + tail


MEMORY_BOMB = _with_prelude("""
    hoard = []
    for _ in range(200):  # 12.5 GiB in 64 MiB pieces, every page written
        hoard.append(bytearray(b"x" * (64 << 20)))
""")
ENDLESS = _with_prelude("""
    while True:
        pass
""")
# Reaching Redis on the loopback, then killing the harness's parent: one evaluation (a fresh pair of
# harness processes costs seconds), told apart by the audit events it records (see below).
ESCAPES = _escapes("escape_socket", "escape_kill_parent")
CASES = {
    "redis_connect+kill_parent": (ESCAPES, {Verdict.cheating}),
    "memory_bomb": (MEMORY_BOMB, {Verdict.runtime_error}),
    "endless_loop": (ENDLESS, {Verdict.timeout}),
}


def _evaluate(source: str, isolation, reference: str = REFERENCE, timeout: float = 60):
    return evaluate(
        Problem(source=reference),
        Submission(source=source),
        EvalConfig(device="cpu", trials=2, timeout_s=timeout),
        isolation=isolation,
    )


def _refused_events(result) -> list[str]:
    return [event["event"] for v in result.anti_cheat.violations if v.rule == "forbidden_call" for event in v.evidence["events"]]


@pytest.mark.parametrize("backend", ["docker", "bwrap", "unshare"])
def test_hostile_candidates_then_an_honest_one(backend: str, make_isolation) -> None:
    isolation = make_isolation(backend, memory_bytes=1536 << 20)
    exploit_problem = (EXPLOITS / "problem.py").read_text()
    for name, (source, verdicts) in CASES.items():
        reference = REFERENCE if name in ("memory_bomb", "endless_loop") else exploit_problem
        # The endless loop must end by the deadline; 30 s leaves a fresh container and its torch import,
        # on a two-core machine running two test workers, time to answer before it.
        result = _evaluate(source, isolation, reference, timeout=30 if name == "endless_loop" else 60)
        assert result.verdict in verdicts, (name, result.verdict, result.error, result.feedback)
        if result.verdict == Verdict.cheating:
            assert "forbidden_call" in [v.rule for v in result.anti_cheat.violations]
        if name == "redis_connect+kill_parent":
            # The kill is refused as os.kill; everything else refused came from the connection attempt
            # (socket.*, or the stdlib's lazy imports on its way there): both attacks were caught.
            refused = _refused_events(result)
            assert "os.kill" in refused and [e for e in refused if e != "os.kill"], refused
        if name == "memory_bomb" and backend != "docker":
            assert "memory limit" in result.error["message"], result.error
        honest = _evaluate(CANDIDATE, isolation)
        assert honest.verdict == Verdict.correct, (name, honest.verdict, honest.error)
        assert honest.environment.isolation == backend


def test_strict_docker_gives_each_evaluation_fresh_containers(make_isolation) -> None:
    isolation = make_isolation("docker-strict")
    result = _evaluate(CANDIDATE, isolation)
    assert result.verdict == Verdict.correct and result.environment.isolation == "docker-strict"
