"""A candidate that first switches off its in-process guards the way an attacker would, then tries to
reach everything around it. Shared by tests/security/test_confinement.py (CPU, every backend) and
tests/gpu/test_confinement_gpu.py (the GPU host, under `unshare`).

The guards are switched off three ways, each seen in real attacks: the audit hook's policy table is
cleared in place (same dict, empty), the guard's class is patched so no open is refused, and the
attack itself is compiled under torch's file name (the hook trusts library code); the original
`start_new_thread` is also taken from the guard's closure. After that only the kernel stands in
the way. Each attempt is recorded as {"ok": ...} or {"error": errno name, "guard": bool}: `guard`
says the refusal came from the interpreter (a "Referee sandbox" PermissionError without errno),
which the tests do not accept as containment.

The attack prints one line, `CONFINE-PROBE {json}`, on stdout, and then the module defines an
honest ModelNew.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..tiny_problem import CANDIDATE

MARKER = "CONFINE-PROBE "

ATTACK = r"""
import ctypes, errno, json, os, shutil, signal, socket, subprocess, sys, time
out = {}


def attempt(name, fn):
    try:
        out[name] = {"ok": fn()}
    except OSError as exc:
        guard = exc.errno is None and "Referee sandbox" in str(exc)
        out[name] = {"error": errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__,
                     "guard": guard}
    except Exception as exc:
        out[name] = {"error": type(exc).__name__, "guard": "Referee sandbox" in str(exc), "detail": str(exc)[:200]}


def read(path):
    with open(path, "rb") as handle:
        return len(handle.read())


def write(path):
    with open(path, "w") as handle:
        handle.write("planted by another job")
    return path


def write_cache(cache):
    os.makedirs(cache, exist_ok=True)
    return write(os.path.join(cache, "planted.json"))


def exec_written():
    mine = os.path.join(os.getcwd(), "mytrue")
    shutil.copyfile(os.path.realpath(sys.executable), mine)  # a binary present under every backend
    os.chmod(mine, 0o755)
    return subprocess.run([mine, "-S", "-c", "pass"], timeout=30).returncode


def vm_read(pid):
    libc = ctypes.CDLL(None, use_errno=True)

    class IOVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    buf = ctypes.create_string_buffer(16)
    local, remote = IOVec(ctypes.addressof(buf), 16), IOVec(id(sys), 16)  # forked: the same layout
    got = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if got < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return got


cwd = os.getcwd()
job = os.path.dirname(cwd)
jobs = os.path.dirname(job)
victim = CFG.get("victim_job")
if victim and CFG.get("wait_victim"):
    deadline = time.monotonic() + 20  # stat is not refused: wait until its source is written
    while time.monotonic() < deadline and not os.path.exists(os.path.join(victim, "candidate", "candidate.py")):
        time.sleep(0.05)
    out["victim_seen"] = os.path.exists(os.path.join(victim, "candidate", "candidate.py"))
out["pid"], out["ppid"] = os.getpid(), os.getppid()
attempt("list_jobs", lambda: sorted(os.listdir(jobs)))
if victim:
    attempt("read_victim_source", lambda: read(os.path.join(victim, "candidate", "candidate.py")))
    attempt("write_victim_dir", lambda: write(os.path.join(victim, "candidate", "planted.py")))
    attempt("write_victim_triton_cache", lambda: write_cache(os.path.join(victim, "candidate", "triton-cache-candidate")))
attempt("read_reference_source", lambda: read(os.path.join(job, "reference", "problem.py")))
attempt("write_reference_dir", lambda: write(os.path.join(job, "reference", "planted.py")))
attempt("read_worker_file", lambda: read(CFG["worker_file"]))
attempt("read_parent_cmdline", lambda: read(f"/proc/{os.getppid()}/cmdline"))
attempt("read_parent_environ", lambda: read(f"/proc/{os.getppid()}/environ"))
attempt("read_parent_mem_maps", lambda: read(f"/proc/{os.getppid()}/maps"))
attempt("read_pid1_status", lambda: read("/proc/1/status"))
attempt("list_proc", lambda: [p for p in os.listdir("/proc") if p.isdigit()])
attempt("process_vm_readv_parent", lambda: vm_read(os.getppid()))
attempt("signal_parent", lambda: os.kill(os.getppid(), signal.SIGCONT))
attempt("signal_worker", lambda: os.kill(CFG["worker_pid"], signal.SIGCONT))
accepted = []
try:
    own = {int(tid) for tid in os.listdir("/proc/self/task")}  # its own threads answer, of course
except OSError:
    own = {os.getpid()}
