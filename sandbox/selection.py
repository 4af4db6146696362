"""Which isolation backend runs here: `auto` takes the strongest that works on this machine (docker,
then bubblewrap, then unshare), probing each by starting a process rather than trusting that its
binary exists."""

from __future__ import annotations

import functools
import logging
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

from .docker_backend import DockerIsolation, docker_unavailable
from .isolation import BACKENDS, BwrapIsolation, Isolation, Limits, Lockdown, ProcessIsolation, UnshareIsolation, is_root

log = logging.getLogger(__name__)


def _probe(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@functools.lru_cache(maxsize=1)
def bwrap_works() -> bool:
    if shutil.which("bwrap") is None:
        return False
    flags = ["--unshare-net", "--unshare-pid"] if is_root() else ["--unshare-all"]
    return _probe(["bwrap", *flags, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"])


@functools.lru_cache(maxsize=1)
def unshare_works() -> bool:
    """User namespaces can be disabled (sysctl, seccomp in a container): try, do not trust the binary."""
    if shutil.which("unshare") is None:
        return False
    user = [] if is_root() else ["--user", "--map-root-user"]
    return _probe(["unshare", *user, "--net", "--pid", "--mount", "--fork", "true"])


def select_isolation(
    name: str = "auto", limits: Limits | None = None, *, lockdown: str = Lockdown.on, docker: Mapping[str, Any] | None = None
) -> Isolation:
    """The backend called `name`; `auto` takes the strongest that works here. `lockdown` is what its
    harness processes put on themselves; `docker` the DockerIsolation fields a worker sets (image,
    python, harness_lib, state_dir). Raises ValueError for an unknown name and RuntimeError for one
    that cannot run on this machine."""
    limits = limits or Limits()
    docker = dict(docker or {})
    if name not in BACKENDS:
        raise ValueError(f"unknown isolation {name!r}; choose one of {', '.join(BACKENDS)}")
    if name in ("auto", "docker"):
        reason = docker_unavailable(docker.get("image"))
        if reason is None:
            return DockerIsolation(limits=limits, lockdown=lockdown, **docker)
        if name == "docker":
            raise RuntimeError(f"docker isolation is not available: {reason}")
    if name in ("auto", "bwrap"):
        if bwrap_works():
            return BwrapIsolation(limits=limits, lockdown=lockdown)
        if name == "bwrap":
            raise RuntimeError("bubblewrap is not installed or cannot create namespaces here")
    if name in ("auto", "unshare"):
        if unshare_works():
            return UnshareIsolation(limits=limits, lockdown=lockdown)
        if name == "unshare":
            raise RuntimeError("unshare cannot create namespaces here (user namespaces disabled?)")
    if name == "auto":
        log.warning(
            "no isolation backend works on this machine (docker, bwrap, unshare): candidates run as plain "
            "processes, which is for development only"
        )
    return ProcessIsolation(limits=limits, lockdown=lockdown)
