"""Faults, each ending with every job in a final, correct state: a candidate that crashes its
harness, hangs in a kernel or floods its output (the worker goes on); Redis restarted mid-batch
(AOF on); the API restarted mid-batch. The SIGKILLed worker is in test_redis_workers.py.

Redis, the API (`referee serve`) and the workers (`referee worker`) are real processes here
(service/stack.py), so each can be killed and started again."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from service_support import API_KEYS, TINY_CANDIDATE, TINY_REFERENCE, full, static_reject, wait_until

from triton_referee.service.stack import SHORT_HEARTBEATS, ApiServer, RedisServer, Worker, executions, live_workers

KEY = {"X-API-Key": API_KEYS[0]}

# Kills its own harness process with a real segmentation fault (no audit event guards faulthandler).
CRASHING = TINY_CANDIDATE.replace(
    "        x = x.contiguous()\n", "        import faulthandler\n        faulthandler._sigsegv()\n"
)
# An endless loop inside the kernel: the interpreter runs it as Python and never returns.
HANGING = TINY_CANDIDATE.replace(
    "    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)\n",
    "    i = 0\n    while i >= 0:\n        i += 1\n    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)\n",
)
# 100 MB on stdout at import, then an honest kernel.
FLOODING = "import sys\nsys.stdout.write('x' * (100 * 1024 * 1024))\nsys.stdout.flush()\n" + TINY_CANDIDATE


def _static(tag: str) -> dict[str, Any]:
    return {"reference": TINY_REFERENCE, "candidate": static_reject(tag)}


def _batch_done(http: httpx.Client, batch_id: str) -> dict[str, Any] | None:
    try:
        view = http.get(f"/v1/batches/{batch_id}")
    except httpx.HTTPError:
        return None  # the API or Redis is being restarted
    return view.json() if view.status_code == 200 and view.json()["status"] == "completed" else None


def _worker_options(maintenance_interval_s: int) -> tuple[str, ...]:
    """The short heartbeats, with RQ's own registry cleaning in the workers every `maintenance_interval_s`.

    A job that Redis's crash catches between a worker's dequeue and its start is recovered only by
    that cleaning, once it has sat a minute in RQ's intermediate queue: with 5 s instead of 30 s
    it comes back 60-65 s after the restart instead of 60-90 s."""
    options = list(SHORT_HEARTBEATS)
    options[options.index("--maintenance-interval") + 1] = str(maintenance_interval_s)
    return tuple(options)


Stack = tuple[RedisServer, ApiServer, list[Worker]]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_binary: str) -> Iterator[Stack]:
    """Redis with AOF (every write fsynced), the API and two workers, all separate processes; one
    stack for the module (starting one costs seconds): every test leaves it running, restarted
    pieces included, and its jobs are told apart by their ids."""
    folder = tmp_path_factory.mktemp("faults")
    queue = f"faults-{uuid.uuid4().hex[:8]}"
    redis_server = RedisServer(folder / "redis", binary=redis_binary, aof=True).start()
    env = {
        "REFEREE_API_KEYS": ",".join(API_KEYS),
        "REFEREE_QUEUE_NAME": queue,
        "REFEREE_MAINTENANCE_INTERVAL_S": "0.5",
        "REFEREE_WORKER_STALE_S": "30",
    }
    pool = [Worker(redis_server.url, queue, folder / f"worker-{n}.log", options=_worker_options(5)).start() for n in range(2)]
    try:
        api = ApiServer(redis_server.url, folder / "api.log", env=env).start()  # while the workers start
        try:
            wait_until(lambda: live_workers(redis_server.url, queue) >= 2, 60, "two workers")
            yield redis_server, api, pool
        finally:
            api.stop()
    finally:
        for worker in pool:
            worker.stop()
        redis_server.kill()


def test_crash_hang_and_flood_end_in_verdicts_and_the_workers_go_on(stack: Stack) -> None:
    _, api, pool = stack
    tag = uuid.uuid4().hex
    # The hang's limit: pooled harness processes are ready in well under a second, so the kernel
    # loops for most of it; the worker must end it at the limit and go on.
    hang_limit_s = 10
    items = [
        full(CRASHING + f"# {tag}\n"),
        full(HANGING + f"# {tag}\n", timeout_s=hang_limit_s),
        full(FLOODING + f"# {tag}\n"),
        full(TINY_CANDIDATE + f"# {tag}\n"),
    ]
    with httpx.Client(base_url=api.url, headers=KEY, timeout=60) as http:
        batch = http.post("/v1/batches", json={"items": items}).json()
        done = wait_until(lambda: _batch_done(http, batch["id"]), 150, "the batch", interval=0.5)
    crashed, hung, flooded, honest = (item["result"] for item in done["items"])
    assert crashed["verdict"] == "runtime_error", crashed
    assert "killed by signal SIGSEGV" in crashed["error"]["message"]
    assert hung["verdict"] == "timeout" and hung["timings_ms"]["total"] < hang_limit_s * 1000 + 5_000, hung["error"]
    assert flooded["verdict"] == "correct", flooded
    stdout = flooded["output"]["stdout"]
    assert len(stdout) < 70 * 1024 and stdout.endswith(f"[… {100 * 1024 * 1024 - 64 * 1024} more bytes dropped]")
    assert honest["verdict"] == "correct", honest
    assert all(w.process is not None and w.process.poll() is None for w in pool), "a worker died"


def _assert_final(done: dict[str, Any], real: int, static: int, pool: list[Worker]) -> None:
    assert done["verdicts"] == {"correct": real, "invalid_submission": static}, done["verdicts"]
    ids = [item["id"] for item in done["items"]]
    dequeued, finished = executions(w.text() for w in pool)
    assert all(finished[i] == 1 for i in ids), {i: (dequeued[i], finished[i]) for i in ids if finished[i] != 1}


def test_redis_restarted_mid_batch_loses_nothing(stack: Stack) -> None:
    redis_server, api, pool = stack
    tag = uuid.uuid4().hex
    items = [full(TINY_CANDIDATE + f"# {tag}\n")] + [_static(f"{tag} {i}") for i in range(60)]
    with httpx.Client(base_url=api.url, headers=KEY, timeout=30) as http:
        batch = http.post("/v1/batches", json={"items": items}).json()
        single = http.post("/v1/evaluations", json=_static(f"{tag} single")).json()["id"]
        wait_until(
            lambda: http.get(f"/v1/batches/{batch['id']}", params={"results": False}).json()["completed"] >= 3,
            60,
            "a few results",
        )
        redis_server.restart(down_s=1.0, sig=signal.SIGKILL)  # a crash: only the AOF survives
        done = wait_until(lambda: _batch_done(http, batch["id"]), 120, "the batch after the restart", interval=0.5)
        assert http.get(f"/v1/evaluations/{single}", params={"wait": 30}).json()["verdict"] == "invalid_submission"
    _assert_final(done, 1, 60, pool)
    assert all(w.process is not None and w.process.poll() is None for w in pool), [w.text()[-2000:] for w in pool]


def test_the_api_restarted_mid_batch_loses_nothing(stack: Stack) -> None:
    _, api, pool = stack
    tag = uuid.uuid4().hex
    items = [full(TINY_CANDIDATE + f"# {tag}\n")] + [_static(f"{tag} {i}") for i in range(40)]
    with httpx.Client(base_url=api.url, headers=KEY, timeout=30) as http:
        batch = http.post("/v1/batches", json={"items": items}).json()
        single = http.post("/v1/evaluations", json=_static(f"{tag} single")).json()["id"]
        api.stop(signal.SIGKILL)  # no graceful shutdown: accepted jobs live in Redis, not in the API
        time.sleep(1.0)
        api.start()
        done = wait_until(lambda: _batch_done(http, batch["id"]), 120, "the batch after the restart", interval=0.5)
        assert [item["id"] for item in done["items"]] == [item["id"] for item in batch["items"]]
        assert http.get(f"/v1/evaluations/{single}", params={"wait": 30}).json()["verdict"] == "invalid_submission"
    _assert_final(done, 1, 40, pool)