for pid in range(1, max(4096, os.getpid() + 1024)):  # signal 0: the same permission check, no effect
    if pid in own or pid == os.getpid():
        continue
    try:
        os.kill(pid, 0)
        accepted.append(pid)
    except OSError:
        pass
out["signal_scan_accepted"] = accepted[:64]
attempt("exec_written_binary", exec_written)
attempt("exec_system_binary", lambda: subprocess.run([sys.executable, "-S", "-c", "pass"], timeout=30).returncode)
attempt("socket_inet", lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close())
attempt("socket_unix", lambda: socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).close())
attempt("write_own_dir", lambda: write(os.path.join(cwd, "own.txt")))  # the control: its own place works
print("CONFINE-PROBE " + json.dumps(out), flush=True)
"""

PRELUDE = """
import sys as _sys
import torch as _torch

_audit = _sys.modules.get("harness.audit")
_bypassed = []
if _audit is not None:
    try:
        _audit.FORBIDDEN_EVENTS.clear()  # the policy table, emptied in place
        _bypassed.append("policy_table")
    except Exception:
        pass
    try:
        _audit.AuditGuard._open_reason = lambda self, args: None
        _bypassed.append("open_check")
    except Exception:
        pass
try:
    import _thread as _t

    _cells = [c.cell_contents for c in (_t.start_new_thread.__closure__ or ())]
    _original = next(c for c in _cells if callable(c) and getattr(c, "__name__", "") == "start_new_thread")
    _bypassed.append("original_start_new_thread")
except Exception:
    pass
print("BYPASSED", _bypassed, flush=True)
exec(compile(ATTACK_SOURCE, _torch.__file__, "exec"), {"__name__": "torch._probe", "CFG": CFG})
"""

# Attempts that must fail under every confining backend; the value is the errnos accepted there.
REFUSED = {
    "list_jobs": {"EACCES", "ENOENT"},
    "read_victim_source": {"EACCES", "ENOENT"},
    "write_victim_dir": {"EACCES", "ENOENT"},
    "write_victim_triton_cache": {"EACCES", "ENOENT"},
    "read_reference_source": {"EACCES", "ENOENT"},
    "write_reference_dir": {"EACCES", "ENOENT"},
    "read_worker_file": {"EACCES", "ENOENT"},
    "read_parent_cmdline": {"EACCES"},
    "read_parent_environ": {"EACCES"},
    "read_parent_mem_maps": {"EACCES"},
    "read_pid1_status": {"EACCES"},
    "list_proc": {"EACCES"},
    "process_vm_readv_parent": {"EPERM"},
    "signal_parent": {"EPERM"},
    "signal_worker": {"EPERM", "ESRCH"},
    "exec_written_binary": {"EACCES"},
    "exec_system_binary": {"EACCES"},
    "socket_inet": {"EPERM"},
    "socket_unix": {"EPERM"},
}
# In the warm pool the other job, the reference's directory and the jobs directory exist in the same
# file system: the kernel must say EACCES, not "not there".
SAME_FILE_SYSTEM = (
    "list_jobs",
    "read_victim_source",
    "write_victim_dir",
    "write_victim_triton_cache",
    "read_reference_source",
    "write_reference_dir",
)


def attacker_source(config: dict[str, Any]) -> str:
    prelude = (
        f"CFG = {json.dumps(config)!r}\nimport json as _json\nCFG = _json.loads(CFG)\nATTACK_SOURCE = {ATTACK!r}\n" + PRELUDE
    )
    return CANDIDATE.replace("import torch\n", prelude + "\nimport torch\n", 1)


def probe_report(stdout: str) -> dict[str, Any]:
    match = re.search(rf"^{MARKER}(.*)$", stdout, re.MULTILINE)
    assert match, f"the attacker printed no report: {stdout[-2000:]}"
    return json.loads(match.group(1))


def uncontained(report: dict[str, Any], same_file_system: bool, allowed: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Every attempt the kernel did not refuse as expected (empty when all were contained); `allowed`:
    attempts this backend lets through on purpose (stated where it is passed)."""
    problems: dict[str, Any] = {}
    for name, errnos in REFUSED.items():
        if name not in report or (name in allowed and "ok" in report[name]):
            continue
        result = report[name]
        wanted = {"EACCES"} if same_file_system and name in SAME_FILE_SYSTEM else errnos
        if "error" not in result or result.get("guard") or result["error"] not in wanted:
            problems[name] = result
    if report.get("signal_scan_accepted"):
        problems["signal_scan_accepted"] = report["signal_scan_accepted"]
    if "ok" not in report.get("write_own_dir", {}):
        problems["write_own_dir"] = report.get("write_own_dir")
    return problems
