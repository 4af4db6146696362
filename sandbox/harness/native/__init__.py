"""Builds and starts the native launch recorder (recorder.c) in a harness process.

The recorder writes every GPU kernel, memcpy and memset of this process, as CUPTI reports them, to
a descriptor whose reading end the judge holds (worker/native_evidence.py parses the stream). It
must be started before any submitted code is imported. Standard library and ctypes only: nothing
here imports torch, and nothing touches CUDA until `start`.

    record_to(fd, cache_dir)               # the harness's entry: attach or start, else close fd and say why
    recorder = load_recorder(fd)           # a fresh harness process: build (or reuse) and start
    prepare(private_dir)                   # the warm pool's zygote, once: build and dlopen, no CUDA
    start_ahead()                          # ... each spare, before its CUDA context: start, no descriptor
    use_descriptor(fd)                     # ... the child on assignment: attach (writes HELLO)

    recorder.mark(label, stream_handle)    # split the GPU timeline (label: u32, chosen by the judge)
    recorder.flush()                       # synchronize, deliver all records, write a FLUSH record

The shared object is compiled with the system's C compiler against the CUPTI headers that sit
beside the CUPTI library found, into a cache directory keyed by the source, the headers' CUPTI API
version, the compiler and the flags, so gcc runs once per cache directory, not per evaluation. The cache directory must not
be writable by candidates (a replaced .so would be loaded by the next process).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("recorder.c")
CUDA_DRIVER = "libcuda.so.1"
_BUILD_FLAGS = ("-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-std=c11", "-Wall")
_COMPILE_TIMEOUT_S = 120
_ERROR_BYTES = 512

_active: Recorder | None = None
_prepared: Prepared | None = None  # what `prepare` loaded in this process (a zygote's, inherited by its children)
last_failure: str | None = None  # why the last load_recorder/prepare returned None


@dataclass(frozen=True)
class CuptiLocation:
    """A CUPTI library and the include directories its headers (and cuda.h) are in."""

    library: str
    include_dirs: tuple[str, ...]
    api_version: int  # CUPTI_API_VERSION of those headers


def _cuda_roots() -> list[Path]:
    roots = [Path(os.environ[name]) for name in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(name)]
    roots.append(Path("/usr/local/cuda"))
    return roots


def _site_dirs() -> list[Path]:
    dirs = [Path(entry) for entry in sys.path if entry and os.path.isdir(entry)]
    try:
        import site

        dirs += [Path(entry) for entry in site.getsitepackages()]
    except (AttributeError, ImportError):  # a virtualenv's old site module
        pass
    unique: list[Path] = []
    for entry in dirs:
        if entry not in unique:
            unique.append(entry)
    return unique


def _loaded_cupti() -> str | None:
    """A libcupti already mapped into this process (torch's CUDA build links one): use that copy,
    never a second one."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if os.path.basename(path).startswith("libcupti.so") and os.path.isfile(path):
                    return path
    except OSError:
        pass
    return None


def _header_version(include_dir: Path) -> int | None:
    try:
        text = (include_dir / "cupti_version.h").read_text(errors="replace")
    except OSError:
        return None
    found = re.search(r"#define\s+CUPTI_API_VERSION\s+(\d+)", text)
    return int(found.group(1)) if found else None


def _libraries_near(lib_dir: Path) -> list[Path]:
    """libcupti.so* in a directory, the unversioned name last (it is a development link)."""
    if not lib_dir.is_dir():
        return []
    found = sorted(lib_dir.glob("libcupti.so*"), key=lambda p: (p.name == "libcupti.so", p.name))
    return [p for p in found if p.is_file()]


def _include_for(library: Path) -> tuple[str, ...] | None:
    """The include directories for a library: its own root's cupti.h first, then wherever cuda.h
    and crt/host_defines.h (which cupti.h includes) are found."""
    lib_dir = library.parent
    own = [lib_dir.parent / "include"]
    if lib_dir.parent.name == "lib64" or lib_dir.name == "lib64":
        own.append(lib_dir.parent.parent / "include")
    if "extras" in library.parts:  # /usr/local/cuda/extras/CUPTI/lib64
        own.append(lib_dir.parent / "include")
    cupti_dir = next((d for d in own if (d / "cupti.h").is_file()), None)
    if cupti_dir is None:
        return None
    dirs = [cupti_dir]
    extra: list[Path] = []
    # pip's split CUDA packages: nvidia/cuda_cupti beside nvidia/cuda_runtime (cu12), nvidia/cu13.
    nvidia = lib_dir.parent.parent
    if nvidia.name == "nvidia":
        extra += [nvidia / "cuda_runtime" / "include", nvidia / "cuda_nvcc" / "include", nvidia / "cu13" / "include"]
    extra += [root / "include" for root in _cuda_roots()]
    for needed in ("cuda.h", "crt/host_defines.h"):
        if not any((d / needed).is_file() for d in dirs):
            holder = next((d for d in extra if (d / needed).is_file()), None)
            if holder is None:
                return None
            dirs.append(holder)
    return tuple(str(d) for d in dirs)


def locate_cupti() -> CuptiLocation | str:
    """The CUPTI library to use and matching headers, or why there are none."""
    candidates: list[Path] = []
    loaded = _loaded_cupti()
    if loaded:
        candidates.append(Path(loaded))
    for site_dir in _site_dirs():
        for sub in ("nvidia/cu13/lib", "nvidia/cuda_cupti/lib"):
            candidates += _libraries_near(site_dir / sub)
    for root in _cuda_roots():
        candidates += _libraries_near(root / "lib64") + _libraries_near(root / "extras" / "CUPTI" / "lib64")
    if not candidates:
        return "no CUPTI library found (site-packages nvidia/cu13 or nvidia/cuda_cupti, CUDA_HOME, /usr/local/cuda)"
    for library in candidates if not loaded else candidates[:1]:
        include_dirs = _include_for(library)
        if include_dirs is None:
            continue
        version = _header_version(Path(include_dirs[0]))
        if version is not None:
            return CuptiLocation(str(library), include_dirs, version)
    return f"CUPTI library {candidates[0]} has no cupti.h, cuda.h and crt/host_defines.h beside it or under CUDA_HOME"


def default_cache_dir() -> Path:
    if os.environ.get("REFEREE_NATIVE_CACHE"):
        return Path(os.environ["REFEREE_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "referee" / "native"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "gcc", "cc", "clang"):
        if name and (found := shutil.which(name)):
            return found
    return None


def build(location: CuptiLocation, cache_dir: Path | None = None) -> Path | str:
    """Compile recorder.c for these headers unless the cache already holds it; the path or why not."""
    compiler = _compiler()
    if compiler is None:
        return "no C compiler (gcc, cc or clang) on PATH"
    source = SOURCE.read_bytes()
    # Headers of one CUPTI API version lay the records out alike: the include path is not in the key,
    # so the engine's build and a harness process's agree even where they found different copies.
    parts = [source, str(location.api_version).encode(), compiler.encode(), " ".join(_BUILD_FLAGS).encode()]
    key = hashlib.sha256(b"\0".join(parts))
    cache = cache_dir or default_cache_dir()
    target = cache / f"recorder-{key.hexdigest()[:20]}.so"
    if target.is_file():
        return target
    try:
        cache.mkdir(parents=True, exist_ok=True)
        handle, partial = tempfile.mkstemp(prefix=".recorder-", suffix=".so", dir=cache)
        os.close(handle)
    except OSError as exc:
        return f"cannot write the recorder's cache {cache}: {exc}"
    command = [
        compiler,
        *_BUILD_FLAGS,
        *(f"-I{d}" for d in location.include_dirs),
        "-o",
        partial,
        str(SOURCE),
        "-ldl",
        "-lpthread",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_COMPILE_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        os.unlink(partial)
        return f"compiling the recorder failed: {exc}"
    if done.returncode != 0:
        os.unlink(partial)
        return f"compiling the recorder failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}"
    os.replace(partial, target)  # atomic: a concurrent build of the same key writes the same bytes
    return target


class Recorder:
    """A started recorder. Its functions are bound here: the candidate may rebind module names."""

    def __init__(self, library: ctypes.CDLL, path: Path, location: CuptiLocation, attached: bool) -> None:
        self.library, self.path, self.location, self.attached = library, path, location, attached
        self._mark = library.referee_recorder_mark
        self._flush = library.referee_recorder_flush
        self._attach = library.referee_recorder_attach
        self._broken = library.referee_recorder_broken
        self._stop = library.referee_recorder_stop

    def mark(self, label: int, stream: int = 0) -> int:
        """Write a MARK record and enqueue the marker memset on `stream` (a CUstream handle, e.g.
        torch.cuda.current_stream().cuda_stream; 0 is the legacy default stream). 0 on success,
        else the CUresult (the judge sees it in the MARK record too)."""
        return int(self._mark(label & 0xFFFFFFFF, stream))

    def flush(self, synchronize: bool = True) -> int:
        """Deliver every record completed so far, then a FLUSH record (0 on success)."""
        return int(self._flush(1 if synchronize else 0))

    def attach(self, fd: int) -> bool:
        """Give a recorder started without a descriptor the judge's pipe; False if it already has one."""
        attached_now = int(self._attach(fd)) == 0
        self.attached = self.attached or attached_now
        return attached_now

    @property
    def broken(self) -> bool:
        """Writing to the descriptor failed (the judge closed it)."""
        return bool(self._broken())

    def stop(self) -> None:
        self._stop()


@dataclass
class Prepared:
    """A built and loaded recorder library that has not started CUPTI (safe before fork)."""

    library: ctypes.CDLL
    path: Path
    location: CuptiLocation

    def start(self, fd: int = -1, driver: str = CUDA_DRIVER) -> Recorder | None:
        """Start recording to `fd` (-1: discard until `Recorder.attach`). None, with `last_failure`
        set, when CUPTI or the driver refuses."""
        global _active, last_failure
        if _active is not None:
            return _active
        reason = ctypes.create_string_buffer(_ERROR_BYTES)
        code = self.library.referee_recorder_start(self.location.library.encode(), driver.encode(), fd, reason, _ERROR_BYTES)
        if code != 0:
            last_failure = reason.value.decode("utf-8", "replace") or f"start failed ({code})"
            return None
        _active = Recorder(self.library, self.path, self.location, attached=fd >= 0)
        last_failure = None
        return _active


def _declare(library: ctypes.CDLL) -> None:
    library.referee_recorder_start.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    library.referee_recorder_start.restype = ctypes.c_int
    library.referee_recorder_mark.argtypes = [ctypes.c_uint32, ctypes.c_uint64]
    library.referee_recorder_mark.restype = ctypes.c_int
    library.referee_recorder_flush.argtypes = [ctypes.c_int]
    library.referee_recorder_flush.restype = ctypes.c_int
    library.referee_recorder_attach.argtypes = [ctypes.c_int]
    library.referee_recorder_attach.restype = ctypes.c_int
    library.referee_recorder_stop.argtypes = []
    library.referee_recorder_stop.restype = ctypes.c_int
    library.referee_recorder_broken.argtypes = []
    library.referee_recorder_broken.restype = ctypes.c_int


def prepare(cache_dir: Path | None = None, location: CuptiLocation | None = None) -> Prepared | None:
    """Locate CUPTI, build (or reuse) the recorder and load it, without starting it; None with
    `last_failure` set when CUPTI, its headers or a compiler is missing."""
    global last_failure, _prepared
    found = location or locate_cupti()
    if isinstance(found, str):
        last_failure = found
        return None
    built = build(found, cache_dir)
    if isinstance(built, str):
        last_failure = built
        return None
    try:
        library = ctypes.CDLL(str(built), mode=ctypes.RTLD_LOCAL)
        _declare(library)
    except (OSError, AttributeError) as exc:
        last_failure = f"loading {built} failed: {exc}"
        return None
    last_failure = None
    _prepared = Prepared(library, built, found)
    return _prepared


def load_recorder(fd: int, cache_dir: Path | None = None) -> Recorder | None:
    """Build or reuse, load and start the recorder writing to `fd`; None (reason in `last_failure`)
    where CUPTI, its headers, a compiler or a GPU driver is missing, e.g. on the CPU."""
    prepared = prepare(cache_dir)
    return prepared.start(fd) if prepared is not None else None


def active() -> Recorder | None:
    """The recorder started in this process, if any."""
    return _active


def use_descriptor(fd: int, cache_dir: Path | None = None) -> Recorder | None:
    """Record to the judge's pipe `fd`: attach the recorder a warm-pool spare started ahead of
    demand, or build/load and start one. Call it before any submitted code is imported. None, with
    `last_failure` set, when there is no recorder to be had (the judge then sees no HELLO)."""
    global last_failure
    recorder = _active
    if recorder is None:
        return load_recorder(fd, cache_dir)
    if recorder.attached or not recorder.attach(fd):
        last_failure = "the recorder already writes to another descriptor"
        return None
    return recorder


def start_ahead() -> Recorder | None:
    """In a warm-pool spare, after its CUDA context exists and before it is assigned: start the
    recorder the zygote prepared, without a descriptor yet (starting CUPTI is the slow part; on
    assignment `use_descriptor` only attaches). None where the zygote prepared none."""
    if _active is not None:
        return _active
    return _prepared.start(-1) if _prepared is not None else None


def record_to(fd: int, cache_dir: Path | None = None) -> bool:
    """The harness's entry (fresh process or warm-pool child), before any submitted code: record to
    the judge's pipe `fd`. Where no recorder can be had, close `fd` - nothing else in this process
    may write there, so the judge sees a stream without HELLO - and say why on stderr."""
    try:
        is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
    except OSError:
        is_pipe = False
    if not is_pipe:  # not what the judge passes: leave whatever it is alone
        print(f"referee: no native launch recorder: descriptor {fd} is not a pipe", file=sys.stderr, flush=True)
        return False
    if use_descriptor(fd, cache_dir) is not None:
        return True
    os.close(fd)
    print(f"referee: no native launch recorder: {last_failure}", file=sys.stderr, flush=True)
    return False


def stop_ahead() -> None:
    """A spare assigned without a record pipe: stop the recorder it started ahead of demand, so
    the process runs as it would without one (no activity tracing)."""
    global _active
    if _active is not None and not _active.attached:
        _active.stop()
        _active = None
