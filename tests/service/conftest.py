"""Fixtures for the service tests: a real Redis server, real `referee worker` processes, and the
API served by uvicorn on a loopback port. Nothing is mocked.

Every full evaluation starts two Python processes that import torch (several seconds on this
2-core machine), so the suite runs few of them: most tests use candidates that the engine rejects
statically (milliseconds), which still travel the whole path (API, Redis, RQ, worker, result).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from service_support import ROOT, WorkerProcess, free_port, live_workers, redis_settings, wait_for_workers, wait_until

from service.server import background_server
from tests.machine_lock import machine_lock


def _redis_server_binary() -> str:
    """redis-server, installed from Debian's packages when missing (the machines here run as root)."""
    found = shutil.which("redis-server")
    if found:
        return found
    with machine_lock("apt"):  # another pytest worker may be installing it (or something else) right now
        found = shutil.which("redis-server")
        if found:
            return found
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"]):
            completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
            if completed.returncode != 0:
                pytest.fail(f"redis-server is missing and `{' '.join(command)}` failed:\n{completed.stderr[-2000:]}")
    return shutil.which("redis-server") or pytest.fail("redis-server is still missing after apt-get install")


@pytest.fixture(scope="session")
def redis_binary() -> str:
    return _redis_server_binary()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server on a free loopback port, without persistence, for the session."""
    binary = _redis_server_binary()
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        wait_until(answers, 20, "redis-server to answer")
        yield url
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
        command = [sys.executable, "-m", "service.cli", "worker", "--redis-url", url, "--queue", queue,
                   "--monitoring-interval", "1", "--heartbeat-grace", "3", "--maintenance-interval", "30", "--worker-ttl", "20"]
        before = set(live_workers(url, queue))
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(process, log)
        started.append(worker)
        if wait:
            wait_until(lambda: len(set(live_workers(url, queue)) - before) >= 1 or process.poll() is not None, 60,
                       f"a worker on {queue}")
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
