"""Several CPU-interpreter workers on one queue: the work spreads over all of them and no job runs
twice (the CPU half of the multi-GPU issue; one worker per GPU works the same way)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import redis
from rq import Queue, Worker
from service_support import API_KEYS, TINY_CANDIDATE, WorkerProcess, full, redis_settings, wait_for_workers, wait_until

from triton_referee.service.server import background_server

JOBS = 9
WORKERS = 3


def test_jobs_spread_over_every_worker_and_none_runs_twice(redis_url: str, start_worker: Callable[..., WorkerProcess]) -> None:
    queue = f"referee-spread-{uuid.uuid4().hex[:8]}"
    wait_for_workers(redis_url, queue, [start_worker(queue, wait=False) for _ in range(WORKERS)])
    tag = uuid.uuid4().hex
    items = [full(TINY_CANDIDATE + f"\n# {tag} {i}\n") for i in range(JOBS)]  # equal work, distinct jobs
    with (
        background_server(redis_settings(redis_url, queue)) as url,
        httpx.Client(base_url=url, headers={"X-API-Key": API_KEYS[0]}, timeout=300) as http,
    ):
        batch = http.post("/v1/batches", json={"items": items, "name": "spread"}).json()
        summary = wait_until(
            lambda: (s := http.get(f"/v1/batches/{batch['id']}").json())["status"] == "completed" and s,
            300,
            "the batch",
            interval=0.5,
        )
    assert summary["status"] == "completed" and summary["verdicts"] == {"correct": JOBS}
    connection = redis.Redis.from_url(redis_url)
    workers = Worker.all(queue=Queue(queue, connection=connection))
    done = sorted(worker.successful_job_count for worker in workers)
    assert len(done) == WORKERS
    assert sum(done) == JOBS, done  # every job ran exactly once (no failures, no repeats)
    assert done[0] >= 1 and done[-1] - done[0] <= JOBS // WORKERS + 1, done  # spread, not piled on one worker
