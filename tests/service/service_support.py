"""Sources and helpers shared by the service tests (conftest.py holds the fixtures)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from tests.tiny_problem import CANDIDATE as TINY_CANDIDATE
from tests.tiny_problem import REFERENCE as TINY_REFERENCE
from triton_referee.service.settings import Settings
from triton_referee.service.stack import free_port, wait_for  # noqa: F401  free_port: the same helper as the benches

ROOT = Path(__file__).resolve().parents[2]

# Options that keep a full evaluation as short as it gets on the CPU.
FAST = {"trials": 1, "timing_sets": 1, "max_timing_seconds": 0.05}


def static_reject(tag: str) -> str:
    """A distinct candidate the engine answers without starting a process (no @triton.jit kernel)."""
    return f"# {tag}\nimport torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x * 2\n"


def full(candidate: str = TINY_CANDIDATE, **options: Any) -> dict[str, Any]:
    return {"reference": TINY_REFERENCE, "candidate": candidate, **FAST, **options}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """stack.wait_for, failing the test as an assertion."""
    try:
        return wait_for(predicate, timeout, what, interval)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log: Path
    stop_requested: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def request_stop(self) -> None:
        """SIGTERM (RQ's warm shutdown) without waiting; `stop()` then waits. Sent once: a second
        SIGTERM would make RQ stop cold."""
        if self.process.poll() is None and not self.stop_requested:
            self.process.send_signal(signal.SIGTERM)
            self.stop_requested = True

    def stop(self) -> None:
        if self.process.poll() is None:
            self.request_stop()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def live_workers(url: str, queue: str) -> list[str]:
    from rq import Queue, Worker

    connection = redis.Redis.from_url(url)
    try:
        return [w.name for w in Worker.all(queue=Queue(queue, connection=connection))]
    finally:
        connection.close()


def wait_for_workers(url: str, queue: str, workers: list[WorkerProcess], timeout: float = 60) -> None:
    """Until `workers` (started on a queue of their own) are all registered; fails if one exits."""
    wait_until(
        lambda: len(live_workers(url, queue)) >= len(workers) or any(w.process.poll() is not None for w in workers),
        timeout,
        f"{len(workers)} workers on {queue}",
    )
    for worker in workers:
        assert worker.process.poll() is None, f"a worker exited:\n{worker.tail()}"


API_KEYS = ["key-alice", "key-bob", "key-limits"]


def redis_settings(redis_url: str, queue: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "queue_name": queue,
        "api_keys": API_KEYS,
        "maintenance_interval_s": 0.5,
        "result_ttl_s": 3600,
        "worker_stale_s": 30,
    }
    return Settings(**{**values, **overrides})


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
