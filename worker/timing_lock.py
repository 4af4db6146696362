"""The per-GPU timing lock: one evaluation at a time times kernels on a GPU, and while it does, no
other evaluation runs GPU work there; other evaluations start processes and compile meanwhile.

Kernels of two processes do not share a GPU at once: the GPU switches between their contexts, so
another evaluation's correctness run while one is timing stretches the timed loop (on an H100 under
load: 1000 calls in 1.35 s instead of 690 in 0.45 s) and adds noise. So the GPU steps of an
evaluation that is not timing (inputs, correctness runs after the first, comparisons, profiling)
hold the lock shared, and timing holds it alone. A turnstile gives timing precedence: once a timer
waits, no new shared step starts. The first correctness run, which is mostly compiling, and the
processes' set-up hold nothing.

File locks (flock), so they hold across the threads of an embedded server, the processes of several
RQ workers sharing a GPU, and RQ's forked work horses alike; the kernel drops them when the holder
dies. `exclusive=False` (REFEREE_EXCLUSIVE_TIMING=off, through the worker's settings) keeps only the
timers apart (GPU steps hold nothing).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from triton_referee.worker.defaults import LOCK_DIR


class TimingLock:
    def __init__(self, path: Path | str, exclusive: bool = True) -> None:
        self.path = Path(path)
        self.turnstile = self.path.with_suffix(".turnstile")
        self.exclusive = exclusive
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_gpu(cls, gpu: str | int | None = None, directory: Path | None = None, exclusive: bool = True) -> TimingLock:
        """The lock of one GPU of this host (by default the first visible one), under `directory`
        (the settings' lock_dir, REFEREE_LOCK_DIR)."""
        label = str(gpu if gpu is not None else (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0])
        return cls((directory or LOCK_DIR) / f"gpu-{label}.lock", exclusive)

    def _open(self, path: Path) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @contextmanager
    def held(self) -> Iterator[float]:
        """Hold the GPU for timing; yields how long it took to get it (seconds)."""
        started = time.monotonic()
        turnstile, lock = self._open(self.turnstile), self._open(self.path)
        try:
            fcntl.flock(turnstile, fcntl.LOCK_EX)  # from now on, no new shared step starts
            fcntl.flock(lock, fcntl.LOCK_EX)  # and the running ones end
            yield time.monotonic() - started
        finally:
            os.close(lock)  # closing a description releases its lock
            os.close(turnstile)

    @contextmanager
    def shared(self) -> Iterator[float]:
        """A GPU step that is not timing: many at once, none while a timer holds or waits for the
        GPU. Yields how long it waited (seconds)."""
        if not self.exclusive:
            yield 0.0
            return
        started = time.monotonic()
        turnstile, lock = self._open(self.turnstile), self._open(self.path)
        try:
            fcntl.flock(turnstile, fcntl.LOCK_SH)  # waits behind a timer that is waiting
            fcntl.flock(lock, fcntl.LOCK_SH)
            os.close(turnstile)
            turnstile = -1
            yield time.monotonic() - started
        finally:
            os.close(lock)
            if turnstile >= 0:
                os.close(turnstile)
