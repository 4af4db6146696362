"""The warm pool on the CPU: a real zygote (torch and triton imported) forking real harness
processes. The GPU half (CUDA contexts in spares, seeded driver utilities) runs in tests/gpu."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.tiny_problem import CANDIDATE, REFERENCE
from triton_referee.sandbox.harness import tensors
from triton_referee.sandbox.harness.messages import CandidateSetup, request_wire
from triton_referee.sandbox.harness.zygote import Zygote
from triton_referee.sandbox.launch import child_environment
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.pool import PoolUnavailable, WarmPool
from triton_referee.worker.process import HarnessDied, HarnessProcess

FAST = EvalConfig(device="cpu", trials=1, timeout_s=60)
MEMORY_BOMB = CANDIDATE.replace(
    "class ModelNew", "HOARD = bytearray(3 << 30)\nHOARD[::4096] = b'x' * len(HOARD[::4096])\n\n\nclass ModelNew"
)


def test_pooled_evaluation_matches_a_fresh_one(warm_pool) -> None:
    pooled = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), FAST, pool=warm_pool)
    fresh = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), FAST)
    assert pooled.verdict == fresh.verdict == Verdict.correct
    assert pooled.correctness.passed == fresh.correctness.passed > 0
    # Taking two forked processes costs milliseconds; starting two fresh ones costs an `import torch` each.
    assert pooled.timings_ms.start < 1000
    assert set(pooled.timings_ms.steps) >= {"reference.setup", "candidate.prepare", "candidate.setup", "candidate.run"}


def test_children_get_their_own_session_environment_and_directory(warm_pool) -> None:
    workdir = Path(warm_pool.scratch) / "job-env-check" / "candidate"
    process = HarnessProcess("candidate", workdir, "cpu", pool=warm_pool)
    process.start()
    try:
        pid = process.process.pid
        process.request({"cmd": "unknown"}, deadline=time.monotonic() + 30)  # it has taken its assignment
        assert os.getsid(pid) == pid  # its own session: a kill reaches everything it started
        assert Path(f"/proc/{pid}/cwd").resolve() == workdir.resolve()
    finally:
        process.close()
    deadline = time.monotonic() + 10
    while (status := warm_pool.exit_status(pid))[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status[:2] == (False, -signal.SIGKILL)  # closing kills its group: nothing more is asked of it
    # What the candidate itself sees: its own Triton cache, nothing of the worker's environment.
    os.environ["REFEREE_TEST_SECRET"] = "not-for-candidates"
    try:
        spy = CANDIDATE.replace(
            "class ModelNew",
            "import os\nprint(sorted(os.environ), os.environ['TRITON_CACHE_DIR'], flush=True)\n\n\nclass ModelNew",
        )
        result = evaluate(Problem(source=REFERENCE), Submission(source=spy), FAST, pool=warm_pool)
    finally:
        del os.environ["REFEREE_TEST_SECRET"]
    assert result.verdict == Verdict.correct
    assert "REFEREE_TEST_SECRET" not in result.output["stdout"] and "REFEREE_" not in result.output["stdout"]
    assert "/candidate/triton-cache-candidate" in result.output["stdout"]


def test_memory_limit_kills_a_pooled_child_and_says_so(warm_pool) -> None:
    workdir = Path(warm_pool.scratch) / "job-memory" / "candidate"
    workdir.mkdir(parents=True)
    process = HarnessProcess("candidate", workdir, "cpu", pool=warm_pool, limits={"core_bytes": 0, "memory_bytes": 1 << 30})
    process.start()
    try:
        description, payload = tensors.encode([])
        with pytest.raises(HarnessDied, match=r"killed for holding .* over its memory limit of 1024 MiB"):
            setup = CandidateSetup(
                path=str(workdir / "bomb.py"), source=MEMORY_BOMB, device="cpu", init_seed=1, init_inputs=description
            )
            process.request(request_wire(setup), payload, deadline=time.monotonic() + 60)
    finally:
        process.close()
    # The pool is unharmed: the next evaluation is fine.
    assert evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), FAST, pool=warm_pool).verdict == Verdict.correct


def test_a_dead_zygote_takes_its_children_along_and_is_restarted() -> None:
    with WarmPool("cpu", spares=1) as pool:
        spare_pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == pool.process.pid]
        assert spare_pids, "the zygote forks spares ahead of demand"
        os.killpg(pool.process.pid, signal.SIGKILL)
        pool.process.wait(timeout=10)
        with pytest.raises(PoolUnavailable):
            pool.client.request({"op": "ping"}, timeout=2)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in spare_pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in spare_pids)
        pool.ensure()
        assert pool.restarts == 1
        assert pool.client.request({"op": "ping"})["ok"]
        result = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), FAST, pool=pool.client)
        assert result.verdict == Verdict.correct


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def _alive(pid: int) -> bool:
    try:
        return b"Z" not in Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1][:3]
    except OSError:
        return False


def test_the_zygote_refuses_requests_from_its_children_and_their_sessions() -> None:
    """SO_PEERCRED on the control socket: a harness process (or anything in its session) that found
    the socket past the audit hook gets no answer; the worker's side does."""
    worker_end, peer_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with worker_end, peer_end:
        zygote = Zygote(listener=worker_end, lifeline=-1, spares=0)
        assert not zygote.from_a_child(peer_end)
        zygote.children.add(os.getpid())  # the peer is "a child"
        assert zygote.from_a_child(peer_end)
        zygote.children = {os.getsid(0)}  # the peer is in a child's session
        assert zygote.from_a_child(peer_end)


def test_cuda_harness_processes_get_one_hardware_queue_and_cpu_ones_no_cuda(tmp_path: Path) -> None:
    # The zygote's environment comes from here too, so its spares create their contexts with it.
    cuda = child_environment(tmp_path, "zygote", "cuda")
    assert cuda["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
    cpu = child_environment(tmp_path, "candidate", "cpu")
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in cpu and cpu["CUDA_VISIBLE_DEVICES"] == ""
