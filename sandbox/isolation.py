"""Isolation backends: how a harness process is confined.

A backend turns the harness command line into one that runs confined. `HarnessProcess` always adds
a clean environment, its own session, a private working directory and (in the harness) the audit
hook; the backends are the operating-system layer beneath that:

- `docker`: a container per GPU and role (`sandbox/docker_backend.py`).
- `bwrap` and `unshare`: new user (when not root), network, pid, ipc, uts and mount namespaces; a
  new root made only of read-only binds of the runtime (system libraries, the Python prefixes, the
  harness package), a size-limited tmpfs as the work directory and as /tmp, a minimal /dev (GPU
  device nodes bound when present); when started by root the harness runs as `nobody`.
- `process`: nothing beyond the above; for development only.

Every backend also applies `Limits`: CPU time, file size and process count as rlimits, and memory
with a watchdog on the process tree's resident memory (no RLIMIT_AS: CUDA reserves huge virtual
ranges) or the container's cgroup.
"""

from __future__ import annotations

import enum
import functools
import glob
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

SANDBOX_DIR = Path(__file__).resolve().parent
HARNESS_DIR = SANDBOX_DIR / "harness"
CONFINE_SCRIPT = SANDBOX_DIR / "confine.py"
NOBODY = 65534

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # enum.StrEnum is 3.11+; the project supports 3.10

    class StrEnum(str, enum.Enum):
        """Members are their values, as strings (`str(member)`, f-strings, comparisons)."""

        def __str__(self) -> str:
            return str(self.value)


class IsolationName(StrEnum):
    """The backends a worker or `referee check` may ask for; `auto` takes the strongest that works here."""

    auto = "auto"
    docker = "docker"
    bwrap = "bwrap"
    unshare = "unshare"
    process = "process"


class Lockdown(StrEnum):
    """Which layers harness processes put on themselves (harness/lockdown.py): `on` every layer the
    kernel offers, `landlock` or `seccomp` only that one, `off` none (for diagnosis only)."""

    on = "on"
    landlock = "landlock"
    seccomp = "seccomp"
    off = "off"


BACKENDS = tuple(name.value for name in IsolationName)
# What the runtime needs of the host's system directories; everything else stays out of reach.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_SYSTEM_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/localtime")
_RUNTIME_ENV = ("CUDA_HOME", "TRITON_PTXAS_PATH", "TRITON_LIBCUDA_PATH", "LD_LIBRARY_PATH")


@dataclass(frozen=True)
class Limits:
    """Per harness process. Memory is enforced by a watchdog or a cgroup, never by RLIMIT_AS."""

    cpu_seconds: int = 900
    memory_bytes: int = 16 << 30
    processes: int = 1024  # processes and threads; RLIMIT_NPROC counts per user, so it bites where the uid is the sandbox's own
    file_bytes: int = 1 << 30
    workdir_bytes: int = 1 << 30  # the tmpfs holding the work directory (Triton's cache lives there)
    tmp_bytes: int = 256 << 20

    def rlimits(self) -> dict[str, int]:
        return {"cpu": self.cpu_seconds, "fsize": self.file_bytes, "nproc": self.processes, "core": 0}


class Isolation(Protocol):
    # Read-only here: the backends are frozen dataclasses.
    @property
    def name(self) -> str: ...

    @property
    def limits(self) -> Limits: ...

    @property
    def lockdown(self) -> str: ...  # a Lockdown value: what harness processes under this backend put on themselves

    def command(self, argv: list[str], workdir: Path, device: str) -> list[str]:
        """The command line that runs `argv` confined, with `workdir` as its only writable place."""
        ...


@dataclass(frozen=True)
class ProcessIsolation:
    name: str = "process"
    limits: Limits = field(default_factory=Limits)
    lockdown: str = Lockdown.on

    def command(self, argv: list[str], workdir: Path, device: str) -> list[str]:
        return argv


@functools.lru_cache(maxsize=8)
def runtime_paths(python: str) -> tuple[str, ...]:
    """The directories `python` needs to run torch and triton: its prefixes and sys.path entries."""
    probe = (
        "import json, os, sys; print(json.dumps([os.path.realpath(sys.executable), sys.prefix, sys.base_prefix, "
        "sys.exec_prefix, sys.base_exec_prefix, *sys.path]))"
    )
    out = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    paths: set[str] = set()
    for entry in json.loads(out):
        if not entry:
            continue
        real = os.path.realpath(entry)
        for path in (entry, real):
            if os.path.isfile(path) and not path.endswith(".zip"):
                path = os.path.dirname(path)
            if os.path.exists(path):
                paths.add(path)
    # Keep only the outermost: binding a prefix covers its lib/ and site-packages.
    kept = sorted(paths, key=len)
    outer: list[str] = []
    for path in kept:
        if not any(path == o or path.startswith(o.rstrip("/") + "/") for o in outer):
            outer.append(path)
    return tuple(p for p in outer if not any(p == s or p.startswith(s + "/") for s in _SYSTEM_DIRS))


