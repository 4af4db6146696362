"""The warm pool: a zygote process (sandbox/harness/zygote.py) that has imported torch and triton
once and forks a fresh harness process per request, so an evaluation pays for a CUDA context and
its compiles but not for `import torch`.

`WarmPool` owns the zygote (starts it through the isolation backend, restarts it when it dies);
`PoolClient` is what an evaluation uses, from any thread or process that knows the socket path
(RQ's work horses inherit the worker's context, worker/context.py, with the pool in it). The listening socket is created here and handed to the zygote, so
its path never has to be visible inside the isolation.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triton_referee.sandbox.isolation import Isolation, ProcessIsolation, lockdown_choice, namespace_layers
from triton_referee.sandbox.launch import HARNESS_PARENT, ZYGOTE_BOOTSTRAP, child_environment

MAX_REPLY = 64 * 1024


class PoolUnavailable(Exception):
    """The zygote did not answer (it is starting, restarting or dead)."""


@dataclass(frozen=True)
class PoolClient:
    """Talks to a zygote over its control socket: one connection per request."""

    socket_path: str
    scratch: str  # where jobs' working directories must be (visible inside the isolation)
    device: str = "cpu"  # what the zygote was started for (its environment decided the Triton mode)
    isolation_name: str = "process"
    memory_bytes: int = 16 << 30  # resident memory each harness process may hold (the backend's limit)
    namespaces: tuple[str, ...] = ()  # the backend's layers, shared by the zygote and all its children

    def request(self, message: dict[str, Any], fds: list[int] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as connection:
                connection.settimeout(timeout)
                connection.connect(self.socket_path)
                socket.send_fds(connection, [json.dumps(message).encode()], fds or [])
                reply = json.loads(connection.recv(MAX_REPLY) or b"null")
        except (OSError, ValueError) as exc:
            raise PoolUnavailable(f"the warm pool did not answer {message.get('op')!r}: {exc}") from exc
        if not isinstance(reply, dict) or not reply.get("ok"):
            raise PoolUnavailable(f"the warm pool refused {message.get('op')!r}: {reply}")
        return reply

    def spawn(self, role: str, cwd: Path, env: dict[str, str], limits: dict[str, int], fds: list[int]) -> tuple[int, list[str]]:
        """Fork a harness process; returns its pid and the confinement layers it runs under (the
        backend's namespaces, shared by the pool, and those the child applied to itself alone)."""
        reply = self.request({"op": "spawn", "role": role, "cwd": str(cwd), "env": env, "limits": limits}, fds)
        own = [str(layer) for layer in reply.get("confinement") or []]
        return int(reply["pid"]), [*own, *(f"{name}:pool" for name in self.namespaces)]

    def kill(self, pid: int) -> None:
        self.request({"op": "kill", "pid": pid}, timeout=5)

    def signal(self, pid: int, action: str) -> dict[str, Any]:
        """`stop` (SIGSTOP a child's tree and wait until it is stopped) or `cont`."""
        return self.request({"op": "signal", "pid": pid, "action": action}, timeout=5)

    def learn_launchers(self, patterns: list[list[str]]) -> None:
        """Ask the zygote to build Triton launchers for argument-type patterns a child had to compile."""
        self.request({"op": "learn", "launchers": patterns}, timeout=5)

    def exit_status(self, pid: int) -> tuple[bool, int | None, int | None]:
        """(still running, exit code or -signal when known, resident bytes if killed for memory)."""
        reply = self.request({"op": "status", "pid": pid}, timeout=5)
        return bool(reply["running"]), reply.get("exit"), reply.get("memory_killed_bytes")


class WarmPool:
    """Starts and keeps one zygote for this worker (one device, one isolation backend)."""

    def __init__(
        self,
        device: str,
        *,
        isolation: Isolation | None = None,
        python: str | None = None,
        spares: int = 2,
        warm_target: str | None = None,
        root: Path | None = None,
    ) -> None:
        self.device = device
        self.isolation = isolation or ProcessIsolation()
        self.python = python or sys.executable
        self.spares = spares
        self.warm_target = (
            detect_warm_target()
            if warm_target == "auto" and device == "cuda"
            else (None if warm_target == "auto" else warm_target)
        )
        self.root = Path(tempfile.mkdtemp(prefix="referee-pool-", dir=root))
        self.scratch = self.root / "jobs"  # bound into the isolation; the control socket is not
        self.scratch.mkdir(mode=0o700)
        (self.root / "control").mkdir(mode=0o700)
        self.socket_path = str(self.root / "control" / "zygote.sock")
        self.log_path = self.root / "control" / "zygote.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self._lifeline: int | None = None
        self.stopped = False
        self._lock = threading.Lock()

    @property
    def client(self) -> PoolClient:
        limits = getattr(self.isolation, "limits", None)
        return PoolClient(
            self.socket_path,
            str(self.scratch),
            self.device,
            self.isolation.name,
            getattr(limits, "memory_bytes", 16 << 30),
            tuple(namespace_layers(self.isolation)),
        )

    def start(self, wait_s: float = 180.0) -> dict[str, Any]:
        """Start the zygote and wait until it answers; returns its ping (import and warm-up times)."""
        with self._lock:
            if os.path.exists(self.socket_path):
                os.unlink(self.socket_path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            listener.bind(self.socket_path)
            listener.listen(64)
            zygote_home = self.scratch / ".zygote"  # made by the zygote, inside its isolation
            lifeline_r, self._lifeline = os.pipe()
            argv = [
                self.python,
                "-I",
                "-B",  # -I ignores PYTHONDONTWRITEBYTECODE: no .pyc written into the library trees (refused there)
                "-c",
                ZYGOTE_BOOTSTRAP,
                str(HARNESS_PARENT),
                "--listen-fd",
                str(listener.fileno()),
                "--lifeline-fd",
                str(lifeline_r),
                "--spares",
                str(self.spares),
                "--device",
                self.device,
            ]
            if self.warm_target:
                argv += ["--warm-target", self.warm_target]
            choice = lockdown_choice(self.isolation)
            if choice:
                argv += ["--lockdown", choice]
            try:
                with open(self.log_path, "ab") as log:  # the zygote's own output; its children have their own pipes
                    self.process = subprocess.Popen(
                        self.isolation.command(argv, self.scratch, self.device),
                        cwd=self.scratch,
                        env=child_environment(zygote_home, "zygote", self.device),
                        pass_fds=(listener.fileno(), lifeline_r),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=log,
                        start_new_session=True,
                    )
            finally:
                listener.close()  # the zygote holds it now; clients connect by path
                os.close(lifeline_r)
            self.started_at = time.monotonic()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                return self.client.request({"op": "ping"}, timeout=max(1.0, deadline - time.monotonic()))
            except PoolUnavailable as exc:
                if "lockdown" in str(exc):  # the zygote's children cannot confine themselves: fail now
                    raise
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_path.read_bytes()[-2000:].decode("utf-8", "replace") if self.log_path.exists() else ""
                    raise PoolUnavailable(f"the zygote did not start (exit {self.process.poll()}): {tail}") from None
                time.sleep(0.2)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure(self) -> None:
        """Restart the zygote if it died (its children died with it)."""
        if not self.stopped and not self.alive():
            self.restarts += 1
            if self._lifeline is not None:
                os.close(self._lifeline)
                self._lifeline = None
            self.start()

    def stop(self) -> None:
        self.stopped = True
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self.process.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> WarmPool:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def detect_warm_target() -> str | None:
    """`cuda:<arch>:32` of the first visible GPU, asked of nvidia-smi (this process never touches CUDA)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.split()
        major, minor = out[0].split(".")
        return f"cuda:{int(major) * 10 + int(minor)}:32"
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
