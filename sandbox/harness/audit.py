"""A PEP 578 audit hook for the candidate's process (it cannot be removed once added).

An event counts against the candidate when the code that asked for it, the innermost frame outside
the standard library, is untrusted: the submitted file or code with no file (`exec`). Torch and
Triton doing their own work (Triton's compiler starts ptxas, writes its cache) is not the
candidate's. Starting a thread is judged strictly: only torch, triton, numpy and the harness may
(a site-packages library's thread, such as a progress display's refresh thread, runs whatever it
was handed). Forbidden events are recorded and refused with PermissionError.

Everything the hook decides with is captured when it is installed (the policy, the trusted roots,
the helpers it calls) and held only by the hook, which nothing but `gc` (forbidden) can reach:
clearing or rebinding the module's tables changes nothing. Functions the harness replaces
(thread starters, profiler switches, CUDA graphs) are replaced by stubs that hold no reference to
the original: they route the call through `sys.audit` to the hook, which alone holds the originals
and decides; a stub's `__closure__` gives nothing away.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import types
from typing import Any

# Introspection events decided by the direct caller: stdlib helpers (namedtuple, typing, logging)
# use them legitimately on the candidate's behalf. Functions that hand frames back to their caller
# (`inspect`, `traceback.walk_*`, `logging.currentframe`) are looked through.
DIRECT_CALLER_EVENTS = frozenset(
    {"gc.get_objects", "gc.get_referrers", "gc.get_referents", "sys._getframe", "sys._current_frames", "marshal.loads", "compile"}
)
_LOOKED_THROUGH_FILES = (os.sep + "inspect.py",)
_LOOKED_THROUGH_FUNCTIONS = frozenset(
    {("traceback.py", "walk_tb"), ("traceback.py", "walk_stack"), ("__init__.py", "<lambda>"), ("__init__.py", "currentframe")}
)

# Attributes whose reading hands out a frame (the way to the harness's frames and their locals).
FRAME_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame", "f_back"})

# event -> why it is forbidden to the candidate (read-only: the hook keeps its own copy anyway)
FORBIDDEN_EVENTS: types.MappingProxyType[str, str] = types.MappingProxyType(
    {
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
        "marshal.loads": "loading code objects from bytes",
    }
)

# Programs that build native code; started on the candidate's behalf only when the operator allows
# native code, or by Triton building its own launcher (see `_native_build_reason`).
BUILD_TOOLS = frozenset(
    {
        "ninja",
        "make",
        "cmake",
        "gcc",
        "g++",
        "cc",
        "c++",
        "clang",
        "clang++",
        "ld",
        "ld.gold",
        "ld.lld",
        "nvcc",
        "as",
        "ccache",
        "icx",
        "icpx",
        "tcc",
        "zig",
        "rustc",
        "cargo",
        "go",
    }
)
# Where a shared library may be loaded from by ctypes without the operator's permission.
SYSTEM_LIBRARY_DIRS = ("/usr/lib", "/lib", "/usr/lib64", "/lib64", "/usr/local/cuda", "/usr/local/lib", "/opt/")

# Every event `decide` can refuse: anything else returns at the hook's first line (the interpreter
# raises some events in bulk: `builtins.id` for every id(), `object.__getattr__` for every read of a
# function's `__code__`/`__defaults__`, `open` and `exec` for every import).
PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.exec", "os.posix_spawn", "os.system"})
# Events that create or move a path: refused outside the job directory like a write (a symlink planted
# in a trusted package's tree would change where its files resolve).
PATH_WRITE_EVENTS = frozenset({"os.symlink", "os.link", "os.rename", "os.mkdir", "os.truncate"})
WATCHED_EVENTS = (
    frozenset(FORBIDDEN_EVENTS)
    | PROCESS_EVENTS
    | PATH_WRITE_EVENTS
    | frozenset({"open", "object.__getattr__", "object.__setattr__", "compile", "code.__new__", "exec", "function.__new__"})
)
WATCHED_READS = FRAME_ATTRIBUTES | {"__code__"}

THREAD_STARTERS = ("start_new_thread", "_start_new_thread", "start_joinable_thread", "_start_joinable_thread")
CALL_EVENT = "referee.sealed_call"


def _sealed_stub(kind: str, doc: str | None) -> Any:
    """A stand-in that holds nothing: the hook performs (or refuses) the call."""

    def sealed(*args: Any, **kwargs: Any) -> Any:
        box: list[Any] = []
        sys.audit(CALL_EVENT, kind, args, kwargs, box)
        if not box:
            raise RuntimeError(f"Referee sandbox: {kind} is unavailable")
        return box[0]

    sealed.__doc__ = doc
    return sealed


class AuditGuard:
    def __init__(self, candidate_file: str, job_dir: str, allow_native: bool = False) -> None:
        self.candidate_file = candidate_file
        self.job_dir = os.path.realpath(job_dir)
        # Jobs live at <jobs root>/<job>/<role>: everything else under the root is another
        # process's (this job's reference, other jobs).
        self.jobs_root = os.path.dirname(os.path.dirname(self.job_dir))
        self.allow_native = allow_native
        self.events: list[dict[str, Any]] = []
        self.active = False
        self._harness_dir = os.path.dirname(os.path.abspath(__file__))

    def install(self) -> None:
        """Add the hook and seal what it guards. Call before the candidate is imported."""
        hook, seal = _make_hook(self)
        sys.addaudithook(hook)
        import _thread
        import threading

        targets = [
            (module, name, "thread.start")
            for module in (_thread, threading)
            for name in THREAD_STARTERS
            if getattr(module, name, None) is not None
        ]
        seal(targets + _profiler_switches() + _cuda_graph_methods())


def _roots(*paths: str) -> tuple[str, ...]:
    return tuple(sorted({os.path.realpath(p) + os.sep for p in paths if p}))


def _package_dir(name: str) -> str:
    module = sys.modules.get(name)
    file = getattr(module, "__file__", None)
    return os.path.dirname(file) if file else ""


def _launcher_builders() -> frozenset[types.CodeType]:
    """Code objects of Triton's own launcher and driver-utility builders (identity, not file names:
    a frame of one of these can only exist when Triton itself runs that code)."""
    codes: set[types.CodeType] = set()
    for name, module in list(sys.modules.items()):
        if not (name.startswith("triton.backends.") and name.endswith(".driver")):
            continue
        for value in list(vars(module).values()):
            if (
                isinstance(value, type)
                and value.__module__ == name
                and ("Launcher" in value.__name__ or "Utils" in value.__name__)
            ):
                init = vars(value).get("__init__")
                if isinstance(init, types.FunctionType):
                    codes.add(init.__code__)
    return frozenset(codes)


def _make_hook(guard: AuditGuard) -> tuple[Any, Any]:
    """The hook and the sealing function, closing over everything they use."""
    import _thread

    forbidden = dict(FORBIDDEN_EVENTS)
    watched, watched_reads = WATCHED_EVENTS, WATCHED_READS
    process_events, path_write_events = PROCESS_EVENTS, PATH_WRITE_EVENTS
    direct_events = DIRECT_CALLER_EVENTS
    frame_attributes = FRAME_ATTRIBUTES
    build_tools = BUILD_TOOLS
    looked_through_files = _LOOKED_THROUGH_FILES
    looked_through_functions = _LOOKED_THROUGH_FUNCTIONS
    realpath, normpath, isabs, basename, dirname, fsdecode = (
        os.path.realpath,
        os.path.normpath,
        os.path.isabs,
        os.path.basename,
        os.path.dirname,
        os.fsdecode,
    )
    getframe = sys._getframe
    get_ident = _thread.get_ident
    candidate_file, job_dir, jobs_root = guard.candidate_file, guard.job_dir, guard.jobs_root
    harness_dir = guard._harness_dir
    allow_native = guard.allow_native
    events = guard.events
    own_proc = f"/proc/{os.getpid()}"
    paths = sysconfig.get_paths()
    stdlib_paths = (paths["stdlib"], paths["platstdlib"])
    site_paths = (paths["purelib"], paths["platlib"], *site.getsitepackages())
    trusted_paths = (harness_dir, _package_dir("torch"), _package_dir("triton"), _package_dir("numpy"))
    stdlib = _roots(*stdlib_paths)
    site_roots = _roots(*site_paths)
    # Only these packages act on their own account; any other library acts for the candidate.
    trusted = _roots(*trusted_paths)
    every_root = trusted + stdlib + site_roots
    # The same roots as written (before symlinks are resolved): a file's verdict is kept only for names
    # that lie, as written, under one of these trees, which the candidate cannot change (read-only;
    # the hook refuses writes and new links there). Any other name may resolve differently tomorrow (a
    # directory of the job swapped for a link into torch): it is never trusted, whatever it resolves to.
    written_roots = every_root + tuple(sorted({normpath(p) + os.sep for p in (*stdlib_paths, *site_paths, *trusted_paths) if p}))
    system_libraries = SYSTEM_LIBRARY_DIRS + tuple(r.rstrip(os.sep) for r in trusted + site_roots)
    builders = _launcher_builders()
    originals: dict[str, Any] = {}
    busy: set[int] = set()  # threads inside the hook (per thread: another thread's events are still judged)
    CodeType, FunctionType = types.CodeType, types.FunctionType
    identity = object.__hash__
    # The frames below the installer (the harness's command loop, its `python -c` entry): walks stop
    # there. Held (a set of the frames themselves: hashing a frame raises no event, `id` does).
    base: list[Any] = []
    below: types.FrameType | None = getframe(1)
    while below is not None:
        base.append(below)
        below = below.f_back
    base_frames = frozenset(base)
    # file name -> (in the stdlib, trusted, trusted strictly): decided once per name (see written_roots)
    verdicts: dict[str, tuple[bool, bool, bool]] = {}
    untrusted_verdict = (False, False, False)
    frozen_verdict = (True, True, True)

    def real(filename: str) -> str:
        return realpath(filename)

    def verdict(filename: str) -> tuple[bool, bool, bool]:
        known = verdicts.get(filename)
        if known is not None:
            return known
        if filename == candidate_file:
            return untrusted_verdict
        if not isabs(filename):
            return frozen_verdict if filename.startswith("<frozen") else untrusted_verdict  # <string>: exec'd code
        if ".." in filename.split(os.sep) or not normpath(filename).startswith(written_roots):
            return untrusted_verdict
        resolved = real(filename)  # (a venv's platstdlib holds its site-packages: those are not stdlib)
        in_std = resolved.startswith(stdlib) and "-packages" not in resolved and "-packages" not in filename
        found = (in_std, resolved.startswith(every_root), resolved.startswith(trusted) or in_std)
        verdicts[filename] = found
        return found

    def in_stdlib(filename: str) -> bool:
        return verdict(filename)[0]

    def untrusted_file(filename: str, strict: bool = False) -> bool:
        """Strict: only torch, triton, numpy, the harness and the stdlib act on their own account
        (threads: a library's thread runs whatever it is given). Otherwise any installed package."""
        return not verdict(filename)[2 if strict else 1]

    def trusted_name(filename: Any) -> bool:
        """A file name that would make code look like the trusted side's (resolved every time: this
        refuses, so it errs towards trusted)."""
        if not isinstance(filename, (str, bytes)):
            return False
        name = fsdecode(filename)
        return name.startswith("<frozen") or (isabs(name) and real(name).startswith(every_root))

    def untrusted_caller(frame: Any, strict: bool = False) -> str | None:
        """The file of the innermost frame outside the standard library, if that is untrusted code."""
        index = 2 if strict else 1
        while frame is not None and frame not in base_frames:
            filename = frame.f_code.co_filename
            found = verdict(filename)
            if not found[0]:
                return None if found[index] else filename
            frame = frame.f_back
        return None

    def direct_caller_untrusted(frame: Any) -> str | None:
        while frame is not None and (
            frame.f_code.co_filename.endswith(looked_through_files)
            or (
                (basename(frame.f_code.co_filename), frame.f_code.co_name) in looked_through_functions
                and in_stdlib(frame.f_code.co_filename)
            )
        ):
            frame = frame.f_back
        if frame is not None and untrusted_file(frame.f_code.co_filename):
            return frame.f_code.co_filename
        return None

    def untrusted_on_stack(frame: Any) -> str | None:
        while frame is not None and frame not in base_frames:
            if untrusted_file(frame.f_code.co_filename):
                return frame.f_code.co_filename
            frame = frame.f_back
        return None

    def importing(frame: Any, filename: str) -> bool:
        """Whether importlib is loading exactly this file (a lazy import of a trusted module)."""
        while frame is not None:
            code = frame.f_code
            if code.co_name == "exec_module" and code.co_filename.startswith("<frozen importlib"):
                module = frame.f_locals.get("module")
                origin = getattr(getattr(module, "__spec__", None), "origin", None)
                return isinstance(origin, str) and real(origin) == real(filename)
            frame = frame.f_back
        return False

    def native_build_reason(program: Any, frame: Any) -> str | None:
        """Refuse a build tool unless the operator allows native code or Triton's own launcher
        builder (by code identity) runs inside every untrusted frame on the stack."""
        if allow_native or not isinstance(program, (str, bytes)):
            return None
        name = basename(fsdecode(program))
        if (
            name not in build_tools
            and not name.endswith(("-gcc", "-g++", "-cc", "-c++", "-ld"))
            and not name.startswith(("gcc-", "g++-", "clang-"))
        ):
            return None
        while frame is not None and frame not in base_frames:
            if frame.f_code in builders:
                return None
            if untrusted_file(frame.f_code.co_filename):
                break
            frame = frame.f_back
        return f"building native code ({name})"

    def inside_job(resolved: str) -> bool:
        return resolved.startswith(job_dir + os.sep) or resolved == job_dir

    def open_reason(args: tuple[Any, ...]) -> str | None:
        path, mode = args[0], args[1] if len(args) > 1 else "r"
        if not isinstance(path, (str, bytes)):
            return None  # an fd
        path = fsdecode(path)
        resolved = real(path)
        if inside_job(resolved):
            return None
        writing = isinstance(mode, str) and any(flag in mode for flag in "wax+")
        if isinstance(mode, int):
            writing = bool(mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND))
        if writing:
            return "writing outside the job directory"
        if resolved.startswith(jobs_root + os.sep):
            return "reading the reference's or another job's files"
        if resolved.startswith(harness_dir + os.sep):
            return "reading the harness"
        if resolved.startswith(("/etc/", "/root", "/home", "/var/")) or resolved.endswith("/mem"):
            return "reading system files"
        # Another process's /proc entries (the worker's command line and environment, the reference's
        # memory maps); its own (/proc/self resolves to them) are fine.
        if resolved.startswith("/proc/") and resolved.split("/")[2].isdigit() and not (resolved + "/").startswith(own_proc + "/"):
            return "reading another process's /proc entries"
        return None

    def path_write_reason(event: str, args: tuple[Any, ...]) -> str | None:
        """A link, rename, directory or truncation outside the job directory (the entry itself, not
        what an existing link points to)."""
        targets = args[:2] if event == "os.rename" else args[1:2] if event in ("os.symlink", "os.link") else args[:1]
        directory_fds = {"os.symlink": args[2:3], "os.link": args[2:4], "os.rename": args[2:4], "os.mkdir": args[2:3]}.get(
            event, ()
        )
        relative_to_fd = any(isinstance(fd, int) and fd != -1 for fd in directory_fds)  # -1: no dir_fd
        for target in targets:
            if not isinstance(target, (str, bytes)):
                continue
            name = fsdecode(target)
            if relative_to_fd and not isabs(name):
                return "writing outside the job directory"
            if not inside_job(os.path.join(real(dirname(name) or "."), basename(name))):
                return "writing outside the job directory"
        return None

    def library_reason(args: tuple[Any, ...]) -> str | None:
        """ctypes.dlopen of a file outside the system's and the trusted packages' directories."""
        path = args[0] if args else None
        if allow_native or not isinstance(path, (str, bytes)):
            return None
        name = fsdecode(path)
        if os.sep not in name:
            return None  # a system library by name (libc.so.6)
        return None if real(name).startswith(system_libraries) else f"loading a native library from {name}"

    def decide(event: str, args: tuple[Any, ...], frame: Any) -> tuple[str | None, str | None]:
        """(reason, caller) for a refused event, or (None, None). Where a refusal needs an untrusted
        caller, the caller (cached per file name) is found before the reason (which may resolve paths)."""
        if event == "object.__getattr__":
            name = args[1]
            if name in frame_attributes:
                return "frame walking", direct_caller_untrusted(frame)
            target = args[0]
            if (
                isinstance(target, FunctionType)
                and (caller := untrusted_caller(frame)) is not None
                and trusted_name(target.__code__.co_filename)
            ):
                return "reading the code of trusted functions", caller
            return None, None
        if event == "object.__setattr__":
            target = args[0] if args else None
            if isinstance(target, FunctionType) and (
                trusted_name(target.__code__.co_filename)
                or (len(args) > 2 and isinstance(args[2], CodeType) and trusted_name(args[2].co_filename))
            ):
                return "rewriting trusted functions", untrusted_caller(frame)
            return None, None
        if event == "compile" or event == "code.__new__":
            filename = args[1] if len(args) > 1 else None
            if trusted_name(filename):
                caller = direct_caller_untrusted(frame) if event == "compile" else untrusted_caller(frame)
                return "compiling code under a trusted file name", caller
            return None, None
        if event in ("exec", "function.__new__"):
            code = args[0] if args else None
            if isinstance(code, CodeType) and trusted_name(code.co_filename) and not importing(frame, code.co_filename):
                return "running code under a trusted file name", untrusted_caller(frame)
            return None, None
        if allow_native and event in ("ctypes.dlopen", "ctypes.dlsym"):
            return None, None  # the operator allows native code: loading a library and finding its symbols
        if event == "ctypes.dlopen":
            caller = untrusted_caller(frame)
            library = library_reason(args)
            if library is not None:
                return library, caller or "(a trusted library on the candidate's behalf)"
            return (forbidden[event], caller) if caller else (None, None)
        if event in process_events:
            program = args[0] if args else None
            if event == "subprocess.Popen" and len(args) > 1 and isinstance(args[1], (list, tuple)) and args[1]:
                program = program or args[1][0]
                program = args[1][0] if program is None or basename(fsdecode(program)) in ("sh", "bash") else program
            if event == "os.system" and isinstance(program, (str, bytes)):
                program = fsdecode(program).split()[0] if fsdecode(program).split() else program
            build = native_build_reason(program, frame)
            if build is not None:
                return build, untrusted_on_stack(frame) or "(a trusted library on the candidate's behalf)"
        caller = direct_caller_untrusted(frame) if event in direct_events else untrusted_caller(frame)
        if caller is None:
            return None, None
        if event == "open":
            return open_reason(args), caller
        if event in path_write_events:
            return path_write_reason(event, args), caller
        return forbidden.get(event), caller

    def refuse(event: str, reason: str, detail: Any) -> None:
        events.append({"event": event, "reason": reason, "detail": _short(detail)})
        raise PermissionError(f"Referee sandbox: {reason} is not allowed ({event})")

    def sealed_call(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any], box: list[Any], frame: Any) -> None:
        original = originals.get(kind)
        if original is None:
            return
        if guard.active:
            if kind == "thread.start":
                caller = untrusted_caller(frame.f_back, strict=True)  # past the stub
                if caller is not None:
                    events.append(
                        {
                            "event": "thread.start",
                            "reason": "starting a thread (work must not continue after forward returns)",
                            "detail": caller,
                        }
                    )
                    raise PermissionError("Referee sandbox: starting a thread is not allowed")
            elif kind.startswith("cuda.graph"):
                refuse(kind, "CUDA graphs (launches inside a graph cannot be attributed)", untrusted_on_stack(frame) or "")
            else:  # profiler and record-function switches: the harness's own, never the candidate's
                caller = untrusted_on_stack(frame)
                if caller is not None:
                    refuse(kind, "switching the profiler or op recording", caller)
        box.append(original(*args, **kwargs))

    def hook(event: str, args: tuple[Any, ...]) -> None:
        # The fast path first: most events the interpreter raises can never be refused.
        if event not in watched:
            if event != CALL_EVENT:
                return
        elif not guard.active or (event == "object.__getattr__" and (len(args) < 2 or args[1] not in watched_reads)):
            return
        me = get_ident()
        if me in busy:
            return
        busy.add(me)
        try:
            frame = getframe(1)
            if event == CALL_EVENT:
                if len(args) == 4 and isinstance(args[0], str) and isinstance(args[3], list):
                    kind, call_args, call_kwargs, box = args
                    # Outside the decision (busy): the original may raise events of its own.
                    busy.discard(me)
                    sealed_call(kind, call_args, call_kwargs, box, frame)
                return
            reason, caller = decide(event, args, frame)
        finally:
            busy.discard(me)
        if reason is not None and caller is not None:
            refuse(event, reason, args if event != "object.__getattr__" else (type(args[0]).__name__, args[1]))

    def seal(targets: list[tuple[Any, str, str]]) -> None:
        """Replace each (owner, name) by a stub of `kind`, and every module's other name for the
        same function (`threading._start_new_thread` is `_thread.start_new_thread`)."""
        kinds: dict[int, str] = {}
        for owner, name, kind in targets:
            original = getattr(owner, name)
            if getattr(original, "__name__", "") == "sealed":
                continue
            try:
                setattr(owner, name, _sealed_stub(kind, getattr(original, "__doc__", None)))
            except (TypeError, AttributeError):  # an extension type that refuses new attributes
                continue
            originals.setdefault(kind, original)
            kinds[identity(original)] = kind
        for module in list(sys.modules.values()):
            try:
                namespace = list(vars(module).items())
            except TypeError:
                continue
            # (`object.__hash__` is an object's identity, like id(), without an audit event per value)
            found = [
                (k, kinds[key])
                for (k, v), key in zip(namespace, map(identity, (v for _, v in namespace)), strict=True)
                if key in kinds and originals[kinds[key]] is v
            ]
            for other, kind in found:
                setattr(module, other, _sealed_stub(kind, None))

    return hook, seal


