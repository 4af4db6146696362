"""Starting a harness process and exchanging frames with it (what the frames say, and what a reply
means for the verdict, is worker/harness_client.py's).

This is the isolation seam: `HarnessProcess` starts `python -m harness` as a plain child process
in its own session (so its whole process group can be killed), with a clean environment, a
private working directory and its own Triton cache. Container and namespace backends wrap the
same command line.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from triton_referee.sandbox.harness import freeze, lockdown
from triton_referee.sandbox.harness.messages import Exit, request_wire
from triton_referee.sandbox.harness.protocol import (
    KEY_BYTES,
    Channel,
    ChannelClosed,
    ChannelTimeout,
    ProtocolError,
    data_socketpair,
)
from triton_referee.sandbox.isolation import (
    Isolation,
    MemoryWatchdog,
    ProcessIsolation,
    lockdown_choice,
    namespace_layers,
    start_watchdog,
)
from triton_referee.sandbox.launch import BOOTSTRAP, HARNESS_PARENT, child_environment

from .native_evidence import RecordPipe, recorder_cache
from .pool import PoolClient, PoolUnavailable

OUTPUT_CAP_BYTES = 64 * 1024
# Core dumps of a candidate would be large and could hold the channel key. Memory is watched (a
# poll of resident pages: CUDA reserves far more address space than it uses, so no RLIMIT_AS) by
# the warm pool's zygote; fresh processes leave it to the isolation backend.
DEFAULT_LIMITS = {"core_bytes": 0, "memory_bytes": 16 << 30}


class HarnessDied(Exception):
    """The process ended or broke the protocol before answering."""

    def __init__(self, message: str, returncode: int | None, memory: tuple[int, int] | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.memory = memory  # (resident bytes held, limit) when it was killed for memory


class HarnessTimeout(Exception):
    """No answer before the deadline; the process group has been killed."""


class _CappedReader(threading.Thread):
    """Drains a pipe, keeping the first `cap` bytes: output is evidence, never parsed."""

    def __init__(self, stream: Any, cap: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.cap = stream, cap
        self.kept = bytearray()
        self.total = 0

    def run(self) -> None:
        while chunk := self.stream.read1(65536) if hasattr(self.stream, "read1") else self.stream.read(65536):
            self.total += len(chunk)
            room = self.cap - len(self.kept)
            if room > 0:
                self.kept += chunk[:room]

    def text(self) -> str:
        body = self.kept.decode("utf-8", "replace")
        return body + (f"\n[… {self.total - len(self.kept)} more bytes dropped]" if self.total > len(self.kept) else "")


class _FreshChild:
    """A harness process started for this evaluation alone."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class _PooledChild:
    """A harness process forked by the warm pool's zygote (its pid is the zygote's to manage)."""

    def __init__(self, pool: PoolClient, pid: int) -> None:
        self.pool = pool
        self.pid = pid
        self.returncode: int | None = None
        self.memory_killed_bytes: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                running, code, self.memory_killed_bytes = self.pool.exit_status(self.pid)
            except PoolUnavailable:  # the zygote is gone, and its children with it (PDEATHSIG)
                running, code = False, -signal.SIGKILL
            if not running:
                self.returncode = code if code is not None else -signal.SIGKILL
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while (code := self.poll()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return code

    def kill(self) -> None:
        try:
            self.pool.kill(self.pid)
        except PoolUnavailable:
            pass


class HarnessProcess:
    def __init__(
        self,
        role: str,
        workdir: Path,
        device: str,
        python: str | None = None,
        isolation: Isolation | None = None,
        pool: PoolClient | None = None,
        limits: dict[str, int] | None = None,
        native_records: bool = False,
    ) -> None:
        self.role = role
        self.native_records = native_records  # run the native recorder; its records arrive in `records`
        self.records: RecordPipe | None = None
        self.workdir = workdir
        self.device = device
        self.pool = pool
        self.isolation = isolation or ProcessIsolation()
        self.isolation_name = pool.isolation_name if pool is not None else self.isolation.name
        self.python = python or sys.executable  # the worker passes its settings' harness_python
        self.limits = limits if limits is not None else dict(DEFAULT_LIMITS)
        if pool is not None and limits is None:
            self.limits["memory_bytes"] = pool.memory_bytes
        self.process: _FreshChild | _PooledChild | None = None
        self.channel: Channel | None = None
        self.busy_seconds = 0.0
        self.start_seconds = 0.0
        self._posted_at = 0.0
        self._readers: list[_CappedReader] = []
        self._fds: tuple[int, ...] = ()
        self.watchdog: MemoryWatchdog | None = None
        self._paused = False  # its docker container is paused
        self.confinement: list[str] = []  # the kernel layers this process runs under (result: environment.confinement)

    def start(self) -> None:
        started = time.monotonic()
        if self.pool is None:  # a pooled child makes its own directory, inside the pool's isolation
            (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        key_r, key_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        data_parent, data_child = data_socketpair()  # shared memory's descriptors travel here
        child_fds = (to_child_r, to_parent_w, key_r, out_w, err_w, data_child)
        parent_fds = (to_child_w, to_parent_r, key_w, out_r, err_r, data_parent)
        env = child_environment(self.workdir, self.role, self.device)
        self.records = RecordPipe() if self.native_records else None
        evidence_fds = (self.records.child_fd(),) if self.records is not None else ()
        try:
            if self.pool is not None:
                pid, self.confinement = self.pool.spawn(self.role, self.workdir, env, self.limits, [*child_fds, *evidence_fds])
                self.process = _PooledChild(self.pool, pid)
            else:
                argv = [
                    self.python,
                    "-I",
                    "-B",  # -I ignores PYTHONDONTWRITEBYTECODE: no .pyc written into the library trees (refused there)
                    "-c",
                    BOOTSTRAP,
                    str(HARNESS_PARENT),
                    "--role",
                    self.role,
                    "--read-fd",
                    str(to_child_r),
                    "--write-fd",
                    str(to_parent_w),
                    "--key-fd",
                    str(key_r),
                    "--data-fd",
                    str(data_child),
                    "--limits",
                    json.dumps({k: v for k, v in self.limits.items() if k != "memory_bytes"}),
                ]
                if evidence_fds:  # the recorder was built by this trusted process: the child only loads it
                    cache = recorder_cache()
                    argv += ["--evidence-fd", str(evidence_fds[0])] + (["--native-cache", str(cache)] if cache else [])
                self.confinement = namespace_layers(self.isolation)
                choice = lockdown_choice(self.isolation)
                if choice:  # the harness applies exactly these or exits
                    support = lockdown.probe(choice)
                    argv += ["--lockdown", json.dumps({"landlock_abi": support.landlock_abi, "seccomp": support.seccomp})]
                    self.confinement = [*support.layers(), *self.confinement]
                self.process = _FreshChild(
                    subprocess.Popen(
                        self.isolation.command(argv, self.workdir, self.device),
                        cwd=self.workdir,
                        env=env,
                        pass_fds=(*child_fds[:3], data_child, *evidence_fds),
                        stdin=subprocess.DEVNULL,
                        stdout=out_w,
                        stderr=err_w,
                        start_new_session=True,
                    )
                )
        except BaseException:
            for fd in parent_fds:
                os.close(fd)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
            if self.records is not None:
                self.records.close_child_end()
        if self.pool is None:  # the zygote watches the memory of its own children
            self.watchdog = start_watchdog(self.process.pid, self.isolation)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            os.write(key_w, key)
        except OSError:
            self.kill()
            for fd in (*parent_fds[:2], data_parent):
                os.close(fd)
            raise
        finally:
            os.close(key_w)
        for fd in (to_child_w, to_parent_r, data_parent):
            os.set_blocking(fd, False)
        self.channel = Channel(to_parent_r, to_child_w, key, is_parent=True, data_fd=data_parent)
        self._fds = (to_child_w, to_parent_r)
        self._readers = [
            _CappedReader(os.fdopen(out_r, "rb", buffering=0), OUTPUT_CAP_BYTES),
            _CappedReader(os.fdopen(err_r, "rb", buffering=0), OUTPUT_CAP_BYTES),
        ]
        for reader in self._readers:
            reader.start()
        self.start_seconds = time.monotonic() - started

    def request(self, header: dict[str, Any], payload: bytes = b"", *, deadline: float) -> tuple[dict[str, Any], bytearray]:
        self.post(header, payload, deadline=deadline)
        return self.collect(header, deadline=deadline)

    def post(self, header: dict[str, Any], payload: bytes = b"", *, deadline: float, fds: list[int] | None = None) -> None:
        """Send a command without waiting for its answer (collect it later with `collect`); `fds`
        (shared memory) go with it and stay the caller's to close."""
        assert self.channel is not None and self.process is not None
        self._posted_at = time.monotonic()
        self._guarded(header, lambda: self.channel.send(header, payload, deadline=deadline, fds=fds or ()))

    def take_fds(self) -> list[int]:
        """The descriptors that came with the last reply (now the caller's to close)."""
        return self.channel.take_fds() if self.channel is not None else []

    def pause(self, light: bool = False) -> dict[str, Any]:
        """Stop every process of this harness (SIGSTOP) and wait until the kernel shows them stopped,
        so nothing of theirs runs while the other side is timed. Returns what was seen: `stopped`
        (all of them were), `states` (pid -> state letter). Under docker the container is paused
        (~0.1 s), except when `light` (between timed rounds: too slow to do every round)."""
        if self.process is None or self.process.poll() is not None:
            return {"stopped": True, "states": {}, "gone": True}
        if isinstance(self.process, _PooledChild):
            try:
                return self.process.pool.signal(self.process.pid, "stop")
            except PoolUnavailable as exc:
                return {"stopped": False, "states": {}, "error": str(exc)}
        if getattr(self.isolation, "name", "").startswith("docker"):
            pause = getattr(self.isolation, "pause", None)
            if light or pause is None:
                return {"stopped": False, "states": {}, "error": "not done under docker"}
            self._paused = True
            return pause(self.workdir)
        return freeze.stop_tree(self.process.pid)

    def resume(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        if isinstance(self.process, _PooledChild):
            try:
                self.process.pool.signal(self.process.pid, "cont")
            except PoolUnavailable:
                pass
            return
        if getattr(self.isolation, "name", "").startswith("docker"):
            if self._paused:
                self._paused = False
                self.isolation.resume(self.workdir)  # type: ignore[attr-defined]
            return
        freeze.continue_tree(self.process.pid)

    def collect(self, header: dict[str, Any], *, deadline: float) -> tuple[dict[str, Any], bytearray]:
        assert self.channel is not None
        try:
            reply, data = self._guarded(header, lambda: self.channel.recv(deadline=deadline))
        finally:
            self.busy_seconds += time.monotonic() - self._posted_at
        if reply.get("cmd") != header.get("cmd"):
            self.kill()
            raise HarnessDied(f"the {self.role} process answered out of order", None)
        return reply, data

    def _guarded(self, header: dict[str, Any], step: Any) -> Any:
        try:
            return step()
        except ChannelTimeout as exc:
            self.kill()
            raise HarnessTimeout(f"the {self.role} process did not answer {header.get('cmd')!r} in time") from exc
        except (ChannelClosed, ProtocolError) as exc:
            returncode = self._reap()
            raise HarnessDied(
                f"the {self.role} process {self._describe_exit(returncode, exc)}", returncode, self._memory_kill()
            ) from exc

    def _describe_exit(self, returncode: int | None, exc: Exception) -> str:
        killed = getattr(self.process, "memory_killed_bytes", None)
        if killed:
            return f"was killed for holding {killed >> 20} MiB, over its memory limit of {self.limits.get('memory_bytes', 0) >> 20} MiB"
        if self.watchdog is not None and self.watchdog.tripped:
            return f"was killed for holding {self.watchdog.tripped >> 20} MiB, over its memory limit of {self.watchdog.limit >> 20} MiB"
        if returncode is None:
            return f"broke the result channel ({exc})"
        if returncode < 0:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        return f"exited with code {returncode} without a result"

    def _memory_kill(self) -> tuple[int, int] | None:
        killed = getattr(self.process, "memory_killed_bytes", None)
        if killed:
            return int(killed), int(self.limits.get("memory_bytes", 0))
        if self.watchdog is not None and self.watchdog.tripped:
            return int(self.watchdog.tripped), int(self.watchdog.limit)
        return None

    def _reap(self) -> int | None:
        assert self.process is not None
        code = self.process.wait(timeout=2)
        if code is None:
            self.kill()
        return code

    def output(self) -> dict[str, str]:
        for reader in self._readers:
            reader.join(timeout=1)
        return {"stdout": self._readers[0].text(), "stderr": self._readers[1].text()} if self._readers else {}

    def kill(self) -> None:
        """Kill the whole process group (the candidate may have started children)."""
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(timeout=5)

    def close(self) -> None:
        if self.process is None:
            self._release()
            return
        if isinstance(self.process, _PooledChild):
            # Nothing more is asked of it, and its exit (a CUDA context's teardown, 0.1-0.3 s) is
            # the zygote's to wait for: killing its group is all this evaluation needs. Its output
            # is complete once its descriptors close, which happens first as it dies.
            self.process.kill()
        else:
            if self.process.poll() is None:
                try:
                    self.request(request_wire(Exit()), deadline=time.monotonic() + 2)
                except (HarnessDied, HarnessTimeout):
                    pass
            self.kill()  # also reaps anything the process left behind in its group
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = ()
        if self.records is not None:  # the reader keeps what it read; it ends when the process is gone
            self.records.close()
        self._release()

    def _release(self) -> None:
        """Tell a pooling backend (docker) that this process is done with its container."""
        release = getattr(self.isolation, "release", None)
        if release is not None:
            release(self.workdir)
