"""The whole service as separate processes, for the load and fault runs: a redis-server (optionally
with AOF and a password), the API under uvicorn (`referee serve`) and `referee worker`s. Each can
be killed and started again on the same port. Nothing is mocked; used by bench/ and tests/service.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
# RQ logs one line per dequeued job ("Worker NAME: QUEUE: evaluation ID (ID)") and one per success.
_DEQUEUED = re.compile(r"Worker \S+: \S+: evaluation ([0-9a-f]{32}) \(\1\)")
_JOB_OK = re.compile(r"Job OK\S* \(([0-9a-f]{32})\)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@dataclass
class RedisServer:
    """redis-server on a fixed loopback port; `aof` makes every write durable (appendfsync always)."""

    folder: Path
    binary: str = field(default_factory=lambda: shutil.which("redis-server") or "redis-server")
    aof: bool = False
    password: str | None = None
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.aof else ["--appendonly", "no"]
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
                   "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")]
        if self.password:
            command += ["--requirepass", self.password]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis.from_url(self.url)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except (redis.ConnectionError, redis.BusyLoadingError):
                return False

        try:
            wait_for(answers, 30, "redis-server to answer")
        finally:
            client.close()
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        _stop(self.process, sig)

    def restart(self, down_s: float = 0.0, sig: int = signal.SIGKILL) -> None:
        self.kill(sig)
        time.sleep(down_s)
        self.start()


@dataclass
class ApiServer:
    """`referee serve --redis-url URL` (uvicorn) in its own process; settings through REFEREE_* variables."""

    redis_url: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: int = 1
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiServer:
        env = {**os.environ, **self.env, "REFEREE_REDIS_URL": self.redis_url}
        command = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--log-level", "warning",
                   "--processes", str(self.processes)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the API exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            try:
                return httpx.get(self.url + "/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "the API to answer")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.process, sig)


@dataclass
class Worker:
    """`referee worker` with short heartbeats, so a dead one's job is noticed in seconds."""

    redis_url: str
    queue: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        command = [sys.executable, "-m", "service.cli", "worker", "--redis-url", self.redis_url, "--queue", self.queue,
                   "--monitoring-interval", "1", "--heartbeat-grace", "3", "--maintenance-interval", "30", "--worker-ttl", "20"]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.process, sig)

    def text(self) -> str:
        return _ANSI.sub("", self.log.read_text(errors="replace")) if self.log.exists() else ""


def live_workers(redis_url: str, queue: str) -> int:
    from rq import Queue
    from rq import Worker as RQWorker

    connection = redis.Redis.from_url(redis_url)
    try:
        return len(RQWorker.all(queue=Queue(queue, connection=connection)))
    finally:
        connection.close()


def executions(logs: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
    """Per evaluation id: how often a worker dequeued it (each attempt), and how often it finished OK."""
    dequeued: Counter[str] = Counter()
    finished: Counter[str] = Counter()
    for text in logs:
        text = _ANSI.sub("", text)
        dequeued.update(_DEQUEUED.findall(text))
        finished.update(_JOB_OK.findall(text))
    return dequeued, finished


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]
