"""Plain Python attack programs run straight through a backend's command line, without the harness
and its audit hook: what the operating-system layer alone still contains.

Each probe is the source of a `python -I -c` program. It reads its parameters from REFEREE_PROBE
(JSON) and prints one JSON object on stdout: for every attempt, either {"ok": ...} (it worked) or
{"error": "ErrnoName"} (refused).

They check a backend on a host: the security tests (tests/security) run them on every backend, and
bench/gpu_isolation.py on a GPU host under `unshare`. Nothing in the service runs them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from triton_referee.sandbox.isolation import Isolation, start_watchdog
from triton_referee.sandbox.launch import HARNESS_PARENT, child_environment

ESCAPES = r"""
import errno, json, os, signal, socket, sys
cfg = json.loads(os.environ["REFEREE_PROBE"])
out = {}

def attempt(name, fn):
    try:
        out[name] = {"ok": fn()}
    except OSError as exc:
        out[name] = {"error": errno.errorcode.get(exc.errno, str(exc.errno)) if exc.errno else type(exc).__name__}
    except Exception as exc:
        out[name] = {"error": type(exc).__name__}

def connect(host, port):
    with socket.create_connection((host, port), timeout=3) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).decode(errors="replace")

def read(path):
    with open(path, "rb") as handle:
        return handle.read(200).decode(errors="replace")

def write(path):
    with open(path, "w") as handle:
        handle.write("escaped")
    return path

attempt("tcp_loopback_service", lambda: connect("127.0.0.1", cfg["port"]))
attempt("tcp_outside", lambda: connect(cfg["outside"], 53))
attempt("dns", lambda: socket.getaddrinfo("pypi.org", 443)[0][4][0])
attempt("read_shadow", lambda: read("/etc/shadow"))
attempt("read_other_job", lambda: read(cfg["other_job_file"]))
attempt("read_worker_file", lambda: read(cfg["worker_file"]))
attempt("write_outside_tmp", lambda: write(cfg["outside_file"]))
attempt("write_repo", lambda: write(cfg["repo_file"]))
attempt("write_etc", lambda: write("/etc/referee-escape"))
attempt("write_workdir", lambda: write(os.path.join(os.getcwd(), "inside.txt")))
attempt("kill_host_process", lambda: os.kill(cfg["sentinel_pid"], signal.SIGKILL))
attempt("worker_mem", lambda: read(f"/proc/{cfg['worker_pid']}/mem"))
attempt("worker_environ", lambda: read(f"/proc/{cfg['worker_pid']}/environ"))
def find_secrets():
    # By name: the values would be in this probe's own REFEREE_PROBE.
    seen = [k for k in cfg["secrets"] if k in os.environ]
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                data = handle.read().decode(errors="replace")
        except OSError:
            continue
        seen += [k for k in cfg["secrets"] if k + "=" in data]
    if seen:
        return sorted(set(seen))
    raise OSError(errno.ENOENT, "no secret visible")
attempt("secrets", find_secrets)
attempt("ctypes_self_mem", lambda: __import__("ctypes").string_at(id(out), 8) and "own memory readable")
print(json.dumps(out), flush=True)
# Last, since they may take this very process down (inside a pid namespace the parent's group can
# read as 0, and killpg(0) is our own group).
if not cfg.get("spare_parent"):  # under `process` the parent is the test itself
    out = {}
    attempt("kill_parent", lambda: os.kill(os.getppid(), signal.SIGKILL) or os.getppid())
    attempt("kill_parent_group", lambda: os.killpg(os.getpgid(os.getppid()), signal.SIGKILL))
    print(json.dumps(out), flush=True)
"""

FORK_BOMB = r"""
import json, os, sys, time
count = 0
children = []
while count < 20000:
    try:
        pid = os.fork()
    except OSError as exc:
        print(json.dumps({"forked": count, "error": exc.errno}), flush=True)
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    count += 1
else:
    print(json.dumps({"forked": count, "error": None}), flush=True)
os._exit(0)
"""

MEMORY_BOMB = r"""
import json, sys
chunks = []
for i in range(400):  # up to 25 GiB, 64 MiB at a time, every page touched
    chunks.append(bytearray(b"x" * (64 << 20)))
    print(json.dumps({"mib": (i + 1) * 64}), flush=True)
"""

DISK_FILL = r"""
import errno, json, os
written = 0
result = {}
try:
    with open("fill.bin", "wb") as handle:
        while written < (8 << 30):
            handle.write(b"\0" * (1 << 20))
            handle.flush()
            written += 1 << 20
except OSError as exc:
    result["file_error"] = errno.errorcode.get(exc.errno)
result["file_mib"] = written >> 20
# Many small files: bounded by the tmpfs, not by the per-file limit.
total = 0
try:
    for i in range(100000):
        with open(f"small{i}.bin", "wb") as handle:
            handle.write(b"\0" * (4 << 20))
        total += 4
except OSError as exc:
    result["many_error"] = errno.errorcode.get(exc.errno)
result["many_mib"] = total
print(json.dumps(result), flush=True)
"""

ENDLESS = r"""
import os, sys, time
# A grandchild in its own session, then a busy loop: the whole tree must go when killed.
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        while True:
            time.sleep(0.1)
    os._exit(0)
print("looping", flush=True)
while True:
    pass
"""


def run_probe(
    isolation: Isolation,
    source: str,
    workdir: Path,
    config: dict[str, Any] | None = None,
    timeout: float = 60,
    kill_after: float | None = None,
    device: str = "cpu",
) -> tuple[int | None, str, str]:
    """Run `source` confined the way HarnessProcess runs the harness (same argv shape, fds, clean
    environment, own session); return (exit code or None when killed by us, stdout, stderr)."""
    pipes = [os.pipe() for _ in range(3)]
    child_fds = [pipes[0][0], pipes[1][1], pipes[2][0]]
    argv = [
        sys.executable,
        "-I",
        "-c",
        source,
        str(HARNESS_PARENT),
        "--role",
        "candidate",
        "--read-fd",
        str(child_fds[0]),
        "--write-fd",
        str(child_fds[1]),
        "--key-fd",
        str(child_fds[2]),
    ]
    env = child_environment(workdir, "candidate", device)
    env["REFEREE_PROBE"] = json.dumps(config or {})
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    command = isolation.command(argv, workdir, device)
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        pass_fds=child_fds,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    for fd in child_fds:
        os.close(fd)
    watchdog = None
    if not getattr(isolation, "enforces_memory", False):
        watchdog = start_watchdog(process.pid, isolation)
    try:
        stdout, stderr = process.communicate(timeout=kill_after or timeout)
        code: int | None = process.returncode
    except subprocess.TimeoutExpired:
        if kill_after is None:
            raise
        os.killpg(process.pid, 9)  # what HarnessProcess.kill does at the wall-clock limit
        stdout, stderr = process.communicate(timeout=30)
        code = None
    finally:
        if watchdog is not None:
            watchdog.stop()
        for fd in (pipes[0][1], pipes[1][0], pipes[2][1]):
            os.close(fd)
        release = getattr(isolation, "release", None)
        if release is not None:
            release(workdir)
    return code, stdout.decode(errors="replace"), stderr.decode(errors="replace")


def start_loopback_service() -> int:
    """A TCP service on the host's loopback (where Redis would be) that answers every connection;
    returns its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            with conn:
                conn.recv(64)
                conn.sendall(b"+PONG\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1]
