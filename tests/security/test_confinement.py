"""Confinement that holds once the candidate has beaten its in-process guards (issue 18).

The attacker (confinement_probe.py) switches its audit hook off, then, while another job is being
judged in the same warm pool, tries to read that job's source, write into its directory and Triton
cache, read its own job's reference files, read other processes' /proc entries and memory, signal
the zygote and the worker, run a binary it wrote, and open sockets. Under `unshare` and `bwrap`
(warm pool) and `docker` every attempt fails with an error from the kernel; under `process` the
same attacker shows what that backend leaves exposed. The job it attacked, and an honest job right
after in the same pool, are `correct`."""

from __future__ import annotations

import dataclasses
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, EvaluationResult, Problem, Submission, Verdict
from triton_referee.worker.pool import PoolClient, WarmPool

from ..tiny_problem import CANDIDATE, REFERENCE
from .confinement_probe import attacker_source, probe_report, uncontained
from .conftest import ROOT

FAST = EvalConfig(device="cpu", trials=1, timeout_s=90)
# Being judged while the attacker runs: it sleeps in its import, its source already written.
VICTIM = CANDIDATE.replace("import torch\n", "import time\ntime.sleep(8)\nimport torch\n", 1)
KERNEL_LAYERS = ("landlock:7", "landlock-scope:signal,abstract-unix", "seccomp")


@pytest.fixture(scope="module", params=["unshare", "bwrap", "process"])
def warm_pool(request: pytest.FixtureRequest, make_isolation) -> Iterator[PoolClient]:
    with WarmPool("cpu", isolation=make_isolation(request.param), spares=2) as pool:
        yield pool.client


def _attack_beside_a_victim(
    monkeypatch: pytest.MonkeyPatch, wait_victim: bool, **where: Any
) -> tuple[EvaluationResult, EvaluationResult, dict]:
    """Start an honest job that is still being judged when the attacker runs; return both results
    and the attacker's report."""
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = real_mkdtemp(*args, **kwargs)
        made.append(path)
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)  # to learn the victim job's directory
    # The sealed audit hook now refuses the prelude's bypasses (tests/exploits covers them), so that it is
    # the kernel's layer alone that meets the attack, these jobs run as if the hook were beaten: without it.
    where = {**where, "audit_hook": False}  # the operator's REFEREE_UNSAFE_NO_AUDIT_HOOK=1, as a worker passes it
    victim: dict[str, EvaluationResult] = {}
    thread = threading.Thread(
        target=lambda: victim.update(result=evaluate(Problem(source=REFERENCE), Submission(source=VICTIM), FAST, **where))
    )
    thread.start()
    deadline = time.monotonic() + 30
    while not made and time.monotonic() < deadline:
        time.sleep(0.02)
    assert made, "the victim job did not start"
    config = {
        "victim_job": made[0],
        "wait_victim": wait_victim,
        "worker_pid": os.getpid(),
        "worker_file": str(ROOT / "service" / "settings.py"),
    }
    attacker = evaluate(Problem(source=REFERENCE), Submission(source=attacker_source(config)), FAST, **where)
    thread.join(timeout=180)
    report = probe_report(attacker.output["stdout"])
    return victim["result"], attacker, report


def test_attacker_past_its_guards_meets_the_kernel_in_the_warm_pool(
    warm_pool: PoolClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim, attacker, report = _attack_beside_a_victim(monkeypatch, True, pool=warm_pool)
    assert "BYPASSED [" in attacker.output["stdout"]  # it tried the bypasses (the sealed hook refuses most of them)
    assert report["victim_seen"], report  # the attack ran while the other job was being judged
    if warm_pool.isolation_name == "process":
        # The control: without the kernel's layers, a candidate past its guards reaches all of this.
        exposed = [
            name
            for name in (
                "list_jobs",
                "read_victim_source",
                "write_victim_dir",
                "write_victim_triton_cache",
                "read_reference_source",
                "write_reference_dir",
                "read_parent_cmdline",
                "read_parent_environ",
                "list_proc",
                "process_vm_readv_parent",
                "signal_parent",
                "exec_written_binary",
                "exec_system_binary",
                "socket_inet",
                "socket_unix",
            )
            if "ok" in report[name]
        ]
        assert len(exposed) == 15, report
        assert report["signal_scan_accepted"], report
        assert attacker.environment.confinement == []
    else:
        assert uncontained(report, same_file_system=True) == {}, report
        for layer in (*KERNEL_LAYERS, "pidns:pool", "netns:pool", "mntns:pool"):
            assert layer in attacker.environment.confinement, attacker.environment.confinement
    assert victim.verdict == Verdict.correct, (victim.verdict, victim.error)
    honest = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), FAST, pool=warm_pool)
    assert honest.verdict == Verdict.correct, (honest.verdict, honest.error)
    assert honest.environment.confinement == attacker.environment.confinement


def test_attacker_past_its_guards_meets_the_kernel_in_docker(make_isolation, monkeypatch: pytest.MonkeyPatch) -> None:
    """Docker has no zygote: each harness process has a container of its own (the other job and the
    reference are in other containers, so their files are not even there), and the harness locks
    itself down inside it as well."""
    isolation = make_isolation("docker")
    victim, attacker, report = _attack_beside_a_victim(monkeypatch, False, isolation=isolation)
    assert uncontained(report, same_file_system=False) == {}, report
    for layer in (*KERNEL_LAYERS, "container"):
        assert layer in attacker.environment.confinement, attacker.environment.confinement
    assert victim.verdict == Verdict.correct, (victim.verdict, victim.error)
    honest = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), FAST, isolation=isolation)
    assert honest.verdict == Verdict.correct, (honest.verdict, honest.error)


@pytest.mark.parametrize("choice", ["seccomp", "off"])
def test_lockdown_can_be_narrowed_for_diagnosis_and_says_so(choice: str, make_isolation) -> None:
    """REFEREE_LOCKDOWN=seccomp (or landlock, or off; the worker's settings put it on the backend) keeps
    only that much; the result says what was on."""
    with WarmPool("cpu", isolation=dataclasses.replace(make_isolation("unshare"), lockdown=choice), spares=1) as pool:
        honest = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), FAST, pool=pool.client)
    assert honest.verdict == Verdict.correct, (honest.verdict, honest.error)
    kernel = [layer for layer in honest.environment.confinement if not layer.endswith(":pool")]
    assert kernel == (["seccomp"] if choice == "seccomp" else []), honest.environment.confinement
    assert "pidns:pool" in honest.environment.confinement
