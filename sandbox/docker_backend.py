"""The docker backend: harness processes run in containers, pooled per GPU and role.

A container per (GPU, role, slot): `--network none`, read-only root, a size-limited tmpfs for /tmp
(the work directories live there, at the same paths as on the host), a non-root user, every
capability dropped, no-new-privileges, pids and memory limits, rlimits for CPU time and file size,
and the GPU (`--gpus device=N`) when the job runs on CUDA. Its main process is the launcher
(`sandbox/harness/launcher.py`); the host's side is `sandbox/docker_connect.py`, which
`HarnessProcess` starts in place of the harness: the channel pipes travel to the container over a
Unix socket in a bind-mounted control directory, so the pipe protocol is unchanged.

A container serves one job at a time (a lock file per slot, held from `command` to `release`, also
across RQ's work-horse processes) and is replaced after `jobs_per_container` jobs or after any
fault the launcher reports (non-zero exit, abandoned job, processes left behind). `strict=True`
gives every harness process a fresh container.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .isolation import HARNESS_DIR, NOBODY, Limits

CONNECT_SCRIPT = Path(__file__).resolve().parent / "docker_connect.py"
CONTAINER_LIB = "/opt/referee/lib"  # where the host's harness package is mounted in the container
CONTROL = "/control"
DEFAULT_IMAGE = "triton-referee-worker:latest"
_FD_FLAGS = ("--read-fd", "--write-fd", "--key-fd", "--data-fd", "--evidence-fd")  # the last is optional (the native recorder's)


def _client(timeout: int = 30) -> Any:
    import docker  # optional dependency: only this backend needs it

    return docker.from_env(timeout=timeout)


def docker_unavailable(image: str | None = None) -> str | None:
    """Why the docker backend cannot run here (None when it can): SDK, daemon, image."""
    image = image or DEFAULT_IMAGE
    try:
        import docker  # noqa: F401
    except ImportError:
        return "the docker SDK is not installed (pip install 'triton-referee[docker]')"
    try:
        client = _client(timeout=3)
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "no daemon"
        return f"no docker daemon answers ({type(exc).__name__})"
    try:
        client.images.get(image)
    except Exception:
        return f"the image {image} is not present (build docker/Dockerfile.worker)"
    return None


@dataclass
class _Lease:
    lock_fd: int
    container: str
    control: Path


@dataclass
class DockerIsolation:
    """`python` and `harness_lib` name paths inside the image; None means the host's own paths
    (for images made from the host's runtime, as the tests do) and the host's harness package
    bind-mounted read-only. A worker sets `image`, `python`, `harness_lib` and `state_dir` from its
    settings (REFEREE_DOCKER_*, worker/settings.py)."""

    name: str = "docker"
    limits: Limits = field(default_factory=Limits)
    lockdown: str = "on"  # a Lockdown value (sandbox/isolation.py)
    image: str = DEFAULT_IMAGE
    python: str | None = None
    harness_lib: str | None = None
    jobs_per_container: int = 50
    strict: bool = False
    slots: int = 8
    # nobody when the worker is root (it can hand the control directory over); else the worker's own
    # uid, which owns the control directory: either way never root inside the container.
    user: str = field(default_factory=lambda: f"{NOBODY}:{NOBODY}" if os.geteuid() == 0 else f"{os.getuid()}:{os.getgid()}")
    state_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "referee-docker")
    enforces_memory: bool = True  # the container's cgroup does; no watchdog needed
    _leases: dict[str, _Lease] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if self.strict:
            self.name, self.jobs_per_container = "docker-strict", 1
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Containers of different state directories (tests, several services) never mix.
        self._pool = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:10]

    # -- the Isolation protocol ----------------------------------------------------------------

    def command(self, argv: list[str], workdir: Path, device: str) -> list[str]:
        role = argv[argv.index("--role") + 1] if "--role" in argv else "harness"
        gpu = _gpu_index() if device == "cuda" else None
        lease = self._acquire(role, gpu, device)
        with self._lock:
            self._leases[str(workdir)] = lease
        inner = list(argv)
        fds = []
        for flag in _FD_FLAGS:
            if flag not in inner:
                continue
            index = inner.index(flag) + 1
            fds.append(int(inner[index]))
            inner[index] = f"{{fd{len(fds) - 1}}}"
        if self.python:
            inner[0] = self.python
        bootstrap = inner.index("-c") + 2  # after `-c BOOTSTRAP` comes the directory holding `harness`
        inner[bootstrap] = self.harness_lib or CONTAINER_LIB
        # The container sees its one GPU as device 0.
        spec = {"argv": inner, "fds": fds, "env": {"CUDA_VISIBLE_DEVICES": "0"} if gpu is not None else {}}
        return [sys.executable, "-I", "-S", str(CONNECT_SCRIPT), str(lease.control / "launch.sock"), json.dumps(spec)]

    def release(self, workdir: Path) -> None:
        with self._lock:
            lease = self._leases.pop(str(workdir), None)
        if lease is None:
            return
        os.close(lease.lock_fd)  # unlocks the slot
        if self.strict:
            threading.Thread(target=self._remove, args=(lease.container,), daemon=True).start()

    def pause(self, workdir: Path) -> dict[str, Any]:
        """Freeze the container running this job's harness process (`docker pause`: its cgroup), so
        nothing of it runs while the other side is timed. What was seen, as HarnessProcess.pause says."""
        with self._lock:
            lease = self._leases.get(str(workdir))
        if lease is None:
            return {"stopped": False, "states": {}, "error": "no container for this job"}
        try:
            container = _get(_client(), lease.container)
            container.pause()
            container.reload()
            return {"stopped": container.status == "paused", "states": {lease.container: container.status}}
        except Exception as exc:  # the SDK raises several types; an unpaused timing is simply not cached
            return {"stopped": False, "states": {}, "error": f"{type(exc).__name__}: {exc}"[:300]}

    def resume(self, workdir: Path) -> None:
        with self._lock:
            lease = self._leases.get(str(workdir))
        if lease is None:
            return
        try:
            container = _get(_client(), lease.container)
            if container is not None and container.status == "paused":
                container.unpause()
        except Exception:
            pass

    # -- the pool -------------------------------------------------------------------------------

    def _acquire(self, role: str, gpu: int | None, device: str) -> _Lease:
        deadline = time.monotonic() + 120
        while True:
            for slot in range(self.slots):
                key = f"{'cpu' if gpu is None else f'gpu{gpu}'}-{role}-{slot}"
                lock_fd = os.open(self.state_dir / f"{key}.lock", os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(lock_fd)
                    continue
                try:
                    name, control = self._ready_container(key, gpu, device)
                except BaseException:
                    os.close(lock_fd)
                    raise
                return _Lease(lock_fd, name, control)
            if time.monotonic() > deadline:
                raise RuntimeError(f"no free docker slot for {role} after 120 s ({self.slots} slots)")
            time.sleep(0.1)

    def _ready_container(self, key: str, gpu: int | None, device: str) -> tuple[str, Path]:
        """A running container for this slot with an idle launcher: the old one if still good.
        Names are unique per container (a strict pool removes the last one in the background while
        the next is created); the slot's current one is recorded in `<key>.name`."""
        record = self.state_dir / f"{key}.name"
        control = self.state_dir / key
        client = _client()
        previous = record.read_text().strip() if record.exists() else ""
        container = _get(client, previous) if previous else None
        healthy = (
            container is not None
            and container.status == "running"
            and not self.strict
            and not (control / "tainted").exists()
            and not (control / "retired").exists()
            and _launcher_idle(control / "launch.sock")
        )
        if healthy:
            return previous, control
        if container is not None:
            self._remove(previous)
        if control.exists():
            for entry in control.iterdir():
                entry.unlink()
        control.mkdir(mode=0o700, exist_ok=True)
        uid, gid = (int(x) for x in self.user.split(":"))
        if os.geteuid() == 0:
            os.chown(control, uid, gid)  # the launcher (non-root) creates its socket there
        name = f"referee-{self._pool}-{key}-{uuid.uuid4().hex[:8]}"
        record.write_text(name)
        self._create(client, name, control, gpu, device)
        deadline = time.monotonic() + 60
        polls = 0
        while not (control / "launch.sock").exists():
            polls += 1
            if time.monotonic() > deadline or (polls % 25 == 0 and _get(client, name).status != "running"):
                raise RuntimeError(f"the container {name} did not start its launcher: {_logs(client, name)}")
            time.sleep(0.02)
        return name, control

    def _create(self, client: Any, name: str, control: Path, gpu: int | None, device: str) -> None:
        from docker.types import DeviceRequest, Ulimit

        limits = self.limits
        lib = self.harness_lib or CONTAINER_LIB
        volumes = {str(control): {"bind": CONTROL, "mode": "rw"}}
        if self.harness_lib is None:
            volumes[str(HARNESS_DIR)] = {"bind": f"{CONTAINER_LIB}/harness", "mode": "ro"}
        python = self.python or sys.executable
        tmp = tempfile.gettempdir()
        # A private tmpfs over /tmp, unless the interpreter lives under it (a checkout in /tmp, as CI
        # may clone): then only the jobs' directory gets one, and the image's /tmp stays read-only.
        under_tmp = any(os.path.realpath(path).startswith(os.path.realpath(tmp) + os.sep) for path in (python, sys.prefix))
        scratch = os.path.join(tmp, "referee-jobs") if under_tmp else tmp
        tmpfs = {scratch: f"size={limits.workdir_bytes},mode=1777", "/dev/shm": "size=64m,mode=1777"}
        if not under_tmp and tmp != "/tmp":
            tmpfs["/tmp"] = f"size={limits.workdir_bytes},mode=1777"
        client.containers.run(
            self.image,
            command=[python, "-I", "-B", "-S", f"{lib}/harness/launcher.py", CONTROL, "--max-jobs", str(self.jobs_per_container)],
            name=name,
            detach=True,
            init=True,  # docker's init reaps orphans; the launcher is not pid 1
            network_mode="none",
            read_only=True,
            tmpfs=tmpfs,
            user=self.user,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            pids_limit=limits.processes,
            mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes,
            ulimits=[
                Ulimit(name="cpu", soft=limits.cpu_seconds, hard=limits.cpu_seconds),
                Ulimit(name="fsize", soft=limits.file_bytes, hard=limits.file_bytes),
                Ulimit(name="core", soft=0, hard=0),
            ],
            environment={"REFEREE_CONTAINER_TMP": scratch, "HOME": scratch},
            volumes=volumes,
            working_dir="/tmp",
            labels={"referee.pool": self._pool},
            device_requests=[DeviceRequest(device_ids=[str(gpu)], capabilities=[["gpu"]])]
            if device == "cuda" and gpu is not None
            else [],
        )

    def _remove(self, name: str) -> None:
        try:
            container = _get(_client(), name)
            if container is not None:
                container.remove(force=True)
        except Exception:  # a container already gone is what we wanted
            pass

    def shutdown(self) -> None:
        """Remove every container of this pool (tests, and a worker that stops)."""
        client = _client()
        for container in client.containers.list(all=True, filters={"label": f"referee.pool={self._pool}"}):
            self._remove(container.name)  # tolerates one a strict release is removing right now


def _launcher_idle(path: Path, timeout: float = 15.0) -> bool:
    """Ask the launcher; it answers only between jobs, so a container still finishing (or killing) the
    last job is waited for, and one that is quitting after a fault answers nothing and is replaced."""
    import socket
    import struct

    if not path.exists():
        return False
    body = json.dumps({"ping": True}).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(struct.pack("!I", len(body)) + body)
            reply = sock.recv(4096)
        return b"idle" in reply
    except OSError:
        return False


def _get(client: Any, name: str) -> Any:
    from docker.errors import NotFound

    try:
        return client.containers.get(name)
    except NotFound:
        return None


def _logs(client: Any, name: str) -> str:
    container = _get(client, name)
    return container.logs(tail=20).decode("utf-8", "replace") if container is not None else "(gone)"


@functools.lru_cache(maxsize=1)
def _gpu_index() -> int:
    """The worker's GPU: the first of CUDA_VISIBLE_DEVICES (a worker is pinned to one), else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(visible) if visible.isdigit() else 0
