"""The warm pool's zygote: a process that has imported torch, triton and the harness but never
touched CUDA, and forks a fresh harness process per request.

`python -m harness.zygote --listen-fd L --lifeline-fd F [--spares N] [--warm-target cuda:90:32] [--lockdown on|landlock|seccomp]`

The worker made the listening socket (AF_UNIX, SOCK_SEQPACKET) and passed it in; its path need
not be visible inside the isolation. The lifeline is a pipe whose other end only the worker holds:
when it reads as closed, the worker is gone and the zygote exits (and its children with it). Each connection carries one request and gets one reply:

    {"op": "spawn", "role": R, "cwd": D, "env": {...}, "limits": {...}}  + 5 descriptors
        (channel read, channel write, key read, stdout write, stderr write, data socket) -> {"ok": true, "pid": P}
    {"op": "kill", "pid": P}    -> kills that child's process group
    {"op": "status", "pid": P}  -> {"ok": true, "exit": code | -signal | null}
    {"op": "signal", "pid": P, "action": "stop" | "cont"} -> stops (and waits) or continues its tree
    {"op": "ping"}              -> {"ok": true, "children": n, "spares": n, "warm": {...}}
    {"op": "learn", "launchers": [pattern, ...]} -> {"ok": true, "building": n}
        (argument-type patterns a child had to compile a Triton launcher for; see triton_cache.py)

Forking after CUDA initialises is unsafe, so the zygote checks it never did. Children are forked
ahead of demand ("spares") and wait, holding nothing, for their assignment; each then starts its
own session, takes its descriptors, environment, working directory and limits, and becomes an
ordinary harness process (`server.serve`). Children die with the zygote (PR_SET_PDEATHSIG).

With `--lockdown` (every backend but `process`), each spare confines itself right after the fork,
while it has one thread and before it touches CUDA (lockdown.py: landlock and seccomp). Its only
writable directory is one the zygote made for it, `.spare-…` in the jobs directory; on
assignment the zygote renames that directory to the job's working directory (landlock's rule
follows the directory, not its name), so a child can write only where its job lives. A spare that
cannot apply every layer the zygote probed at start-up exits before it could be assigned (fail
closed); `ping` and `spawn` name the layers (`confinement`).
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
from pathlib import Path
from typing import Any

from . import freeze, lockdown, triton_cache
from .limits import apply_limits

MAX_MESSAGE = 256 * 1024
FD_NAMES = ("read", "write", "key", "stdout", "stderr", "data")
EVIDENCE_FD = "evidence"  # optional, last: the native recorder's pipe (worker/native_evidence.py)
MAX_LAUNCHERS = 512  # argument-type patterns learned per zygote
PR_SET_PDEATHSIG = 1
SPARE_PREFIX = ".spare-"
READY = b"ready"
READY_WAIT_S = 120  # a spare forked on demand creates its CUDA context first
EXIT_LOCKDOWN_FAILED = 74


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
    def _warm(x_ptr, n, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]  # Triton reads a kernel's annotations
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(x_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) * 2.0, mask=mask)

    source = ASTSource(fn=_warm, signature={"x_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"}, constexprs={"BLOCK": 128})
    triton.compile(source, target=GPUTarget(backend, int(arch), int(warp)))


class Zygote:
    def __init__(
        self, listener: socket.socket, lifeline: int, spares: int, device: str = "cpu", support: lockdown.Support | None = None
    ) -> None:
        self.device = device
        self.support = support  # None: no lockdown (the `process` backend)
        self.jobs_dir = os.getcwd()  # the pool's jobs directory (where the worker's jobs are made)
        self.spare_dirs: dict[int, str] = {}  # spare pid -> the directory it may write (locked down)
        self.spares_made = 0
        self.lockdown_rules: dict[str, tuple[int, bool]] | None = None  # resolved once, see run()
        self.broken: str | None = None  # why no more children can be made (the pool fails closed)
        self.serving: socket.socket | None = None  # the worker's connection being answered
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
        if self.support is not None:  # the paths every spare may read or run, resolved once here
            policy = lockdown.default_policy(0, [self.seed_dir] if self.seed_dir else [], cuda=self.device == "cuda")
            self.lockdown_rules = lockdown.resolve(policy)
        self.refill()
        while True:
            self.reap()
            self.watch_memory()
            watched: list[socket.socket | int] = [self.listener, self.lifeline]
            ready, _, _ = select.select(watched, [], [], 0.2)
            if self.lifeline in ready:
                return 0
            if self.listener in ready:
                try:
                    connection, _ = self.listener.accept()
                except OSError:
                    continue
                with connection:
                    connection.settimeout(5)
                    self.serving = connection
                    try:
                        self.serve_one(connection)
                    except (OSError, ValueError):
                        continue
                    finally:
                        self.serving = None
            self.refill()

    def serve_one(self, connection: socket.socket) -> None:
        message, fds, _, _ = socket.recv_fds(connection, MAX_MESSAGE, len(FD_NAMES) + 1)
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
            if len(fds) not in (len(FD_NAMES), len(FD_NAMES) + 1):
                raise ValueError(f"spawn needs {len(FD_NAMES)} descriptors (and the recorder's), got {len(fds)}")
            limits = dict(request.get("limits") or {})
            memory = limits.pop("memory_bytes", None)  # watched here, not an rlimit
            cwd = os.path.abspath(str(request["cwd"]))
            if self.support is not None and not self.owns(cwd):
                raise ValueError(f"a job's directory must be new and inside {self.jobs_dir}: {cwd}")
            assignment = {
                "role": request["role"],
                "cwd": cwd,
                "env": request["env"],
                "limits": limits,
                "launchers": self.launchers,
            }
            while True:
                if self.broken:
                    raise RuntimeError(self.broken)
                pid, link = self.spares.pop(0) if self.spares else self.fork_spare()
                try:
                    # Only a spare that says it is ready is assigned: one that died (say, it could not
                    # lock itself down) must not take a job and read as that job's failure.
                    link.settimeout(READY_WAIT_S)
                    if link.recv(len(READY)) != READY:
                        raise ConnectionError(f"spare {pid} ended before it was ready")
                    link.settimeout(None)
                    if self.support is not None:  # the spare's own directory becomes the job's
                        os.makedirs(os.path.dirname(cwd), mode=0o755, exist_ok=True)
                        os.rename(self.spare_dir(pid), cwd)
                    socket.send_fds(link, [json.dumps(assignment).encode()], fds)
                    break
                except OSError:  # that spare died; take another
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                    try:
                        _, status = os.waitpid(pid, 0)
                        self.children.discard(pid)
                        self.record_exit(pid, status)
                    except ChildProcessError:
                        self.children.discard(pid)
                finally:
                    link.close()
            if memory:
                self.memory_limits[pid] = int(memory)
            self.workdirs[pid] = cwd
            return {"ok": True, "pid": pid, "confinement": self.support.layers() if self.support else []}
        if op == "kill":
            pid = int(request["pid"])
            if pid in self.children:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            return {"ok": True}
        if op == "signal":  # stop a child while the other side is timed (see freeze.py)
            pid = int(request["pid"])
            if pid not in self.children:
                return {"ok": True, "stopped": True, "states": {}, "gone": True}
            if request.get("action") == "stop":
                return {"ok": True, **freeze.stop_tree(pid)}
            freeze.continue_tree(pid)
            return {"ok": True}
        if op == "status":
            self.reap()
            pid = int(request["pid"])
            return {
                "ok": True,
                "exit": self.exits.get(pid),
                "running": pid in self.children,
                "memory_killed_bytes": self.memory_kills.get(pid),
            }
        if op == "ping":
            return {
                "ok": not self.broken,
                "error": self.broken,
                "children": len(self.children),
                "spares": len(self.spares),
                "warm": {**self.facts, "launchers": len(self.launchers)},
                "confinement": self.support.layers() if self.support else [],
            }
        if op == "learn":
            for pattern in request.get("launchers") or []:
                self.learn(pattern)
            return {"ok": True, "building": len(self.builders)}
        raise ValueError(f"unknown op {op!r}")

    def learn(self, pattern: Any) -> None:
        """Build the launcher for an argument-type pattern a child reported, in a throwaway child
        (validated: a pattern is a short list of known type names; a few builds at a time)."""
        if (
            not self.seed_dir
            or not triton_cache.valid_pattern(pattern)
            or tuple(pattern) in self.patterns
            or len(self.patterns) >= MAX_LAUNCHERS
            or len(self.builders) >= 4
        ):
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
                print(
                    f"zygote: building the launcher for {pattern} failed: {type(exc).__name__}: {exc}",
                    file=sys.stderr,
                    flush=True,
                )
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
        while len(self.spares) < self.spares_wanted and not self.broken:
            self.spares.append(self.fork_spare())

    def owns(self, cwd: str) -> bool:
        """A job's directory: job-X/role right below the jobs directory, not there yet."""
        job = os.path.dirname(cwd)
        return (
            os.path.realpath(os.path.dirname(job)) == os.path.realpath(self.jobs_dir)
            and not os.path.basename(job).startswith(".")
            and not os.path.islink(job)
            and not os.path.lexists(cwd)
        )

    def spare_dir(self, pid: int) -> str:
        return self.spare_dirs[pid]

    def fork_spare(self) -> tuple[int, socket.socket]:
        own = None
        if self.support is not None:  # made here, before the fork, so it exists when the spare is assigned
            self.spares_made += 1
            own = os.path.join(self.jobs_dir, f"{SPARE_PREFIX}{os.getpid()}-{self.spares_made}")
            os.mkdir(own, 0o700)
            # Opened before the fork: the zygote may rename it to the job's directory at once.
            own_fd = os.open(own, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            ours.close()
            try:
                self.become_child(theirs, own_fd if own is not None else None)
            except BaseException as exc:
                try:  # to the zygote's log, or to the job's stderr once assigned
                    print(f"zygote: a child failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                except BaseException:
                    pass
                os._exit(70)
            os._exit(71)
        theirs.close()
        self.children.add(pid)
        if own is not None:
            os.close(own_fd)
            self.spare_dirs[pid] = self.workdirs[pid] = own  # removed if it dies unassigned
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
            self.record_exit(pid, status)

    def record_exit(self, pid: int, status: int) -> None:
        """Forget a child that has exited (and been waited for): its limits, its directory."""
        self.memory_limits.pop(pid, None)
        self.exits[pid] = os.waitstatus_to_exitcode(status)
        if self.exits[pid] == EXIT_LOCKDOWN_FAILED and pid in self.spare_dirs:
            self.broken = "a spare could not apply the lockdown this kernel offers (see the zygote's log)"
        workdir = self.workdirs.pop(pid, None)
        self.spare_dirs.pop(pid, None)
        if workdir:  # under a namespace backend the worker cannot see it to clean it up
            shutil.rmtree(workdir, ignore_errors=True)
            job = os.path.dirname(workdir)
            if os.path.realpath(job) != os.path.realpath(self.jobs_dir):
                try:
                    os.rmdir(job)  # the job's directory, once both roles are gone
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
                    parents.setdefault(int(stat[stat.rindex(b")") + 2 :].split()[1]), []).append(int(entry.name))
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
    def lock_down(self, own: int) -> None:
        """Confine this spare for good (one thread, no CUDA yet): its own directory to write, the
        zygote's verified Triton builds to read, the runtime to read and Triton's compilers to run."""
        assert self.support is not None  # a spare has its own directory only under lockdown (fork_spare)
        try:
            lockdown.apply(
                lockdown.Policy(read_write=[own], rules=self.lockdown_rules, unix_sockets=self.device == "cuda"), self.support
            )
        except OSError as exc:
            print(f"zygote: a spare could not lock itself down: {exc}", file=sys.stderr, flush=True)
            os._exit(EXIT_LOCKDOWN_FAILED)

    def become_child(self, link: socket.socket, own: int | None = None) -> None:
        zygote_pid = os.getppid()
        self.listener.close()
        os.close(self.lifeline)
        for _, other in self.spares:  # the zygote's ends of its other spares' sockets
            other.close()
        # Nothing of the zygote's but what it was given: not the worker's connection being served
        # (a reply forged on it would name another pid), not a launcher builder's result pipe.
        if self.serving is not None:
            self.serving.close()
        for pipe in self.builders.values():
            os.close(pipe)
        _die_with_parent(zygote_pid)
        os.setsid()
        if own is not None:
            self.lock_down(own)
            os.close(own)
        if self.device == "cuda":
            # Ahead of demand: a CUDA context takes ~0.3-0.6 s to create (safe here: the zygote has none).
            import torch

            from . import native

            native.start_ahead()  # CUPTI's start-up, off the critical path and before the context; attached on assignment
            torch.empty(1, device="cuda")
        link.send(READY)  # locked down (and with its CUDA context): it may be assigned
        message, fds, _, _ = socket.recv_fds(link, MAX_MESSAGE, len(FD_NAMES) + 1)
        link.close()
        if len(fds) not in (len(FD_NAMES), len(FD_NAMES) + 1):
            os._exit(72)
        assignment = json.loads(message)
        named = dict(zip((*FD_NAMES, EVIDENCE_FD), fds, strict=False))
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
        if self.device == "cuda" or EVIDENCE_FD in named:  # before any submitted code is imported
            from . import native

            if EVIDENCE_FD in named:
                native.record_to(named[EVIDENCE_FD])
            else:
                native.stop_ahead()
        from .server import serve

        code = serve(assignment["role"], named["read"], named["write"], named["key"], named["data"])
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
    parser.add_argument(
        "--lockdown",
        choices=("on", "landlock", "seccomp"),
        default=None,
        help="each child confines itself: every layer the kernel offers, or only landlock or seccomp",
    )
    args = parser.parse_args()
    listener = socket.socket(fileno=args.listen_fd)
    for name in ("TMPDIR", "TRITON_CACHE_DIR"):  # under a namespace backend only the zygote can make them
        if os.environ.get(name):
            os.makedirs(os.environ[name], exist_ok=True)
    support = lockdown.probe(args.lockdown) if args.lockdown else None
    zygote = Zygote(listener, args.lifeline_fd, max(0, args.spares), args.device, support)
    zygote.facts = _preload(args.warm_target)
    if args.device == "cuda":  # built into a directory of this zygote's own, loaded here, started in each spare
        from . import native

        started = time.monotonic()
        prepared = native.prepare(Path(tempfile.mkdtemp(prefix="referee-native-")))
        zygote.facts["native_recorder"] = str(prepared.path) if prepared is not None else native.last_failure
        zygote.facts["native_recorder_s"] = round(time.monotonic() - started, 3)
    zygote.seed = triton_cache.seed_files(zygote.seed_dir)
    zygote.facts["seed_files"] = len(zygote.seed)
    return zygote.run()


if __name__ == "__main__":
    sys.exit(main())
