"""Starting a harness process and talking to it.

This is the isolation seam: `HarnessProcess` starts `python -m harness` as a plain child process
in its own session (so its whole process group can be killed), with a clean environment, a
private working directory and its own Triton cache. Container and namespace backends wrap the
same command line.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .harness.protocol import KEY_BYTES, Channel, ChannelClosed, ChannelTimeout, ProtocolError
from .isolation import Isolation, MemoryWatchdog, ProcessIsolation, start_watchdog

HARNESS_PARENT = Path(__file__).resolve().parent  # the directory that holds the `harness` package
OUTPUT_CAP_BYTES = 64 * 1024
_BOOTSTRAP = "import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module('harness', run_name='__main__', alter_sys=True)"
_PASSED_ENV = ("PATH", "LD_LIBRARY_PATH", "CUDA_HOME", "TRITON_PTXAS_PATH", "TRITON_LIBCUDA_PATH")


class HarnessDied(Exception):
    """The process ended or broke the protocol before answering."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


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


def child_environment(workdir: Path, role: str, device: str) -> dict[str, str]:
    """A clean environment: nothing of the parent's but what the runtime needs. No secrets."""
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        HOME=str(workdir),
        TMPDIR=str(workdir / "tmp"),
        LANG="C.UTF-8",
        TRITON_CACHE_DIR=str(workdir / f"triton-cache-{role}"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif "CUDA_VISIBLE_DEVICES" in os.environ:
        env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
    return env


class HarnessProcess:
    def __init__(self, role: str, workdir: Path, device: str, python: str | None = None,
                 isolation: Isolation | None = None) -> None:
        self.role = role
        self.isolation = isolation or ProcessIsolation()
        self.workdir = workdir
        self.device = device
        self.python = python or os.environ.get("REFEREE_HARNESS_PYTHON") or sys.executable
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: Channel | None = None
        self.busy_seconds = 0.0
        self._readers: list[_CappedReader] = []
        self.watchdog: MemoryWatchdog | None = None

    def start(self) -> None:
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        key_r, key_w = os.pipe()
        child_fds = (to_child_r, to_parent_w, key_r)
        argv = [
            self.python, "-I", "-c", _BOOTSTRAP, str(HARNESS_PARENT),
            "--role", self.role,
            "--read-fd", str(to_child_r), "--write-fd", str(to_parent_w), "--key-fd", str(key_r),
        ]
        parent_fds = (to_child_w, to_parent_r, key_w)
        try:
            self.process = subprocess.Popen(
                self.isolation.command(argv, self.workdir, self.device),
                cwd=self.workdir,
                env=child_environment(self.workdir, self.role, self.device),
                pass_fds=child_fds,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except BaseException:
            for fd in parent_fds:
                os.close(fd)
            raise
        finally:
            for fd in child_fds:
                os.close(fd)
        self.watchdog = start_watchdog(self.process.pid, self.isolation)
        key = secrets.token_bytes(KEY_BYTES)
        try:
            os.write(key_w, key)
        except OSError:
            self.kill()
            for fd in parent_fds[:2]:
                os.close(fd)
            raise
        finally:
            os.close(key_w)
        for fd in (to_child_w, to_parent_r):
            os.set_blocking(fd, False)
        self.channel = Channel(to_parent_r, to_child_w, key, is_parent=True)
        self._fds = (to_child_w, to_parent_r)
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [_CappedReader(self.process.stdout, OUTPUT_CAP_BYTES), _CappedReader(self.process.stderr, OUTPUT_CAP_BYTES)]
        for reader in self._readers:
            reader.start()

    def request(self, header: dict[str, Any], payload: bytes = b"", *, deadline: float) -> tuple[dict[str, Any], bytearray]:
        assert self.channel is not None and self.process is not None
        started = time.monotonic()
        try:
            self.channel.send(header, payload, deadline=deadline)
            reply, data = self.channel.recv(deadline=deadline)
        except ChannelTimeout as exc:
            self.kill()
            raise HarnessTimeout(f"the {self.role} process did not answer {header.get('cmd')!r} in time") from exc
        except (ChannelClosed, ProtocolError) as exc:
            returncode = self._reap()
            raise HarnessDied(f"the {self.role} process {self._describe_exit(returncode, exc)}", returncode) from exc
        finally:
            self.busy_seconds += time.monotonic() - started
        if reply.get("cmd") != header.get("cmd"):
            self.kill()
            raise HarnessDied(f"the {self.role} process answered out of order", None)
        return reply, data

    def _describe_exit(self, returncode: int | None, exc: Exception) -> str:
        if self.watchdog is not None and self.watchdog.tripped:
            return f"was killed for using {self.watchdog.tripped >> 20} MiB, over the memory limit of {self.watchdog.limit >> 20} MiB"
        if returncode is None:
            return f"broke the result channel ({exc})"
        if returncode < 0:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        return f"exited with code {returncode} without a result"

    def _reap(self) -> int | None:
        assert self.process is not None
        try:
            return self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

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
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        if self.process is None:
            self._release()
            return
        if self.process.poll() is None:
            try:
                self.request({"cmd": "exit"}, deadline=time.monotonic() + 2)
            except (HarnessDied, HarnessTimeout):
                pass
        self.kill()  # also reaps anything the process left behind in its group
        for fd in getattr(self, "_fds", ()):
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = ()
        self._release()

    def _release(self) -> None:
        """Tell a pooling backend (docker) that this process is done with its container."""
        release = getattr(self.isolation, "release", None)
        if release is not None:
            release(self.workdir)
