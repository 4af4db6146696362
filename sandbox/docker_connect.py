"""The host side of a harness process in a container: `python -I -S docker_connect.py SOCKET SPEC_JSON`.

`HarnessProcess` starts this in place of the harness, with the channel pipes it would have given
the harness. It connects to the container's launcher (`sandbox/harness/launcher.py`), hands over
those fds and its own stdout and stderr with SCM_RIGHTS, closes its copies (so the channel and the
output pipes end when the harness does), and waits: it exits with the harness's exit code. Killing
it (the wall-clock kill of its process group) closes the connection, and the launcher then kills
the harness. Standard library only; no project imports.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
import time

HEADER = struct.Struct("!I")
MAX_FILE = 16 << 20


def connect(path: str, timeout: float) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def snapshot(workdir: str) -> tuple[dict[str, str], list[str]]:
    """The files the worker put in the work directory before start, for the container's tmpfs."""
    files, dirs = {}, []
    for entry in os.scandir(workdir):
        if entry.is_file(follow_symlinks=False) and entry.stat().st_size <= MAX_FILE:
            with open(entry.path, "rb") as handle:
                files[entry.path] = base64.b64encode(handle.read()).decode()
        elif entry.is_dir(follow_symlinks=False):
            dirs.append(entry.path)
    return files, dirs


def main(args: list[str]) -> int:
    path, spec = args[0], json.loads(args[1])
    workdir = os.getcwd()
    files, dirs = snapshot(workdir)
    env = {k: v for k, v in os.environ.items() if k not in ("PATH", "LD_LIBRARY_PATH")}
    env.update(spec.get("env", {}))
    request = {"argv": spec["argv"], "env": env, "cwd": workdir, "files": files, "dirs": dirs}
    fds = [*spec["fds"], 1, 2]
    sock = connect(path, spec.get("connect_timeout", 30.0))
    body = json.dumps(request).encode()
    socket.send_fds(sock, [HEADER.pack(len(body))], fds)
    sock.sendall(body)
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in spec["fds"]:
        os.close(fd)
    os.dup2(null, 1)
    os.dup2(null, 2)  # from here on only the harness holds the output pipes
    reply = bytearray()
    while chunk := sock.recv(65536):
        reply += chunk
    if len(reply) < HEADER.size:
        return 125  # the launcher went away without an answer
    message = json.loads(bytes(reply[HEADER.size : HEADER.size + HEADER.unpack(reply[: HEADER.size])[0]]))
    code = message.get("exit")
    if code is None:
        return 125
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
