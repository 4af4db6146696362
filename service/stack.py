"""The whole service as separate processes on this host: a redis-server (optionally with AOF and a
password), the API under uvicorn (`referee serve`) and `referee worker`s, each of which can be killed
and started again on the same port; `ServiceStack` starts one worker per GPU. Nothing is mocked.
The benchmarks (bench/) and the fault and load tests (tests/) run the service through it: it lives
in the product so that neither imports the other."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
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
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            *persistence,
            "--dir",
            str(self.folder),
            "--logfile",
            str(self.folder / "redis.log"),
        ]
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
        command = [
            sys.executable,
            "-m",
            "triton_referee.service.cli",
            "serve",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--processes",
            str(self.processes),
        ]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

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


# Short heartbeats, so a dead worker's job is noticed in seconds (the fault and load runs).
SHORT_HEARTBEATS = ("--monitoring-interval", "1", "--heartbeat-grace", "3", "--maintenance-interval", "30", "--worker-ttl", "20")


@dataclass
class Worker:
    """`referee worker` (by default with short heartbeats); `gpu` and `concurrency` as on the command line."""

    redis_url: str
    queue: str
    log: Path
    gpu: int | None = None
    concurrency: int = 1
    env: dict[str, str] = field(default_factory=dict)
    options: tuple[str, ...] = SHORT_HEARTBEATS
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        command = [
            sys.executable,
            "-m",
            "triton_referee.service.cli",
            "worker",
            "--redis-url",
            self.redis_url,
            "--queue",
            self.queue,
            "--concurrency",
            str(self.concurrency),
            *self.options,
        ]
        if self.gpu is not None:
            command += ["--gpu", str(self.gpu)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env={**os.environ, **self.env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
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


_GPU_IN_NAME = re.compile(r"-gpu(\d+|-any)-")


@dataclass
class ServiceStack:
    """The service for one host with GPUs: `referee serve` (auth off) and one `referee worker --gpu i
    --concurrency K` per GPU in `gpus`, on a Redis URL the caller provides (and owns), with their
    own queue. Worker logs are `folder/worker-gpuI.log`; `env` goes to the API and the workers."""

    redis_url: str
    gpus: list[int]
    concurrency: int
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    worker_options: tuple[str, ...] = ()  # production heartbeats unless given
    queue: str = field(default_factory=lambda: "referee-" + uuid.uuid4().hex[:8])
    api: ApiServer | None = None
    workers: dict[int, Worker] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.api is not None
        return self.api.url

    def start(self, timeout: float = 300) -> ServiceStack:
        """Start the workers and the API; return once every RQ worker (GPUs x concurrency) is registered
        and /readyz answers 200. Raises, with the log's tail, when a worker exits meanwhile."""
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {**self.env, "REFEREE_QUEUE_NAME": self.queue, "REFEREE_AUTH": "off"}
        for gpu in self.gpus:
            self.workers[gpu] = Worker(
                self.redis_url,
                self.queue,
                self.folder / f"worker-gpu{gpu}.log",
                gpu=gpu,
                concurrency=self.concurrency,
                env=env,
                options=self.worker_options,
            ).start()
        self.api = ApiServer(self.redis_url, self.folder / "api.log", env=env).start()
        expected = len(self.gpus) * self.concurrency

        def ready() -> bool:
            for gpu, worker in self.workers.items():
                if worker.process is not None and worker.process.poll() is not None:
                    raise RuntimeError(f"the worker for GPU {gpu} exited ({worker.process.returncode}):\n{worker.text()[-3000:]}")
            try:
                response = httpx.get(self.url + "/readyz", timeout=5)
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and len(response.json().get("workers") or []) >= expected

        try:
            wait_for(ready, timeout, f"{expected} RQ workers on GPUs {self.gpus} and /readyz", interval=0.5)
        except TimeoutError as exc:
            tails = "".join(f"\n--- worker for GPU {gpu}:\n{worker.text()[-1500:]}" for gpu, worker in self.workers.items())
            raise TimeoutError(f"{exc}{tails}") from None
        return self

    def stop(self) -> None:
        for worker in self.workers.values():  # RQ's warm shutdown: each finishes its job first
            if worker.process is not None and worker.process.poll() is None:
                try:
                    os.killpg(worker.process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for worker in self.workers.values():
            worker.stop()
        if self.api is not None:
            self.api.stop()

    def job_counts(self) -> dict[str, dict[str, int]]:
        """Jobs each GPU's RQ workers ran so far (RQ's own counters), by GPU label ("0", "1", ...)."""
        from rq import Queue
        from rq import Worker as RQWorker

        connection = redis.Redis.from_url(self.redis_url)
        counts: dict[str, dict[str, int]] = {str(gpu): {"succeeded": 0, "failed": 0, "rq_workers": 0} for gpu in self.gpus}
        try:
            for worker in RQWorker.all(queue=Queue(self.queue, connection=connection)):
                found = _GPU_IN_NAME.findall(worker.name)  # the last: a host name may hold "-gpuN-" too
                entry = counts.setdefault(found[-1] if found else "?", {"succeeded": 0, "failed": 0, "rq_workers": 0})
                entry["succeeded"] += worker.successful_job_count
                entry["failed"] += worker.failed_job_count
                entry["rq_workers"] += 1
        finally:
            connection.close()
        return counts

    def worker_logs(self) -> dict[int, str]:
        return {gpu: worker.text() for gpu, worker in self.workers.items()}


def executions(logs: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
    """Per evaluation id: how often a worker dequeued it (each attempt), and how often it finished OK."""
    dequeued: Counter[str] = Counter()
    finished: Counter[str] = Counter()
    for text in logs:
        text = _ANSI.sub("", text)
        dequeued.update(_DEQUEUED.findall(text))
        finished.update(_JOB_OK.findall(text))
    return dequeued, finished