def _env_paths() -> list[str]:
    paths = []
    for name in _RUNTIME_ENV:
        for entry in os.environ.get(name, "").split(":"):
            if entry and os.path.exists(entry):
                paths.append(os.path.dirname(entry) if os.path.isfile(entry) else entry)
    return paths


def gpu_device_nodes() -> list[str]:
    return sorted(glob.glob("/dev/nvidia*") + glob.glob("/dev/nvidia-caps/*"))


def root_steps(python: str, workdir: Path, device: str, limits: Limits, *, devfs: bool = True) -> list[list]:
    """The new root, as steps both `confine.py` and the bwrap renderer understand."""
    # The private /tmp first: binds below it (a checkout or a virtualenv under /tmp) go on top of it.
    steps: list[list] = [["tmpfs", "/tmp", limits.tmp_bytes, 0o1777]]
    binds: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            steps.append(["symlink", os.readlink(path), path])
        elif os.path.isdir(path):
            binds.append(path)
    binds += [path for path in _SYSTEM_ETC if os.path.exists(path)]
    binds += [*runtime_paths(python), *_env_paths(), str(HARNESS_DIR), str(CONFINE_SCRIPT)]
    made: set[str] = set()
    # A path under a directory already bound comes with it (binding it again would create a mount
    # point inside a read-only bind, which fails where it is a symlink, e.g. CUDA_HOME=/usr/local/cuda).
    unique = list(dict.fromkeys(binds))
    binds = [p for p in unique if not any(p != q and p.startswith(q.rstrip("/") + "/") and os.path.isdir(q) for q in unique)]
    for path in binds:
        # Parents are made 0755 explicitly: bwrap would make them 0700, closed to `nobody`.
        for parent in reversed(Path(path).parents[:-1] if len(Path(path).parents) > 1 else ()):
            if str(parent) not in made:
                made.add(str(parent))
                steps.append(["mkdir", str(parent)])
        steps.append(["ro", os.path.realpath(path), path])
    if devfs:
        steps.append(["devfs"])
    if device == "cuda":
        steps += [["dev", node, node] for node in gpu_device_nodes()]
        steps.append(["ro", "/sys", "/sys"])  # CUDA and NVML read the PCI topology there
    steps.append(["proc"])
    # The work directory is a fresh tmpfs at the same path (the harness is told absolute paths);
    # the files the worker put there before start are copied in, nothing else of the host's /tmp.
    steps.append(["tmpfs", str(workdir), limits.workdir_bytes, 0o1777])
    for entry in sorted(workdir.iterdir()) if workdir.is_dir() else []:
        if entry.is_file() and entry.stat().st_size <= 16 << 20:
            steps.append(["copy", str(entry), str(entry)])
        elif entry.is_dir():
            steps.append(["dir", str(entry), 0o700])
    return steps


def is_root() -> bool:
    return os.geteuid() == 0


def _confine_argv(python: str, spec: dict, argv: list[str]) -> list[str]:
    # -S: confine.py needs no site-packages, and skipping them saves most of its start-up.
    return [python, "-I", "-S", str(CONFINE_SCRIPT), json.dumps(spec, separators=(",", ":")), "--", *argv]


@dataclass(frozen=True)
class UnshareIsolation:
    """util-linux `unshare` plus `confine.py`, which builds the new root and drops privileges."""

    name: str = "unshare"
    limits: Limits = field(default_factory=Limits)
    lockdown: str = Lockdown.on
    executable: str = "unshare"

    def command(self, argv: list[str], workdir: Path, device: str) -> list[str]:
        namespaces = ["--net", "--pid", "--ipc", "--uts", "--mount", "--fork", "--kill-child=SIGKILL"]
        if not is_root():
            namespaces[:0] = ["--user", "--map-root-user"]
        spec = {
            "root": {"steps": root_steps(argv[0], workdir, device, self.limits)},
            "limits": self.limits.rlimits(),
            "uid": NOBODY,
            "gid": NOBODY,
            "chdir": str(workdir),
            "parent_death": True,
        }
        return [self.executable, *namespaces, "--", *_confine_argv(argv[0], spec, argv)]


