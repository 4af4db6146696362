"""Backends for the security suite, set up for real: bubblewrap and docker are installed when missing
(Debian's packages, as root), `dockerd` is started when no daemon answers, and the sandbox image is
built offline from this machine's runtime (tests/security/images.py). Nothing is mocked; a backend
that cannot be set up fails the suite with the reason instead of being skipped."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.isolation import BwrapIsolation, Isolation, Limits, ProcessIsolation, UnshareIsolation
from tests.machine_lock import machine_lock
from worker.evaluate import jobs_root

from .images import build_image

ROOT = Path(__file__).resolve().parents[2]
# Everything but `process` must contain the attacks; `process` runs them too, as the control that
# shows each probe really works when nothing stops it.
CONFINING = ("docker", "docker-strict", "bwrap", "unshare")
SETUP_LOG = Path(tempfile.gettempdir()) / "referee-security-setup.log"


def _log(message: str) -> None:
    with SETUP_LOG.open("a") as handle:
        handle.write(f"{time.strftime('%H:%M:%S')} {message}\n")


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        pytest.fail(f"{' '.join(packages)} missing and not root: install them (apt-get install -y {' '.join(packages)})")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, capture_output=True, env=env, timeout=900)


def _docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def _start_dockerd() -> None:
    """Start a daemon in the background, without bridge or iptables (the sandbox containers have no
    network anyway, and nested environments often lack iptables); where overlay2 does not work
    either, on the vfs storage driver, which copies the whole image for every container."""
    attempts = [["--iptables=false", "--bridge=none"], ["--storage-driver=vfs", "--iptables=false", "--bridge=none"]]
    for extra in attempts:
        log = Path(tempfile.gettempdir()) / "referee-dockerd.log"
        with log.open("ab") as handle:
            daemon = subprocess.Popen(["dockerd", *extra], stdout=handle, stderr=handle, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.poll() is None:
            if _docker_answers():
                _log(f"dockerd started with {extra}")
                return
            time.sleep(0.5)
        _log(f"dockerd {extra} did not answer; see {log}")
    pytest.fail(f"dockerd does not start here; its log is {Path(tempfile.gettempdir()) / 'referee-dockerd.log'}")


def _install_missing(commands: tuple[str, ...], package: str) -> None:
    if all(shutil.which(c) for c in commands):
        return
    with machine_lock("apt"):  # dpkg refuses a second apt-get; whoever comes second finds it installed
        if not all(shutil.which(c) for c in commands):
            _apt_install(package)


@pytest.fixture(scope="session")
def docker_image() -> str:
    _install_missing(("dockerd", "docker"), "docker.io")
    # One daemon and one build for the machine, however many pytest workers ask at once.
    with machine_lock("docker"):
        if not _docker_answers():
            _start_dockerd()
        started = time.monotonic()
        tag, seconds = build_image(sys.executable)
    _log(f"image {tag}: built in {seconds:.1f} s (0 = cached), fixture {time.monotonic() - started:.1f} s")
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
    _install_missing(("bwrap",), "bubblewrap")


@pytest.fixture(scope="session")
def make_isolation(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Isolation]]:
    """make_isolation(name, **limits): a backend with these limits; docker pools are removed at the end."""
    pools: list[Any] = []

    def make(name: str, **limits: Any) -> Isolation:
        chosen = Limits(**{"memory_bytes": 3 << 30, **limits})
        if name.startswith("docker"):
            from sandbox.docker_backend import DockerIsolation

            image = request.getfixturevalue("docker_image")
            isolation = DockerIsolation(limits=chosen, image=image, strict=name == "docker-strict",
                                        state_dir=tmp_path_factory.mktemp("docker-state"))
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
