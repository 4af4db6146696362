"""Runs at the isolation boundary, before the harness: `python -I confine.py SPEC_JSON -- ARGV...`.

Standard library only, run as a script (it imports nothing of the project). It is started by
`unshare` inside fresh namespaces (or directly, for limits only) and, in order:

1. when `spec["root"]` is set, builds a new root file system out of read-only bind mounts of the
   runtime, size-limited tmpfs work and /tmp directories and a minimal /dev, pivots into it and
   detaches the old root, so nothing else of the host (other jobs, the worker's files, /etc) is
   reachable;
2. sets resource limits (CPU time, file size, processes) and makes itself the OOM killer's first
   choice;
3. drops privileges: to `spec["uid"]` when it runs as real root, and in every case empties the
   capability bounding set and sets no_new_privs;
4. forks: this process stays as a minimal init (pid 1 of the namespace reaps orphans and exits with
   the harness's status, which tears the namespace and every leftover process down) and the child
   execs ARGV.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME, MS_STRICTATIME = 1024, 2048, 1 << 21, 1 << 24
MNT_DETACH = 2
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_SET_PDEATHSIG = 38, 24, 1
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203}
# statvfs flags that a bind remount must repeat: in a user namespace they are locked, and leaving
# one out makes the remount fail with EPERM.
_LOCKED_FLAGS = (
    (os.ST_NOSUID, MS_NOSUID),
    (os.ST_NODEV, MS_NODEV),
    (os.ST_NOEXEC, MS_NOEXEC),
    (getattr(os, "ST_NOATIME", 1024), MS_NOATIME),
    (getattr(os, "ST_NODIRATIME", 2048), MS_NODIRATIME),
    (getattr(os, "ST_RELATIME", 4096), MS_RELATIME),
)

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source and source.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags), data and data.encode()
        ),
        f"mount {source} on {target}",
    )


def _remount_readonly(target: str) -> None:
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    vfs = os.statvfs(target).f_flag
    for st_flag, ms_flag in _LOCKED_FLAGS:
        if vfs & st_flag:
            flags |= ms_flag
    mount(None, target, None, flags)


def _makedirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def _pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(f"pivot_root: unknown syscall number on {os.uname().machine}")
    _check(_libc.syscall(ctypes.c_long(number), new_root.encode(), put_old.encode()), "pivot_root")


def build_root(root: dict, uid: int, gid: int) -> None:
    """A new root of read-only binds, tmpfs and device nodes; the old root is detached."""
    os.umask(0o022)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Stage on a tmpfs over /tmp, then pivot so the host's tree is reachable under /oldroot only
    # while binding (the tmpfs over /tmp moves away with the pivot, so /oldroot/tmp is the host's).
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    os.chdir("/tmp")
    for name in ("newroot", "oldroot"):
        os.mkdir(name)
    mount("tmpfs", "newroot", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    _pivot_root("/tmp", "/tmp/oldroot")
    os.chdir("/")
    new, old = "/newroot", "/oldroot"
    owner = f"uid={uid},gid={gid}"
    for kind, *args in root["steps"]:
        if kind == "ro" or kind == "dev":
            source, target = args
            host = old + source
            if not os.path.lexists(host):
                continue
            dest = new + target
            if os.path.isdir(host):
                _makedirs(dest)
            else:
                _makedirs(os.path.dirname(dest))
                open(dest, "a").close()
            mount(host, dest, None, MS_BIND | MS_REC)
            if kind == "ro":
                _remount_readonly(dest)
        elif kind == "symlink":
            link_target, path = args
            _makedirs(os.path.dirname(new + path))
            os.symlink(link_target, new + path)
        elif kind == "tmpfs":
            target, size, mode = args
            _makedirs(new + target)
            mount("tmpfs", new + target, "tmpfs", MS_NOSUID | MS_NODEV, f"mode={mode:o},size={size},{owner}")
        elif kind == "copy":  # a small file from the host into a tmpfs (the job's sources)
            source, target = args
            with open(old + source, "rb") as src:
                data = src.read()
            with open(new + target, "wb") as dst:
                dst.write(data)
            os.chown(new + target, uid, gid)
        elif kind == "mkdir":
            _makedirs(new + args[0])
        elif kind == "dir":
            target, mode = args
            _makedirs(new + target, mode)
            os.chown(new + target, uid, gid)
        elif kind == "devfs":  # a minimal /dev: the harmless nodes, bound from the host
            _makedirs(new + "/dev")
            mount("tmpfs", new + "/dev", "tmpfs", MS_NOSUID, "mode=0755,size=64k")
            for node in ("null", "zero", "full", "random", "urandom", "tty"):
                open(f"{new}/dev/{node}", "a").close()
                mount(f"{old}/dev/{node}", f"{new}/dev/{node}", None, MS_BIND)
            os.mkdir(new + "/dev/shm")
            mount("tmpfs", new + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"mode=1777,size=64m,{owner}")
            for name, link in (
                ("fd", "/proc/self/fd"),
                ("stdin", "/proc/self/fd/0"),
                ("stdout", "/proc/self/fd/1"),
                ("stderr", "/proc/self/fd/2"),
            ):
                os.symlink(link, f"{new}/dev/{name}")
        elif kind == "proc":
            _makedirs(new + "/proc")
            mount("proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        else:
            raise ValueError(f"unknown root step {kind!r}")
    os.chdir(new)
    _pivot_root(".", ".")  # stacks the old root under the new one; detaching "." then drops it
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")
    _remount_readonly("/")


def set_limits(limits: dict) -> None:
    for name, value in limits.items():
        resource.setrlimit(getattr(resource, f"RLIMIT_{name.upper()}"), (value, value))
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")  # the OOM killer takes the sandbox before anything of the worker
    except OSError:
        pass


def drop_privileges(uid: int, gid: int) -> None:
    if os.getuid() == 0 and uid != 0:
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows (or nothing left to drop)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def run_as_init(argv: list[str], workdir: str | None) -> int:
    """Fork the harness and reap everything until it exits; return its status for our exit code."""
    child = os.fork()
    if child == 0:
        try:
            os.setsid()  # the harness's own session: the candidate cannot signal this init's group
            if workdir:
                os.chdir(workdir)
            os.execv(argv[0], argv)
        except BaseException as exc:
            os.write(2, f"confine: cannot start {argv[0]}: {exc}\n".encode())
        os._exit(127)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda s, _f: os.kill(child, signal.SIGKILL))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            return 0
        if pid == child:
            return os.waitstatus_to_exitcode(status)


def main(args: list[str]) -> int:
    split = args.index("--")
    spec, argv = json.loads(args[split - 1]), args[split + 1 :]
    uid, gid = spec.get("uid", os.getuid()), spec.get("gid", os.getgid())
    if os.getuid() != 0:
        uid, gid = os.getuid(), os.getgid()  # a user namespace mapped to the caller: nothing else exists
    if spec.get("parent_death"):
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if spec.get("root"):
        build_root(spec["root"], uid, gid)
    set_limits(spec.get("limits", {}))
    drop_privileges(uid, gid)
    if spec.get("init", True):
        code = run_as_init(argv, spec.get("chdir"))
        return 128 - code if code < 0 else code
    if spec.get("chdir"):
        os.chdir(spec["chdir"])
    os.execv(argv[0], argv)  # returns only by raising


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