@dataclass(frozen=True)
class BwrapIsolation:
    """bubblewrap builds the root; `confine.py` inside applies limits and drops to `nobody` when root."""

    name: str = "bwrap"
    limits: Limits = field(default_factory=Limits)
    lockdown: str = Lockdown.on
    executable: str = "bwrap"

    def command(self, argv: list[str], workdir: Path, device: str) -> list[str]:
        args = [self.executable, "--die-with-parent", "--new-session", "--hostname", "sandbox"]
        if is_root():
            # As root bwrap needs no user namespace; confine.py drops to nobody inside, so the harness is
            # an unprivileged uid on the host too (a user namespace would map it to host root).
            args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        else:
            args += ["--unshare-all", "--disable-userns"]
        for kind, *rest in root_steps(argv[0], workdir, device, self.limits, devfs=True):
            if kind == "ro":
                args += ["--ro-bind-try", rest[0], rest[1]]
            elif kind == "dev":
                args += ["--dev-bind-try", rest[0], rest[1]]
            elif kind == "symlink":
                args += ["--symlink", rest[0], rest[1]]
            elif kind == "devfs":
                args += ["--dev", "/dev"]
            elif kind == "proc":
                args += ["--proc", "/proc"]
            elif kind == "tmpfs":
                args += ["--perms", f"{rest[2]:o}", "--size", str(rest[1]), "--tmpfs", rest[0]]
            elif kind == "copy":
                args += ["--ro-bind", rest[0], rest[1]]
            elif kind == "dir":
                args += ["--perms", "1777", "--dir", rest[0]]
            elif kind == "mkdir":
                args += ["--perms", "0755", "--dir", rest[0]]
        args += ["--remount-ro", "/", "--chdir", str(workdir), "--"]
        spec = {"limits": self.limits.rlimits(), "uid": NOBODY, "gid": NOBODY, "init": False}
        return args + _confine_argv(argv[0], spec, argv)


class MemoryWatchdog(threading.Thread):
    """Kills a process tree whose resident memory exceeds a limit (polls /proc; CUDA-safe, unlike
    RLIMIT_AS). Counts anonymous and shared-memory pages, so mapped libraries do not add up."""

    def __init__(self, pid: int, limit_bytes: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name=f"memory-watchdog-{pid}")
        self.pid, self.limit, self.interval = pid, limit_bytes, interval
        self.tripped: int | None = None  # the resident bytes seen when it killed
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            tree = process_tree(self.pid)
            if not tree:
                return
            used = sum(resident_bytes(pid) for pid in tree)
            if used > self.limit:
                self.tripped = used
                for pid in tree:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                return


def start_watchdog(pid: int, isolation: Isolation) -> MemoryWatchdog | None:
    """Watch the memory of the process tree started at `pid`, unless the backend has a cgroup for it."""
    if getattr(isolation, "enforces_memory", False):
        return None
    watchdog = MemoryWatchdog(pid, isolation.limits.memory_bytes)
    watchdog.start()
    return watchdog


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, from /proc (empty once `root` is gone)."""
    children: dict[int, list[int]] = {}
    alive = False
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        pid = int(entry.name)
        alive = alive or pid == root
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(pid)
    if not alive:
        return []
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            total = 0
            for line in handle:
                if line.startswith((b"RssAnon:", b"RssShmem:")):
                    total += int(line.split()[1]) * 1024
            return total
    except (OSError, ValueError):
        return 0


LOCKDOWN_CHOICES = tuple(choice.value for choice in Lockdown)


def lockdown_choice(isolation: Isolation) -> str | None:
    """Which layers harness processes put on themselves (harness/lockdown.py), None for none: every
    layer the kernel offers (`on`) under every backend but `process` (the unconfined control).
    The backend's `lockdown` (the operator's REFEREE_LOCKDOWN, through the worker's settings)
    `landlock`|`seccomp` keeps one of them, `off` none: for diagnosis on a host where one breaks the
    runtime (an unknown value means `on`: a typo never weakens it)."""
    choice = str(getattr(isolation, "lockdown", Lockdown.on))
    if isolation.name == "process" or choice == Lockdown.off:
        return None
    return choice if choice in LOCKDOWN_CHOICES else Lockdown.on.value


def namespace_layers(isolation: Isolation) -> list[str]:
    """The layers the backend itself puts around a harness process (for `environment.confinement`)."""
    if isolation.name in ("unshare", "bwrap"):
        layers = ["netns", "pidns", "ipcns", "utsns", "mntns"] + ([f"uid:{NOBODY}"] if is_root() else ["userns"])
        return layers
    if isolation.name.startswith("docker"):
        return ["container", "netns", "pidns", "ipcns", "utsns", "mntns", "cap-drop:all"]
    return []
