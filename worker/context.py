"""What a judging process sets up once, at its start, for all its jobs: its settings, the isolation
backend, the warm pool and the two reference caches. `run_evaluation` (worker/jobs.py) takes all of
it from here, one mechanism for everything.

`start(settings)` is called once: by `referee worker` before RQ forks its work horses (each horse
inherits the context with the memory it forks), and by the embedded server's start-up (its threads
share it). This module-level context is the only global state of a worker; nothing here is read
from the environment after `start` (the settings were read once, by the caller).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from triton_referee.sandbox.isolation import Isolation
from triton_referee.sandbox.selection import select_isolation
from triton_referee.worker.evaluate import detect_device
from triton_referee.worker.pool import PoolClient, WarmPool
from triton_referee.worker.reference_cache import ReferenceCache
from triton_referee.worker.reference_data import ReferenceDataCache
from triton_referee.worker.settings import JudgeSettings
from triton_referee.worker.timing_lock import TimingLock

# Backends the zygote can run inside: it and its children share one namespace and private root.
POOLED_BACKENDS = ("process", "unshare", "bwrap")


@dataclass
class WorkerContext:
    settings: JudgeSettings
    isolation: Isolation
    reference_cache: ReferenceCache | None = None  # None: REFEREE_REFERENCE_CACHE=off
    reference_data: ReferenceDataCache | None = None  # None: off, or the timing cache is off
    pool: WarmPool | None = None

    def pool_for(self, device: str) -> PoolClient | None:
        """The warm pool's client when the zygote was made for this device and backend (else None:
        the job starts fresh processes)."""
        if self.pool is None or self.pool.device != device or self.pool.isolation.name != self.isolation.name:
            return None
        return self.pool.client

    def timing_lock(self) -> TimingLock:
        return TimingLock.for_gpu(directory=self.settings.lock_dir, exclusive=self.settings.exclusive_timing)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool = None


_current: WorkerContext | None = None


def reference_cache_directory(wanted: Path) -> Path:
    """`wanted` when this user can write there; else, saying so, a private temporary directory: the
    cache only saves time, and a worker that exits over it (a root-owned volume under a non-root
    worker) restarts in a loop."""
    try:
        wanted.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=wanted).close()
        return wanted
    except OSError as exc:
        fallback = Path(tempfile.mkdtemp(prefix="referee-reference-cache-"))
        try:
            owner: int | None = wanted.stat().st_uid
        except OSError:
            owner = None
        print(
            f"warning: the reference cache {wanted} is not writable by uid {os.getuid()} ({exc.strerror or exc}"
            f"{f'; owned by uid {owner}' if owner is not None else ''}); this worker caches in {fallback} instead. "
            f"Fix: chown {os.getuid()} {wanted}",
            file=sys.stderr,
            flush=True,
        )
        return fallback


def start(
    settings: JudgeSettings, *, data_in_files: bool, pool_spares: int | None = None, device: str | None = None
) -> WorkerContext:
    """Set up this process's context from `settings` and make it current.

    `data_in_files`: keep reference data as private files beside the timings (an RQ worker: each job
    runs in a forked work horse, whose memory would not carry entries over) or in memory (the
    embedded server's threads share it). `pool_spares` defaults to the settings'. The warm pool
    starts when the settings ask for it and the backend can host it (docker keeps its own pool of
    containers); a watcher restarts its zygote if it dies (a job caught in that moment fails with
    infrastructure_error and is retried)."""
    global _current
    isolation = select_isolation(settings.isolation, lockdown=settings.lockdown, docker=settings.docker_options())
    context = WorkerContext(settings, isolation)
    if settings.reference_cache:
        directory = reference_cache_directory(settings.reference_cache_dir)
        context.reference_cache = ReferenceCache(directory)
        if settings.reference_data_cache:
            context.reference_data = ReferenceDataCache(
                directory / "data" if data_in_files else None,
                max_uses=settings.reference_data_max_uses,
                ttl_s=settings.reference_data_ttl_s,
                max_entry_bytes=settings.reference_data_max_bytes,
            )
    if settings.warm_pool and isolation.name in POOLED_BACKENDS:
        spares = settings.pool_spares if pool_spares is None else pool_spares
        pool = WarmPool(
            device or detect_device(), spares=spares, warm_target="auto", isolation=isolation, python=settings.harness_python
        )
        pool.start()
        context.pool = pool
        threading.Thread(target=_watch, args=(pool,), name="referee-pool-watch", daemon=True).start()
    _current = context
    return context


def _watch(pool: WarmPool) -> None:
    while not pool.stopped:
        threading.Event().wait(2.0)
        try:
            pool.ensure()
        except Exception:  # tried again on the next round
            pass


def stop(context: WorkerContext) -> None:
    """Stop `context`'s warm pool; forget it if it is still the current one."""
    global _current
    context.close()
    if _current is context:
        _current = None


def current() -> WorkerContext:
    """The context `start` made. A process that runs jobs without starting one (a script calling
    `run_evaluation`) gets one from the environment's settings, without a warm pool, the first time."""
    if _current is None:
        return start(JudgeSettings(warm_pool=False), data_in_files=False)
    return _current
