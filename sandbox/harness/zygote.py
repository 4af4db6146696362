"""The warm pool's zygote: a process that has imported torch, triton and the harness but never
touched CUDA, and forks a fresh harness process per request.

`python -m harness.zygote --listen-fd L --lifeline-fd F [--spares N] [--warm-target cuda:90:32]`

The worker made the listening socket (AF_UNIX, SOCK_SEQPACKET) and passed it in; its path need
not be visible inside the isolation. The lifeline is a pipe whose other end only the worker holds:
when it reads as closed, the worker is gone and the zygote exits (and its children with it). Each connection carries one request and gets one reply:

    {"op": "spawn", "role": R, "cwd": D, "env": {...}, "limits": {...}}  + 5 descriptors
        (channel read, channel write, key read, stdout write, stderr write) -> {"ok": true, "pid": P}
    {"op": "kill", "pid": P}    -> kills that child's process group
    {"op": "status", "pid": P}  -> {"ok": true, "exit": code | -signal | null}
    {"op": "ping"}              -> {"ok": true, "children": n, "spares": n, "warm": {...}}
    {"op": "learn", "launchers": [pattern, ...]} -> {"ok": true, "building": n}
        (argument-type patterns a child had to compile a Triton launcher for; see triton_cache.py)

Forking after CUDA initialises is unsafe, so the zygote checks it never did. Children are forked
ahead of demand ("spares") and wait, holding nothing, for their assignment; each then starts its
own session, takes its descriptors, environment, working directory and limits, and becomes an
ordinary harness process (`server.serve`). Children die with the zygote (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from typing import Any

from . import triton_cache
from .limits import apply_limits

MAX_MESSAGE = 256 * 1024
FD_NAMES = ("read", "write", "key", "stdout", "stderr")
MAX_LAUNCHERS = 512  # argument-type patterns learned per zygote
PR_SET_PDEATHSIG = 1


def _preload(warm_target: str | None) -> dict[str, Any]:
    """Import what every harness process needs, and optionally compile a kernel without a GPU
    context so the compiler's first-use costs are paid here once."""
    started = time.monotonic()
    import torch
    import torch._dynamo  # every candidate process imports it before its integrity snapshot
    import triton  # noqa: F401

    from . import candidate, reference  # noqa: F401  the roles and everything they import

    if warm_target:  # a GPU child imports this on its first profile; pay once here
        import torch.profiler
    facts: dict[str, Any] = {"import_s": round(time.monotonic() - started, 3)}
    if warm_target:
        started = time.monotonic()
        try:
            _compile_for(warm_target)
            facts["compile_s"] = round(time.monotonic() - started, 3)
        except Exception as exc:  # a cold compiler is slower, not wrong
            facts["compile_error"] = f"{type(exc).__name__}: {exc}"[:300]
        started = time.monotonic()
        from triton.backends.nvidia import driver

        driver.libcuda_dirs()  # runs `ldconfig -p` once here, not in every child (cached per process)
        facts["driver_utils_built"] = _build_driver_utils()
        facts["driver_utils_s"] = round(time.monotonic() - started, 3)
    if torch.cuda.is_initialized():
        raise SystemExit("the zygote initialised CUDA; forking it would be unsafe")
    return facts


