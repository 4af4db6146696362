"""Starts harness processes inside a container for a host that cannot pass them pipes directly.

`python -I -S launcher.py CONTROL_DIR [--max-jobs N]` listens on CONTROL_DIR/launch.sock (the
directory is bind-mounted from the host). The host connects and sends one request: a
length-prefixed JSON object `{"argv", "env", "cwd", "files", "dirs"}` (or `{"ping": true}`, answered when idle) whose first bytes carry, as
SCM_RIGHTS, the child's channel fds (in `argv` as "{fd0}", "{fd1}", ...) followed by its stdout and
stderr. The launcher writes the files into the container's private tmpfs, starts the child in its
own session with exactly those fds, and answers `{"exit": code}` when it ends. If the connection
closes first (the host killed its side), the child is killed.

One job at a time. After each, every other process in the container is killed and /tmp emptied,
so nothing carries over to the next job. A job that did not end cleanly, left processes behind, or
was abandoned taints the container: the launcher writes CONTROL_DIR/tainted and exits, and the host
replaces the container. Only connections from outside the container's pid namespace are served
(their SO_PEERCRED pid reads 0 here), so a candidate cannot ask the launcher for anything.

Standard library only, and self-contained: the warm-pool zygote may speak the same protocol.
"""

from __future__ import annotations

import base64
import json
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time

HEADER = struct.Struct("!I")
MAX_REQUEST = 8 << 20
MAX_FDS = 16


def recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _flags, _addr = socket.recv_fds(conn, HEADER.size, MAX_FDS)
    while len(head) < HEADER.size:
        more = conn.recv(HEADER.size - len(head))
        if not more:
            raise ConnectionError("closed inside the header")
        head += more
    (length,) = HEADER.unpack(head)
    if length > MAX_REQUEST:
        raise ValueError(f"request of {length} bytes")
    body = bytearray()
    while len(body) < length:
        chunk = conn.recv(min(1 << 20, length - len(body)))
        if not chunk:
            raise ConnectionError("closed inside the request")
        body += chunk
    return json.loads(body), fds


def send_message(conn: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    body = json.dumps(message).encode()
    socket.send_fds(conn, [HEADER.pack(len(body))], fds or [])
    conn.sendall(body)


def peer_pid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


def sweep() -> int:
    """Kill every process here but this one and pid 1 (docker's init); return how many there were."""
    me, killed = os.getpid(), 0
    for _ in range(20):
        others = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        others = [p for p in others if _is_alive(p)]
        if not others:
            break
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        _reap()
        time.sleep(0.02)
    return killed


def _is_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] != b"Z"
    except OSError:
        return False


def _reap() -> None:
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def clear_tmp(roots: list[str]) -> None:
    for root in roots:
        for entry in os.listdir(root) if os.path.isdir(root) else []:
            path = os.path.join(root, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                try:
                    os.unlink(path)
                except OSError:
                    pass


def run_job(conn: socket.socket, request: dict, fds: list[int]) -> tuple[int | None, str | None]:
    """Start the child and wait; returns (exit code or None, fault or None)."""
    child_fds, stdout, stderr = fds[:-2], fds[-2], fds[-1]
    cwd = request["cwd"]
    os.makedirs(cwd, mode=0o700, exist_ok=True)
    for path in request.get("dirs", []):
        os.makedirs(path, mode=0o700, exist_ok=True)
    for path, data in request.get("files", {}).items():
        with open(path, "wb") as handle:
            handle.write(base64.b64decode(data))
    argv = [arg.format(**{f"fd{i}": fd for i, fd in enumerate(child_fds)}) if "{fd" in arg else arg for arg in request["argv"]]
    env = {**request.get("env", {}), **{k: v for k, v in os.environ.items() if k in ("PATH", "LD_LIBRARY_PATH")}}
    try:
        child = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            pass_fds=child_fds,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    except OSError as exc:
        os.write(stderr, f"launcher: cannot start {argv[0]}: {exc}\n".encode())
        return 127, "start failed"
    finally:
        for fd in fds:
            os.close(fd)
    pidfd = os.pidfd_open(child.pid)
    with selectors.DefaultSelector() as selector:
        selector.register(conn, selectors.EVENT_READ)
        selector.register(pidfd, selectors.EVENT_READ)
        while True:
            ready = {key.fileobj for key, _ in selector.select()}
            if pidfd in ready:
                code = child.wait()
                os.close(pidfd)
                return code, None if code == 0 else f"exit status {code}"
            if conn in ready and not conn.recv(1, socket.MSG_PEEK):
                # The host closes its side right after the harness's last answer; a child that then
                # exits cleanly on its own was not abandoned.
                try:
                    code = child.wait(timeout=2)
                    os.close(pidfd)
                    return code, None if code == 0 else f"exit status {code}"
                except subprocess.TimeoutExpired:
                    pass
                try:
                    os.killpg(child.pid, signal.SIGKILL)
                except OSError:
                    pass
                child.wait()
                os.close(pidfd)
                return None, "abandoned by the host"


def serve(control: str, max_jobs: int) -> int:
    path = os.path.join(control, "launch.sock")
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(4)
    own_socket = os.stat(path).st_ino
    tmp_roots = sorted({"/tmp", os.environ.get("REFEREE_CONTAINER_TMP", "/tmp")})
    jobs = 0
    while jobs < max_jobs:
        conn, _ = server.accept()
        with conn:
            if peer_pid(conn) != 0:  # from inside this container: never a host request
                continue
            try:
                request, fds = recv_request(conn)
            except (OSError, ValueError) as exc:
                print(f"launcher: bad request: {exc}", file=sys.stderr)
                continue
            if request.get("ping"):  # the host asks before reuse: answered only when idle
                for fd in fds:
                    os.close(fd)
                try:
                    send_message(conn, {"idle": True})
                except OSError:
                    pass
                continue
            jobs += 1
            code, fault = run_job(conn, request, fds)
            leftovers = sweep()
            if leftovers and fault is None:
                fault = f"{leftovers} processes left behind"
            # The control directory is writable from inside: a job that replaced the socket (to
            # impersonate the launcher) or added files taints the container.
            try:
                tampered = os.stat(path).st_ino != own_socket or sorted(os.listdir(control)) != ["launch.sock"]
            except OSError:
                tampered = True
            if tampered and fault is None:
                fault = "the control directory was changed"
            last = fault is not None or jobs >= max_jobs
            if last:  # before answering: the host must not hand this container out again
                with open(os.path.join(control, "tainted" if fault else "retired"), "w") as handle:
                    handle.write(fault or "")
            clear_tmp(tmp_roots)
            try:
                send_message(conn, {"exit": code, "fault": fault})
            except OSError:
                pass
            if fault:
                return 1
    return 0


def main(args: list[str]) -> int:
    control = args[0]
    max_jobs = int(args[args.index("--max-jobs") + 1]) if "--max-jobs" in args else 1 << 30
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return serve(control, max_jobs)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
