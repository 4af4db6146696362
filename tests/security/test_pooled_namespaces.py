"""The warm pool inside a namespace backend: the zygote and its children share one private root
(read-only system binds, a tmpfs for the jobs, no network). The host's files stay out of reach
even of code that bypasses the audit hook (numpy reads files in C), the jobs directory cannot be
listed (each child's landlock), each job's directory is removed when its process exits, a memory
bomb is killed by the zygote's watch, and honest jobs pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.pool import PoolClient, WarmPool

from ..tiny_problem import CANDIDATE, REFERENCE
from .test_hostile_candidates import MEMORY_BOMB

FAST = EvalConfig(device="cpu", trials=1, timeout_s=60)
HOST_FILE = Path(__file__).resolve()  # a file of the repository, which is not bound into the sandbox
SPY = CANDIDATE.replace(
    "class ModelNew",
    f"""import os
import numpy as np

try:
    print("HOST", len(np.fromfile({str(HOST_FILE)!r}, dtype=np.uint8)), flush=True)
except OSError as exc:
    print("HOST", type(exc).__name__, flush=True)
try:
    print("JOBS", sorted(os.listdir(os.path.dirname(os.path.dirname(os.getcwd())))), flush=True)
except OSError as exc:
    print("JOBS", type(exc).__name__, flush=True)
print("JOB", os.path.dirname(os.getcwd()), flush=True)
print("EARLIER", os.path.exists(EARLIER_JOB), flush=True)  # stat is not refused, listing is


class ModelNew""",
)


@pytest.fixture(scope="module", params=["bwrap", "unshare"])
def namespace_pool(request: pytest.FixtureRequest, make_isolation) -> Iterator[PoolClient]:
    with WarmPool("cpu", isolation=make_isolation(request.param), spares=2) as pool:
        yield pool.client


def test_pooled_jobs_cannot_reach_host_files_and_leave_nothing_behind(namespace_pool: PoolClient) -> None:
    first = evaluate(
        Problem(source=REFERENCE), Submission(source=SPY.replace("EARLIER_JOB", "'/nonexistent'")), FAST, pool=namespace_pool
    )
    assert first.verdict == Verdict.correct, first.feedback
    assert first.environment.isolation == namespace_pool.isolation_name
    assert "HOST FileNotFoundError" in first.output["stdout"]
    assert "JOBS PermissionError" in first.output["stdout"]
    first_job = first.output["stdout"].split("JOB ", 1)[1].split()[0]
    second = evaluate(
        Problem(source=REFERENCE), Submission(source=SPY.replace("EARLIER_JOB", repr(first_job))), FAST, pool=namespace_pool
    )
    assert second.verdict == Verdict.correct, second.feedback
    assert "EARLIER False" in second.output["stdout"], second.output  # the first job's directory is gone
    assert first.timings_ms.start < 1000


def test_pooled_memory_bomb_is_killed_and_the_next_job_passes(namespace_pool: PoolClient) -> None:
    bomb = evaluate(Problem(source=REFERENCE), Submission(source=MEMORY_BOMB), FAST, pool=namespace_pool)
    assert bomb.verdict == Verdict.runtime_error, (bomb.verdict, bomb.error)
    assert "memory limit" in bomb.error["message"]
    honest = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), FAST, pool=namespace_pool)
    assert honest.verdict == Verdict.correct
