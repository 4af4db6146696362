"""The per-GPU timing lock: only one evaluation times kernels on a GPU at a time, while other
evaluations on the same GPU start processes, compile and check correctness meanwhile.

A file lock (flock), so it holds across the threads of an embedded server, the processes of
several RQ workers sharing a GPU, and RQ's forked work horses alike; the kernel drops it when
its holder dies."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TimingLock:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_gpu(cls, gpu: str | int | None = None, directory: Path | None = None) -> TimingLock:
        """The lock of one GPU of this host (by default the first visible one)."""
        label = str(gpu if gpu is not None else (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0])
        base = directory or Path(os.environ.get("REFEREE_LOCK_DIR") or "/tmp/referee-locks")
        return cls(base / f"gpu-{label}.lock")

    @contextmanager
    def held(self) -> Iterator[float]:
        """Hold the lock; yields how long it took to get it (seconds)."""
        started = time.monotonic()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield time.monotonic() - started
        finally:
            os.close(fd)  # closing the description releases the lock
