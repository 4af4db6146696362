"""What the suite needs from this machine, set up in one place: Debian packages installed when a
tool is missing (as root; any other user is told what to install), dockerd started when no daemon
answers, and private redis-server processes. Each step that two pytest workers, or two checkouts'
runs, must not do at once holds a machine lock (tests/machine_lock.py); whoever comes second waits,
then finds it done. Nothing else in tests/ runs apt-get or starts a daemon.

`python -m tests.machine` is `make preflight`: as a user other than root, it lists what is missing
(the suite can install and start things only as root) and exits 2."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.machine_lock import machine_lock
from triton_referee.service.stack import RedisServer

# Each tool the suite runs, and the Debian package that provides it.
PACKAGES = {
    "redis-server": "redis-server",
    "bwrap": "bubblewrap",
    "docker": "docker.io",
    "dockerd": "docker.io",
    "docker-compose": "docker-compose",
    "chromium": "chromium",
}
SETUP_LOG = Path(tempfile.gettempdir()) / "referee-machine-setup.log"
DOCKERD_LOG = Path(tempfile.gettempdir()) / "referee-dockerd.log"


def log(message: str) -> None:
    """A line in the set-up log: what was installed or started, and how long it took."""
    with SETUP_LOG.open("a") as handle:
        handle.write(f"{time.strftime('%H:%M:%S')} {message}\n")


def _missing(tools: tuple[str, ...]) -> list[str]:
    return [tool for tool in tools if shutil.which(tool) is None]


def ensure_tools(*tools: str) -> None:
    """Install the Debian packages of whichever `tools` are not on PATH (apt-get, as root)."""
    if not _missing(tools):
        return
    with machine_lock("apt"):  # dpkg refuses a second apt-get; whoever comes second finds it installed
        missing = _missing(tools)
        if not missing:
            return
        packages = sorted({PACKAGES[tool] for tool in missing})
        if os.geteuid() != 0:
            pytest.fail(f"{' '.join(missing)} missing and not root: install them (apt-get install -y {' '.join(packages)})")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        started = time.monotonic()
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
            completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            if completed.returncode != 0:
                pytest.fail(f"{' '.join(missing)} missing and `{' '.join(command)}` failed:\n{completed.stderr[-2000:]}")
        log(f"apt-get install {' '.join(packages)}: {time.monotonic() - started:.0f} s")
    still = _missing(tools)
    if still:
        pytest.fail(f"{' '.join(still)} still missing after apt-get install {' '.join(packages)}")


def redis_server() -> str:
    """The redis-server binary, installed when missing."""
    ensure_tools("redis-server")
    return shutil.which("redis-server") or "redis-server"


@contextmanager
def running_redis(folder: Path, **options: Any) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, without persistence unless `aof=True`;
    stopped (SIGTERM, then SIGKILL) at the end. `options` are RedisServer's (aof, password)."""
    server = RedisServer(folder, binary=redis_server(), **options).start()
    try:
        yield server
    finally:
        server.kill(signal.SIGTERM)


def chromium() -> str:
    """A headless-capable Chromium, installed when missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    ensure_tools("chromium")
    return shutil.which("chromium") or "chromium"


def docker_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


def _start_dockerd() -> None:
    """Start a daemon in the background, without bridge or iptables (the sandbox containers have no
    network anyway, and nested environments often lack iptables); where overlay2 does not work
    either, on the vfs storage driver, which copies the whole image for every container."""
    attempts = [["--iptables=false", "--bridge=none"], ["--storage-driver=vfs", "--iptables=false", "--bridge=none"]]
    for extra in attempts:
        with DOCKERD_LOG.open("ab") as handle:
            daemon = subprocess.Popen(["dockerd", *extra], stdout=handle, stderr=handle, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and daemon.poll() is None:
            if docker_answers():
                log(f"dockerd started with {extra}")
                return
            time.sleep(0.5)
        log(f"dockerd {extra} did not answer; see {DOCKERD_LOG}")
    pytest.fail(f"dockerd does not start here; its log is {DOCKERD_LOG}")


def ensure_docker() -> None:
    """docker installed and a daemon answering: one daemon for the machine, however many pytest
    workers ask at once."""
    ensure_tools("dockerd", "docker")
    with machine_lock("docker"):
        if not docker_answers():
            _start_dockerd()


def compose_command() -> list[str]:
    """`docker compose` (the v2 plugin) where it exists, else Debian's docker-compose."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    ensure_tools("docker-compose")
    return ["docker-compose"]


def missing_for_this_user() -> list[str]:
    """What a user other than root lacks to run the suite: tools, and a docker daemon it can reach.
    Root lacks nothing: the suite installs and starts what it needs."""
    if os.geteuid() == 0:
        return []
    missing = _missing(tuple(PACKAGES))
    if shutil.which("docker") and not docker_answers():
        missing.append("(a running docker daemon this user can reach: docker group)")
    return missing


def main() -> int:
    missing = missing_for_this_user()
    if not missing:
        return 0
    user = getpass.getuser()
    packages = " ".join(sorted(set(PACKAGES.values())))
    print(f"make test as {user}: the suite installs its tools and starts dockerd only as root. Missing: {' '.join(missing)}")
    print(f"As root: apt-get install -y {packages}; start dockerd and add {user} to the docker group. Or run make test as root.")
    return 2


if __name__ == "__main__":
    sys.exit(main())
