"""A lock shared by every process of this machine, for the suite's one-time set-up that two
processes must not do at once: apt-get (dpkg takes its own lock and fails the second), starting
dockerd, building the sandbox image. `make test` runs the suite in two pytest-xdist workers, and
other checkouts' runs may share the machine; whoever comes second waits, then finds it done."""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def machine_lock(name: str) -> Iterator[None]:
    path = Path(tempfile.gettempdir()) / f"referee-tests-{name}.lock"
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
