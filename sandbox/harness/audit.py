"""A PEP 578 audit hook for the candidate's process (it cannot be removed once added).

An event counts against the candidate when the code that asked for it, the innermost frame outside
the standard library, is untrusted: the submitted file, or code with no file (`exec`, `compile`).
Torch and Triton doing their own work (Triton's compiler starts ptxas, writes its cache) is not
the candidate's. Forbidden events are recorded and refused with PermissionError.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
from types import FrameType
from typing import Any

# Introspection events decided by the direct caller: stdlib helpers (namedtuple, typing, logging)
# use them legitimately on the candidate's behalf; `inspect` is only a thin wrapper, so it is looked through.
DIRECT_CALLER_EVENTS = frozenset({"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._getframe", "sys._current_frames"})
_LOOKED_THROUGH = (os.sep + "inspect.py",)

# event -> why it is forbidden to the candidate
FORBIDDEN_EVENTS: dict[str, str] = {
    "gc.get_objects": "introspection of the garbage collector (finding the harness's objects)",
    "gc.get_referrers": "introspection of the garbage collector",
    "gc.get_referents": "introspection of the garbage collector",
    "sys._getframe": "frame walking",
    "sys._current_frames": "frame walking",
    "sys.setprofile": "installing a profiler hook",
    "sys.settrace": "installing a trace hook",
    "ctypes.dlopen": "loading native code with ctypes",
    "ctypes.dlsym": "native symbol lookup with ctypes",
    "ctypes.cdata": "raw memory access with ctypes",
    "subprocess.Popen": "starting a process",
    "os.system": "starting a process",
    "os.exec": "replacing the process",
    "os.posix_spawn": "starting a process",
    "os.fork": "forking",
    "os.forkpty": "forking",
    "socket.connect": "network access",
    "socket.bind": "network access",
    "socket.getaddrinfo": "network access (DNS)",
    "os.kill": "sending signals",
    "os.killpg": "sending signals",
    "signal.pthread_kill": "sending signals",
    "sys.addaudithook": "installing another audit hook",
}


class AuditGuard:
    def __init__(self, candidate_file: str, job_dir: str) -> None:
        self.candidate_file = candidate_file
        self.job_dir = os.path.realpath(job_dir)
        # Jobs live at <jobs root>/<job>/<role>: everything else under the root is another
        # process's (this job's reference, other jobs).
        self.jobs_root = os.path.dirname(os.path.dirname(self.job_dir))
        self.events: list[dict[str, Any]] = []
        self.active = False
        self._stdlib = tuple(
            os.path.realpath(p) + os.sep for p in {sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"]}
        )
        self._trusted_roots = tuple(
            os.path.realpath(p) + os.sep
            for p in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages(),
                      os.path.dirname(os.path.abspath(__file__))}
        )
        self._harness_dir = os.path.dirname(os.path.abspath(__file__))
        self._getframe = sys._getframe  # bound now: the hook itself may walk frames
        self._own_proc = f"/proc/{os.getpid()}"
        self._in_hook = False

    def install(self) -> None:
        sys.addaudithook(self._hook)
        self._watch_threads()

    def _watch_threads(self) -> None:
        """Python has no audit event for new threads; wrap every function that starts one."""
        import _thread
        import threading

        for module in (_thread, threading):
            for name in ("start_new_thread", "_start_new_thread", "start_joinable_thread", "_start_joinable_thread"):
                original = getattr(module, name, None)
                if original is not None:
                    setattr(module, name, self._guard_thread_start(original))

    def _guard_thread_start(self, original: Any) -> Any:
        guard = self

        def start(*args: Any, **kwargs: Any) -> Any:
            if guard.active and not guard._in_hook:
                guard._in_hook = True
                try:
                    caller = guard._untrusted_caller()
                finally:
                    guard._in_hook = False
                if caller is not None:
                    reason = "starting a thread (work must not continue after forward returns)"
                    guard.events.append({"event": "thread.start", "reason": reason, "detail": caller})
                    raise PermissionError(f"Referee sandbox: {reason} is not allowed")
            return original(*args, **kwargs)

        return start

    def _untrusted(self, filename: str) -> bool:
        if filename == self.candidate_file:
            return True
        if not os.path.isabs(filename):
            return not filename.startswith("<frozen")  # <string>: exec'd code
        return not os.path.realpath(filename).startswith(self._trusted_roots + self._stdlib)

    def _direct_caller_untrusted(self) -> str | None:
        frame: FrameType | None = self._getframe(2)
        while frame is not None and frame.f_code.co_filename.endswith(_LOOKED_THROUGH):
            frame = frame.f_back
        if frame is not None and self._untrusted(frame.f_code.co_filename):
            return frame.f_code.co_filename
        return None

    def _untrusted_caller(self) -> str | None:
        """The file of the innermost frame outside the standard library, if that is untrusted code."""
        frame: FrameType | None = self._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            in_stdlib = filename.startswith("<frozen") or (
                os.path.isabs(filename) and os.path.realpath(filename).startswith(self._stdlib) and "-packages" not in filename
            )
            if not in_stdlib:
                return filename if self._untrusted(filename) else None
            frame = frame.f_back
        return None

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.active or self._in_hook:
            return
        reason = FORBIDDEN_EVENTS.get(event)
        if reason is None and event == "open":
            reason = self._open_reason(args)
        if reason is None:
            return
        self._in_hook = True
        try:
            caller = self._direct_caller_untrusted() if event in DIRECT_CALLER_EVENTS else self._untrusted_caller()
        finally:
            self._in_hook = False
        if caller is None:
            return
        self.events.append({"event": event, "reason": reason, "detail": _short(args)})
        raise PermissionError(f"Referee sandbox: {reason} is not allowed ({event})")

    def _open_reason(self, args: tuple[Any, ...]) -> str | None:
        path, mode = args[0], args[1] if len(args) > 1 else "r"
        if not isinstance(path, (str, bytes)):
            return None  # an fd
        path = os.fsdecode(path)
        real = os.path.realpath(path)
        if real.startswith(self.job_dir + os.sep) or real == self.job_dir:
            return None
        writing = isinstance(mode, str) and any(flag in mode for flag in "wax+")
        if isinstance(mode, int):
            writing = bool(mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND))
        if writing:
            return "writing outside the job directory"
        if real.startswith(self.jobs_root + os.sep):
            return "reading the reference's or another job's files"
        if real.startswith(self._harness_dir + os.sep):
            return "reading the harness"
        if real.startswith(("/etc/", "/root", "/home", "/var/")) or real.endswith("/mem"):
            return "reading system files"
        # Another process's /proc entries (the worker's command line and environment, the reference's
        # memory maps); its own (/proc/self resolves to them) are fine.
        if real.startswith("/proc/") and real.split("/")[2].isdigit() and not (real + "/").startswith(self._own_proc + "/"):
            return "reading another process's /proc entries"
        return None


def _short(args: tuple[Any, ...]) -> str:
    text = repr(args)
    return text if len(text) <= 300 else text[:300] + "…"