def _build_driver_utils() -> bool:
    """Compile Triton's CUDA driver utilities (a C module, ~0.4 s of gcc) into this process's Triton
    cache, in a throwaway child: loading them may initialise the driver, which the zygote must not.
    Each harness child starts with a verified copy, instead of compiling them again."""
    pid = os.fork()
    if pid == 0:
        try:
            from triton.backends.nvidia.driver import CudaUtils

            CudaUtils()
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _compile_for(target: str) -> None:
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    backend, arch, warp = target.split(":")

    @triton.jit
    def _warm(x_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) * 2.0, mask=mask)

    source = ASTSource(fn=_warm, signature={"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}, constexprs={"BLOCK": 128})
    triton.compile(source, target=GPUTarget(backend, int(arch), int(warp)))


class Zygote:
    def __init__(self, listener: socket.socket, lifeline: int, spares: int, device: str = "cpu") -> None:
        self.device = device
        self.listener = listener
        self.lifeline = lifeline
        self.spares_wanted = spares
        self.spares: list[tuple[int, socket.socket]] = []  # (pid, our end of its assignment socket)
        self.children: set[int] = set()
        self.exits: dict[int, int] = {}
        self.memory_limits: dict[int, int] = {}  # child pid -> resident bytes it may use
        self.memory_kills: dict[int, int] = {}  # child pid -> resident bytes seen when killed
        self.workdirs: dict[int, str] = {}  # child pid -> its directory, removed when it has exited
        self.facts: dict[str, Any] = {}
        self.seed_dir = os.environ.get("TRITON_CACHE_DIR")
        self.seed: dict[str, str] = {}
        self.launchers: dict[str, str] = {}  # Triton cache entry -> sha256, built here from a pattern
        self.patterns: set[tuple[str, ...]] = set()  # built, being built, or failed: asked for once
        self.builders: dict[int, int] = {}  # pid of a throwaway child building a launcher -> its pipe

    # ---- the zygote's side
    def run(self) -> int:
        self.refill()
        while True:
            self.reap()
            self.watch_memory()
            ready, _, _ = select.select([self.listener, self.lifeline], [], [], 0.2)
            if self.lifeline in ready:
                return 0
            if self.listener in ready:
                try:
                    connection, _ = self.listener.accept()
                except OSError:
                    continue
                with connection:
                    connection.settimeout(5)
                    try:
                        self.serve_one(connection)
                    except (OSError, ValueError):
                        continue
            self.refill()

    def serve_one(self, connection: socket.socket) -> None:
        message, fds, _, _ = socket.recv_fds(connection, MAX_MESSAGE, len(FD_NAMES))
        try:
            if self.from_a_child(connection):
                raise PermissionError("requests come from the worker, not from a harness process")
            request = json.loads(message)
            reply = self.handle(request, fds)
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        connection.sendall(json.dumps(reply).encode())

    def from_a_child(self, connection: socket.socket) -> bool:
        """Whether the peer is one of this zygote's children or in one of their sessions (a candidate
        that found the socket). The worker, outside the isolation's pid namespace, shows as pid 0."""
        pid = struct.unpack("3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
        if pid <= 0:
            return False
        try:
            session = os.getsid(pid)
        except OSError:
            return False
        return pid in self.children or session in self.children

    def handle(self, request: dict[str, Any], fds: list[int]) -> dict[str, Any]:
        op = request.get("op")
        if op == "spawn":
            if len(fds) != len(FD_NAMES):
                raise ValueError(f"spawn needs {len(FD_NAMES)} descriptors, got {len(fds)}")
            limits = dict(request.get("limits") or {})
            memory = limits.pop("memory_bytes", None)  # watched here, not an rlimit
            assignment = {"role": request["role"], "cwd": request["cwd"], "env": request["env"], "limits": limits,
                          "launchers": self.launchers}
            while True:
                pid, link = self.spares.pop(0) if self.spares else self.fork_spare()
                try:
                    socket.send_fds(link, [json.dumps(assignment).encode()], fds)
                    break
                except OSError:  # that spare died; take another
                    self.children.discard(pid)
                finally:
                    link.close()
            if memory:
                self.memory_limits[pid] = int(memory)
            self.workdirs[pid] = str(assignment["cwd"])
            return {"ok": True, "pid": pid}
        if op == "kill":
            pid = int(request["pid"])
            if pid in self.children:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            return {"ok": True}
        if op == "status":
            self.reap()
            pid = int(request["pid"])
            return {"ok": True, "exit": self.exits.get(pid), "running": pid in self.children,
                    "memory_killed_bytes": self.memory_kills.get(pid)}
        if op == "ping":
            return {"ok": True, "children": len(self.children), "spares": len(self.spares),
                    "warm": {**self.facts, "launchers": len(self.launchers)}}
        if op == "learn":
            for pattern in request.get("launchers") or []:
                self.learn(pattern)
            return {"ok": True, "building": len(self.builders)}
        raise ValueError(f"unknown op {op!r}")

    def learn(self, pattern: Any) -> None:
        """Build the launcher for an argument-type pattern a child reported, in a throwaway child
        (validated: a pattern is a short list of known type names; a few builds at a time)."""
        if (not self.seed_dir or not triton_cache.valid_pattern(pattern) or tuple(pattern) in self.patterns
                or len(self.patterns) >= MAX_LAUNCHERS or len(self.builders) >= 4):
            return
        self.patterns.add(tuple(pattern))
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            try:
                built = triton_cache.build_launcher(pattern, self.seed_dir)
                os.write(write_end, json.dumps(built).encode())
            except BaseException as exc:
                print(f"zygote: building the launcher for {pattern} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            finally:
                os._exit(0)
        os.close(write_end)
        self.builders[pid] = read_end

    def builder_done(self, pid: int) -> None:
        """Record a launcher build: the entry and sha256 the builder computed from its own bytes."""
        read_end = self.builders.pop(pid)
        try:
            built = json.loads(os.read(read_end, 4096) or b"null")
        except ValueError:
            built = None
        finally:
            os.close(read_end)
        if isinstance(built, list) and len(built) == 2 and all(isinstance(x, str) for x in built):
            self.launchers[built[0]] = built[1]
        else:
            print(f"zygote: a launcher build gave {built!r}", file=sys.stderr, flush=True)

    def refill(self) -> None:
        while len(self.spares) < self.spares_wanted:
            self.spares.append(self.fork_spare())

    def fork_spare(self) -> tuple[int, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                self.become_child(theirs)
            except BaseException:
                os._exit(70)
            os._exit(71)
        theirs.close()
        self.children.add(pid)
        return pid, ours

    def reap(self) -> None:
        while self.children or self.builders:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.builders:
                self.builder_done(pid)
                continue
            self.children.discard(pid)
            self.memory_limits.pop(pid, None)
            self.exits[pid] = os.waitstatus_to_exitcode(status)
            workdir = self.workdirs.pop(pid, None)
            if workdir:  # under a namespace backend the worker cannot see it to clean it up
                shutil.rmtree(workdir, ignore_errors=True)
                try:
                    os.rmdir(os.path.dirname(workdir))  # the job's directory, once both roles are gone
                except OSError:
                    pass
            self.spares = [(p, link) for p, link in self.spares if p != pid]
            if len(self.exits) > 4096:  # nobody asked about the oldest; forget them
                for old in list(self.exits)[:1024]:
                    del self.exits[old]

    def watch_memory(self) -> None:
        """Kill a child whose process tree holds more resident memory than its limit (a poll of
        /proc: CUDA reserves far more address space than it uses, so RLIMIT_AS cannot do this)."""
        if not self.memory_limits:
            return
        parents: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat", "rb") as handle:
                        stat = handle.read()
                    parents.setdefault(int(stat[stat.rindex(b")") + 2:].split()[1]), []).append(int(entry.name))
                except (OSError, ValueError):
                    continue
        for pid, limit in list(self.memory_limits.items()):
            tree, todo = [], [pid]
            while todo:
                current = todo.pop()
                tree.append(current)
                todo.extend(parents.get(current, ()))
            used = sum(_resident_bytes(member) for member in tree)
            if used > limit:
                self.memory_kills[pid] = used
                del self.memory_limits[pid]
                for member in tree:
                    try:
                        os.kill(member, signal.SIGKILL)
                    except OSError:
                        pass

    # ---- a child's side, after fork
    def become_child(self, link: socket.socket) -> None:
        zygote_pid = os.getppid()
        self.listener.close()
        os.close(self.lifeline)
        for _, other in self.spares:  # the zygote's ends of its other spares' sockets
            other.close()
        _die_with_parent(zygote_pid)
        os.setsid()
        if self.device == "cuda":
            # Ahead of demand: a CUDA context takes ~0.3-0.6 s to create (safe here: the zygote has none).
            import torch

            torch.empty(1, device="cuda")
        message, fds, _, _ = socket.recv_fds(link, MAX_MESSAGE, len(FD_NAMES))
        link.close()
        if len(fds) != len(FD_NAMES):
            os._exit(72)
        assignment = json.loads(message)
        named = dict(zip(FD_NAMES, fds, strict=True))
        os.dup2(named["stdout"], 1)
        os.dup2(named["stderr"], 2)
        os.close(named["stdout"])
        os.close(named["stderr"])
        os.environ.clear()
        os.environ.update(assignment["env"])
        if self.seed and self.seed_dir and os.environ.get("TRITON_CACHE_DIR"):
            triton_cache.copy_seed(self.seed_dir, os.environ["TRITON_CACHE_DIR"], self.seed)
        if self.device == "cuda":  # before any candidate code: later launcher lookups use the builds
            triton_cache.seeds = triton_cache.LauncherSeeds(assignment.get("launchers") or {}, self.seed_dir)
            triton_cache.seeds.install()
        tempfile.tempdir = None  # recomputed from the new TMPDIR
        os.makedirs(os.path.join(assignment["cwd"], "tmp"), exist_ok=True)
        os.chdir(assignment["cwd"])
        apply_limits(assignment.get("limits"))
        sys.argv = ["harness", "--role", assignment["role"]]
        from .server import serve

        code = serve(assignment["role"], named["read"], named["write"], named["key"])
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _resident_bytes(pid: int) -> int:
    """Anonymous and shared-memory resident pages (mapped libraries do not count)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as handle:
            return sum(int(line.split()[1]) * 1024 for line in handle if line.startswith((b"RssAnon:", b"RssShmem:")))
    except (OSError, ValueError):
        return 0


def _die_with_parent(parent_pid: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def main() -> int:
    parser = argparse.ArgumentParser(prog="harness.zygote")
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: spares create their CUDA context early")
    parser.add_argument("--spares", type=int, default=2)
    parser.add_argument("--warm-target", default=None, help="backend:arch:warp_size, e.g. cuda:90:32")
    args = parser.parse_args()
    listener = socket.socket(fileno=args.listen_fd)
    for name in ("TMPDIR", "TRITON_CACHE_DIR"):  # under a namespace backend only the zygote can make them
        if os.environ.get(name):
            os.makedirs(os.environ[name], exist_ok=True)
    zygote = Zygote(listener, args.lifeline_fd, max(0, args.spares), args.device)
    zygote.facts = _preload(args.warm_target)
    zygote.seed = triton_cache.seed_files(zygote.seed_dir)
    zygote.facts["seed_files"] = len(zygote.seed)
    return zygote.run()


if __name__ == "__main__":
    sys.exit(main())