def _profiler_switches() -> list[tuple[Any, str, str]]:
    """The op witness (witness.py) is torch's profiler; only the harness may start or stop it."""
    import torch.autograd

    autograd_c = torch._C._autograd
    return [
        (autograd_c, name, f"profiler.{name}")
        for name in (
            "_enable_profiler",
            "_disable_profiler",
            "_enable_profiler_legacy",
            "_disable_profiler_legacy",
            "_prepare_profiler",
            "_enable_record_function",
        )
        if hasattr(autograd_c, name)
    ]


def _cuda_graph_methods() -> list[tuple[Any, str, str]]:
    import torch

    owners = [
        owner for owner in (getattr(torch._C, "_CUDAGraph", None), getattr(torch.cuda, "CUDAGraph", None)) if owner is not None
    ]
    return [
        (owner, name, f"cuda.graph.{owner.__name__}.{name}")
        for owner in owners
        for name in ("capture_begin", "replay", "capture_end")
        if name in vars(owner)
    ]


def native_files(directory: str, limit: int = 2000) -> list[str]:
    """Executable or loadable native files (ELF) under the job directory: native code the
    candidate brought or built, whichever way it would be loaded. Triton's own cache is left out:
    on a GPU it holds the launchers and kernels Triton compiles (loading a library from there by
    hand is refused by the hook's load check)."""
    found: list[str] = []
    cache_dir = os.environ.get("TRITON_CACHE_DIR")
    triton_cache = os.path.realpath(cache_dir) if cache_dir else None
    pending, seen = [directory], 0
    while pending and seen < limit:
        try:
            entries = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    if os.path.realpath(entry.path) != triton_cache:
                        pending.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    with open(entry.path, "rb") as handle:
                        if handle.read(4) == b"\x7fELF":
                            found.append(os.path.relpath(entry.path, directory))
            except OSError:
                continue
    return sorted(found)[:20]


def _short(args: Any) -> str:
    text = repr(args)
    return text if len(text) <= 300 else text[:300] + "…"
