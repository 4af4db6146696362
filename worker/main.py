"""`referee worker --redis-url URL [--gpu N]` (service/cli.py): one RQ worker per GPU, run from its
settings (`WorkerSettings`, worker/settings.py: REFEREE_* variables, overridden by its options).

The GPU is pinned (CUDA_VISIBLE_DEVICES) before anything else of the project is imported, so no
later import can initialise CUDA on the wrong device; the harness processes inherit it. Each job
runs in a forked work horse (RQ's default), which dies with the worker: a horse left running
without its worker would go on unsupervised while RQ hands the job to another worker.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import socket
import sys
import time
from typing import Any

from triton_referee.worker.settings import WorkerSettings

PR_SET_PDEATHSIG = 1


def pin_gpu(gpu: int | None) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit at once if it already has."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the heartbeat sweep still recovers the job
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def make_worker(settings: WorkerSettings, suffix: str = "") -> Any:
    import redis
    from rq import Queue, Worker
    from rq.serializers import JSONSerializer

    import triton_referee.worker.jobs  # noqa: F401  imported once here, so every forked horse starts with it loaded

    class RefereeWorker(Worker):
        heartbeat_grace = settings.heartbeat_grace_s
        parent_pid = os.getpid()

        def get_heartbeat_ttl(self, job: Any, working_time: float = 0.0) -> int:
            # RQ adds a fixed 60 s; the grace is configurable so a dead worker's job is recovered sooner.
            return int(super().get_heartbeat_ttl(job, working_time) - 60 + self.heartbeat_grace)

        def main_work_horse(self, job: Any, queue: Any) -> None:
            _die_with_parent(self.parent_pid)
            super().main_work_horse(job, queue)

    connection = redis.Redis.from_url(settings.redis_url)
    label = f"gpu{settings.gpu}" if settings.gpu is not None else "gpu-any"
    name = (settings.worker_name or f"referee-{socket.gethostname()}-{label}-{os.getpid()}") + suffix
    return RefereeWorker(
        [Queue(settings.queue_name, connection=connection, serializer=JSONSerializer)],
        connection=connection,
        name=name,
        serializer=JSONSerializer,
        job_monitoring_interval=settings.monitoring_interval_s,
        worker_ttl=settings.worker_ttl_s,
        maintenance_interval=settings.registry_maintenance_interval_s,
    )


def _wait_for_redis(settings: WorkerSettings) -> None:
    """Block until Redis answers again (backing off to 5 s); SIGTERM/SIGINT end the process meanwhile."""
    import redis

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    delay = 0.5
    while True:
        connection = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
        try:
            if connection.ping():
                return
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            pass
        finally:
            connection.close()
        time.sleep(delay)
        delay = min(5.0, delay * 2)


def run_worker(settings: WorkerSettings) -> None:
    """Run the RQ worker; when Redis goes away (a restart, a failover), wait for it and start a fresh one.

    RQ's worker survives Redis only while it waits for a job: a connection error anywhere else
    (a heartbeat, finishing a job, its teardown) ends `work()`, and every worker of the fleet would
    exit at once. Its abandoned job, if any, is retried by the API's sweep as for a dead worker."""
    pin_gpu(settings.gpu)
    from triton_referee.worker import context

    # Set up once, before RQ forks its work horses: each inherits it (settings, backend, warm pool,
    # caches). Reference data as files: a horse's memory would not carry entries over.
    host = context.start(settings, data_in_files=True, pool_spares=max(settings.pool_spares, 2 * settings.worker_concurrency))
    parent = os.getpid()
    siblings = []
    for index in range(1, settings.worker_concurrency):
        pid = os.fork()
        if pid == 0:  # a sibling RQ worker on the same GPU and pool; it dies with this process
            _die_with_parent(parent)
            code = 0
            try:
                _work(settings, f"-{index}", host.pool is not None)
            except BaseException:
                code = 1
            os._exit(code)
        siblings.append(pid)
    try:
        _work(settings, "", host.pool is not None)
    finally:
        for pid in siblings:
            try:
                os.kill(pid, signal.SIGTERM)  # RQ's warm shutdown: the current job finishes first
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        context.stop(host)


def _work(settings: WorkerSettings, suffix: str, warm_pool: bool) -> None:
    """One RQ worker's life, restarted (under a fresh name) whenever Redis goes away and comes back."""
    import redis
    from rq.worker.base import StopRequested

    for generation in itertools.count():
        # A fresh name each time: the old registration may outlive the outage (RQ refuses a live name).
        rq_worker = make_worker(settings, suffix=suffix + (f"-r{generation}" if generation else ""))
        heavy = sorted(m for m in ("torch", "triton") if m in sys.modules)
        print(
            f"referee worker {rq_worker.name} on queue {settings.queue_name}: "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset: every GPU)')}"
            f"; warm pool {'on' if warm_pool else 'off'}"
            + (f"; warning: {', '.join(heavy)} imported in the worker" if heavy else ""),
            file=sys.stderr,
            flush=True,
        )
        try:
            rq_worker.work(burst=settings.burst, logging_level=settings.log_level, with_scheduler=False)
        except StopRequested:
            return
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            print(
                f"referee worker {rq_worker.name}: Redis went away ({type(exc).__name__}); waiting for it",
                file=sys.stderr,
                flush=True,
            )
        else:
            # A stop asked for while idle ends work() without setting _stop_requested (RQ 3).
            if settings.burst or rq_worker._stop_requested or rq_worker._shutdown_requested_date is not None:
                return
            print(
                f"referee worker {rq_worker.name}: the RQ worker stopped on an error; waiting for Redis",
                file=sys.stderr,
                flush=True,
            )
        _wait_for_redis(settings)
