"""Issue 18 on the GPU host: the warm pool under `unshare` with each child locked down (landlock,
seccomp). An attacker past its in-process guards, beside a concurrent job, meets the kernel's
refusals (tests/security/confinement_probe.py); the job it attacked and an honest job right after,
which compiles its kernel in the locked-down child (ptxas, and gcc for a new launcher pattern), are
`correct`. Run with bench/gpu_session.sh confine."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

import pytest

from tests.security.confinement_probe import attacker_source, probe_report, uncontained
from tests.tiny_problem import CANDIDATE, REFERENCE
from triton_referee.sandbox.isolation import UnshareIsolation
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, EvaluationResult, Problem, Submission, Verdict
from triton_referee.worker.pool import WarmPool

pytestmark = pytest.mark.gpu
CONFIG = EvalConfig(device="cuda", trials=1, timeout_s=120)
VICTIM = CANDIDATE.replace("import torch\n", "import time\ntime.sleep(10)\nimport torch\n", 1)
# Another argument-type pattern (an extra float argument): its launcher is compiled by gcc in the child.
HONEST_NEW_PATTERN = (
    CANDIDATE.replace("x_ptr, out_ptr, n, BLOCK", "x_ptr, out_ptr, n, scale, BLOCK")
    .replace("* 2, mask=mask)", "* scale, mask=mask)")
    .replace("x.numel(), BLOCK=256)", "x.numel(), 2.0, BLOCK=256)")
)


def test_locked_down_gpu_pool_contains_an_attacker_and_judges_honest_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real_mkdtemp = tempfile.mkdtemp

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = real_mkdtemp(*args, **kwargs)
        made.append(path)
        return path

    with WarmPool("cuda", isolation=UnshareIsolation(), spares=2, warm_target="auto") as pool:
        client = pool.client
        warm = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), CONFIG, pool=client)
        assert warm.verdict == Verdict.correct, (warm.verdict, warm.error, pool.log_path.read_text()[-3000:])
        assert "landlock:7" in warm.environment.confinement and "seccomp" in warm.environment.confinement
        monkeypatch.setattr(tempfile, "mkdtemp", recording_mkdtemp)
        victim: dict[str, EvaluationResult] = {}
        thread = threading.Thread(
            target=lambda: victim.update(
                result=evaluate(Problem(source=REFERENCE), Submission(source=VICTIM), CONFIG, pool=client, audit_hook=False)
            )
        )
        thread.start()
        deadline = time.monotonic() + 30
        while not made and time.monotonic() < deadline:
            time.sleep(0.02)
        config = {"victim_job": made[0], "wait_victim": True, "worker_pid": os.getpid(), "worker_file": __file__}
        # As on the CPU (tests/security/test_confinement.py): the sealed hook refuses the prelude's
        # bypasses, so the jobs run as if it were beaten, without it; the kernel's layers meet the attack.
        attacker = evaluate(
            Problem(source=REFERENCE), Submission(source=attacker_source(config)), CONFIG, pool=client, audit_hook=False
        )
        thread.join(timeout=180)
        report = probe_report(attacker.output["stdout"])
        assert report["victim_seen"], report
        # On a GPU seccomp lets socket(AF_UNIX) through: the CUDA driver opens one while it initialises
        # (sandbox/harness/lockdown.py); every other family stays refused.
        assert uncontained(report, same_file_system=True, allowed=frozenset({"socket_unix"})) == {}, report
        assert victim["result"].verdict == Verdict.correct, (victim["result"].verdict, victim["result"].error)
        honest = evaluate(Problem(source=REFERENCE), Submission(source=HONEST_NEW_PATTERN), CONFIG, pool=client)
        assert honest.verdict == Verdict.correct, (honest.verdict, honest.error, honest.output)
        assert honest.environment.launchers_built, honest.environment  # gcc ran inside the lockdown
