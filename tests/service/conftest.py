"""Fixtures for the service tests: a real Redis server, real `referee worker` processes, and the
API served by uvicorn on a loopback port. Nothing is mocked.

Every full evaluation starts two Python processes that import torch (several seconds on this
2-core machine), so the suite runs few of them: most tests use candidates that the engine rejects
statically (milliseconds), which still travel the whole path (API, Redis, RQ, worker, result).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest
from service_support import ROOT, WorkerProcess, live_workers, redis_settings, wait_for_workers, wait_until

from tests.machine import running_redis
from triton_referee.service.server import background_server


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port, without persistence, for the module."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="module")
def start_worker(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `referee worker` processes (real RQ workers) with short heartbeats; all stopped at the end.
    With `wait=False` it returns at once: start several, then `wait_for_workers` (each imports torch
    for its warm pool; on two cores they are ready sooner side by side than one after another)."""
    started: list[WorkerProcess] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def start(queue: str, url: str | None = None, wait: bool = True) -> WorkerProcess:
        url = url or redis_url
        log = logs / f"{queue}-{len(started)}.log"
        command = [
            sys.executable,
            "-m",
            "triton_referee.service.cli",
            "worker",
            "--redis-url",
            url,
            "--queue",
            queue,
            "--monitoring-interval",
            "1",
            "--heartbeat-grace",
            "3",
            "--maintenance-interval",
            "30",
            "--worker-ttl",
            "20",
        ]
        before = set(live_workers(url, queue))
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(process, log)
        started.append(worker)
        if wait:
            wait_until(
                lambda: len(set(live_workers(url, queue)) - before) >= 1 or process.poll() is not None, 60, f"a worker on {queue}"
            )
            assert process.poll() is None, f"the worker exited:\n{worker.tail()}"
        return worker

    yield start
    for worker in started:  # all asked at once, then awaited: each takes a moment to shut down
        worker.request_stop()
    for worker in started:
        worker.stop()


@pytest.fixture(scope="module")
def queue_name() -> str:
    return f"referee-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def workers(redis_url: str, start_worker: Callable[..., WorkerProcess], queue_name: str) -> list[WorkerProcess]:
    """Two workers on the shared test queue (two cores here)."""
    pool = [start_worker(queue_name, wait=False) for _ in range(2)]
    wait_for_workers(redis_url, queue_name, pool)
    return pool


@pytest.fixture(scope="module")
def api_url(redis_url: str, queue_name: str, workers: list[WorkerProcess]) -> Iterator[str]:
    """The API with Redis and the two workers, served by uvicorn on a loopback port."""
    with background_server(redis_settings(redis_url, queue_name)) as url:
        yield url
