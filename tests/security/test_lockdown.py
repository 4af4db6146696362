"""sandbox/harness/lockdown.py on its own, in a forked child of the test process: what it refuses and,
as much to the point, what it must keep working for the harness (descriptor passing over an
already-open Unix socket, memfds and mmap for the shared-memory data plane, gcc for Triton's
launchers, its own directory)."""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from triton_referee.sandbox.harness import lockdown

SUPPORT = lockdown.probe()


def _in_locked_down_child(own: Path, checks: dict[str, Callable[[], Any]]) -> dict[str, Any]:
    """Fork, lock the child down with `own` as its directory, run each check there; {name: ok or errno name}."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        results: dict[str, Any] = {}
        try:
            results["layers"] = lockdown.apply(lockdown.default_policy(str(own)), SUPPORT)
            for name, check in checks.items():
                try:
                    results[name] = {"ok": check()}
                except OSError as exc:
                    results[name] = {"error": errno.errorcode.get(exc.errno or 0, str(exc))}
        except BaseException as exc:
            results["crashed"] = repr(exc)
        os.write(write_end, json.dumps(results).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _pass_a_memfd() -> str:
    """A memfd sent with SCM_RIGHTS over a socketpair made before... and after the lockdown, mapped."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fd = os.memfd_create("data", os.MFD_CLOEXEC)
    os.write(fd, b"shared bytes")
    socket.send_fds(left, [b"x"], [fd])
    _, fds, _, _ = socket.recv_fds(right, 16, 1)
    with mmap.mmap(fds[0], 12, prot=mmap.PROT_READ) as view:
        return view[:].decode()


def _new_user_namespace() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER (os.unshare is Python 3.12+)
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return 0


def test_lockdown_refuses_the_reach_and_keeps_the_harness_working(tmp_path: Path) -> None:
    assert SUPPORT.landlock_abi >= 6 and SUPPORT.seccomp, SUPPORT  # this machine: ABI 7 (see the task's facts)
    own, other = tmp_path / "job-a" / "candidate", tmp_path / "job-b" / "candidate"
    for place in (own, other):
        place.mkdir(parents=True)
    (other / "candidate.py").write_text("secret")
    binary = own / "mine"
    shutil.copyfile(os.path.realpath(sys.executable), binary)
    binary.chmod(0o755)
    (own / "k.c").write_text("int k(void) { return 7; }\n")
    parent = os.getpid()
    results = _in_locked_down_child(
        own,
        {
            "write_own": lambda: (own / "out.txt").write_text("mine"),
            "read_other_job": lambda: (other / "candidate.py").read_text(),
            "write_other_job": lambda: (other / "planted.py").write_text("x"),
            "list_parent_dir": lambda: os.listdir(tmp_path),
            "read_runtime": lambda: len(Path(lockdown.__file__).read_bytes()),
            "read_own_proc": lambda: len(Path("/proc/self/status").read_bytes()),
            "read_parent_proc": lambda: Path(f"/proc/{parent}/cmdline").read_bytes().decode(errors="replace"),
            "signal_parent": lambda: os.kill(parent, 0),
            "exec_written": lambda: subprocess.run([str(binary), "-S", "-c", "pass"], timeout=30).returncode,
            "gcc": lambda: (
                subprocess.run(
                    ["gcc", "-shared", "-fPIC", "k.c", "-o", "k.so"], cwd=own, timeout=60, env={**os.environ, "TMPDIR": str(own)}
                ).returncode
            ),
            "socket_inet": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(),
            "socket_unix": lambda: socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).close(),
            "memfd_over_socketpair": _pass_a_memfd,
            "new_user_namespace": _new_user_namespace,
        },
    )
    assert "crashed" not in results, results.get("crashed")
    assert results["layers"] == SUPPORT.layers()
    refused = {
        "read_other_job": "EACCES",
        "write_other_job": "EACCES",
        "list_parent_dir": "EACCES",
        "read_parent_proc": "EACCES",
        "signal_parent": "EPERM",
        "exec_written": "EACCES",
        "socket_inet": "EPERM",
        "socket_unix": "EPERM",
        "new_user_namespace": "EPERM",
    }
    assert {name: results[name] for name in refused} == {name: {"error": code} for name, code in refused.items()}
    assert results["memfd_over_socketpair"] == {"ok": "shared bytes"}
    assert results["gcc"] == {"ok": 0} and (own / "k.so").exists()  # Triton's launcher build runs gcc
    for name in ("write_own", "read_runtime", "read_own_proc"):
        assert "ok" in results[name], (name, results[name])
    assert (other / "candidate.py").read_text() == "secret" and not (other / "planted.py").exists()


def test_seccomp_program_is_well_formed() -> None:
    """Every jump lands inside the program and it ends in a return (the kernel would refuse it
    otherwise; this names the fault)."""
    for machine in lockdown.SYSCALLS:
        program = lockdown.seccomp_program(machine)
        count = len(program) // 8
        for index in range(count):
            code, jt, jf, _k = __import__("struct").unpack_from("=HBBI", program, index * 8)
            if code in (lockdown.BPF_JEQ_K, lockdown.BPF_JGE_K, lockdown.BPF_JSET_K):
                assert index + 1 + max(jt, jf) < count, (machine, index)
        assert program[-8:-6] == lockdown.BPF_RET_K.to_bytes(2, "little")


@pytest.mark.parametrize("layer", ["landlock", "seccomp"])
def test_each_layer_alone_applies(layer: str, tmp_path: Path) -> None:
    """A kernel with only one of the two (or a container profile that hides one) still gets the other."""
    support = lockdown.Support(SUPPORT.landlock_abi if layer == "landlock" else 0, layer == "seccomp")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            lockdown.apply(lockdown.default_policy(str(tmp_path)), support)
            try:
                socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()
                opened = "opened"
            except OSError as exc:
                opened = errno.errorcode[exc.errno or 0]
            try:
                os.listdir(tmp_path.parent)
                listed = "listed"
            except OSError as exc:
                listed = errno.errorcode[exc.errno or 0]
            os.write(write_end, json.dumps([opened, listed]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        opened, listed = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert (opened, listed) == (("opened", "EACCES") if layer == "landlock" else ("EPERM", "listed"))
