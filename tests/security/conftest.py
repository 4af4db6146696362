"""Backends for the security suite, set up for real: bubblewrap and docker are installed when missing
and `dockerd` is started when no daemon answers (tests/machine.py), and the sandbox image is built
offline from this machine's runtime (tests/security/images.py). Nothing is mocked; a backend
that cannot be set up fails the suite with the reason instead of being skipped."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.machine import ensure_docker, ensure_tools, log
from tests.machine_lock import machine_lock
from triton_referee.sandbox.isolation import BwrapIsolation, Isolation, Limits, ProcessIsolation, UnshareIsolation
from triton_referee.worker.evaluate import jobs_root

from .images import build_image

ROOT = Path(__file__).resolve().parents[2]
# Everything but `process` must contain the attacks; `process` runs them too, as the control that
# shows each probe really works when nothing stops it.
CONFINING = ("docker", "docker-strict", "bwrap", "unshare")


@pytest.fixture(scope="session")
def docker_image() -> str:
    ensure_docker()
    with machine_lock("docker"):  # one build for the machine, however many pytest workers ask at once
        started = time.monotonic()
        tag, seconds = build_image(sys.executable)
    log(f"image {tag}: built in {seconds:.1f} s (0 = cached), fixture {time.monotonic() - started:.1f} s")
    return tag


@pytest.fixture(autouse=True)
def one_docker_test_at_a_time(request: pytest.FixtureRequest) -> Iterator[None]:
    """The two test workers' docker tests take turns: on a two-core machine, two of them creating
    containers at once (on the vfs storage driver, each a copy of the whole image) pushed a create
    past the docker SDK's 30 s timeout."""
    if "docker" not in request.node.nodeid:
        yield
        return
    with machine_lock("docker-tests"):
        yield


@pytest.fixture(scope="session")
def bwrap_installed() -> None:
    ensure_tools("bwrap")


@pytest.fixture(scope="session")
def make_isolation(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Isolation]]:
    """make_isolation(name, **limits): a backend with these limits; docker pools are removed at the end."""
    pools: list[Any] = []

    def make(name: str, **limits: Any) -> Isolation:
        chosen = Limits(**{"memory_bytes": 3 << 30, **limits})
        if name.startswith("docker"):
            from triton_referee.sandbox.docker_backend import DockerIsolation

            image = request.getfixturevalue("docker_image")
            isolation = DockerIsolation(
                limits=chosen, image=image, strict=name == "docker-strict", state_dir=tmp_path_factory.mktemp("docker-state")
            )
            pools.append(isolation)
            return isolation
        if name == "bwrap":
            request.getfixturevalue("bwrap_installed")
            return BwrapIsolation(limits=chosen)
        if name == "unshare":
            return UnshareIsolation(limits=chosen)
        return ProcessIsolation(limits=chosen)

    yield make
    for pool in pools:
        pool.shutdown()


@pytest.fixture
def job_dir() -> Iterator[Path]:
    """A job's work directory where the engine makes them (under the system temp dir)."""
    root = Path(tempfile.mkdtemp(prefix="referee-", dir=jobs_root()))
    (root / "candidate").mkdir()
    yield root / "candidate"
    shutil.rmtree(root, ignore_errors=True)
