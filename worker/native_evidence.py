"""The judge's side of the native launch recorder (sandbox/harness/native/recorder.c).

A harness process that runs the recorder writes binary records to a pipe the engine created: every
GPU kernel, memcpy and memset of that process as CUPTI reports them, a MARK record (host side) and a
marker memset (GPU side) each time the harness calls `Recorder.mark(label)`, and a FLUSH record
each time it flushes. This module reads that pipe (`RecordPipe`), parses the stream (`parse`) and
splits the GPU timeline into the windows between markers (`windows`): per window the kernels, the
device-to-host copies, the GPU time spanned and the GPU time busy. Standard library only: the
engine never imports torch.

The process that writes is hostile. The parser never raises on any input; it returns what it could
read and says what was wrong (`problems`). It checks what a stream written by the recorder alone
must satisfy: a HELLO first, consecutive sequence numbers, known kinds and sizes, plausible
timestamps, FLUSH counts that match, no dropped records. `windows` checks that every marker was
recorded once on the host and once on the GPU, in order. A candidate that silences CUPTI loses its
markers; one that writes into the pipe breaks the sequence unless it also finds and advances the
recorder's private counter. What a candidate running native code in the same process can still
forge is listed in docs/native-recorder.md.

Stream format (little-endian), every record: header `<IHHI` = magic 0x52464552 ("REFR"), kind,
size (bytes, header included), sequence number (0, 1, 2, ... per process); then by kind:

    1 HELLO   <IIIIQQQ  format, CUPTI runtime version, CUPTI header version, pid, host_ns, gpu_ns, discarded
    2 KERNEL  <QQIIII3i3iH start, end, stream, correlation, device, context, grid, block, name length; name
    3 MEMCPY  <QQIIQBBBB start, end, stream, correlation, bytes, copy kind, src kind, dst kind, pad
    4 MEMSET  <QQIIQIHH start, end, stream, correlation, bytes, value, memory kind, pad
    5 MARK    <IiIIQQ   label, CUresult, stream id, pad, host_ns (CLOCK_MONOTONIC), gpu_ns (CUPTI clock at enqueue)
    6 FLUSH   <IIQQQ    records written before it, pad, records dropped by CUPTI, host_ns, gpu_ns
    7 ERROR   <iH       CUPTI error code, text length; text
"""

from __future__ import annotations

import bisect
import functools
import itertools
import os
import re
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

MAGIC = 0x52464552
FORMAT = 1
HEADER = struct.Struct("<IHHI")
MARKER_BYTES = 4  # the marker memset writes one 32-bit word
COPY_KINDS = {1: "HtoD", 2: "DtoH", 3: "HtoA", 4: "AtoH", 5: "AtoA", 6: "AtoD", 7: "DtoA", 8: "DtoD", 9: "HtoH", 10: "PtoP"}
DTOH = 2
# A marker memset cannot run on the GPU before the host enqueued it. Both times are on CUPTI's clock
# (GPU timestamps normalised to it); the margin is for that normalisation, not yet measured.
ENQUEUE_TOLERANCE_NS = 5_000_000


@dataclass(frozen=True)
class Hello:
    seq: int
    format: int
    cupti_runtime: int
    cupti_compiled: int
    pid: int
    host_ns: int
    gpu_ns: int
    discarded: int  # records CUPTI delivered before the recorder had a descriptor


@dataclass(frozen=True)
class Kernel:
    seq: int
    start_ns: int
    end_ns: int
    stream: int
    correlation: int
    device: int
    context: int
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    name: str


@dataclass(frozen=True)
class Memcpy:
    seq: int
    start_ns: int
    end_ns: int
    stream: int
    correlation: int
    bytes: int
    copy_kind: int
    src_kind: int
    dst_kind: int

    @property
    def direction(self) -> str:
        return COPY_KINDS.get(self.copy_kind, f"kind{self.copy_kind}")


@dataclass(frozen=True)
class Memset:
    seq: int
    start_ns: int
    end_ns: int
    stream: int
    correlation: int
    bytes: int
    value: int
    memory_kind: int


@dataclass(frozen=True)
class Mark:
    seq: int
    label: int
    status: int  # the CUresult of enqueueing the marker memset (0: success)
    stream: int
    host_ns: int
    gpu_ns: int


@dataclass(frozen=True)
class Flush:
    seq: int
    written: int
    dropped: int
    host_ns: int
    gpu_ns: int


@dataclass(frozen=True)
class RecorderError:
    seq: int
    code: int
    text: str


Record = Union[Hello, Kernel, Memcpy, Memset, Mark, Flush, RecorderError]  # noqa: UP007  (a runtime alias)
Activity = Union[Kernel, Memcpy, Memset]  # noqa: UP007

_BODIES: dict[int, struct.Struct] = {
    1: struct.Struct("<IIIIQQQ"),
    2: struct.Struct("<QQIIII3i3iH"),
    3: struct.Struct("<QQIIQBBBB"),
    4: struct.Struct("<QQIIQIHH"),
    5: struct.Struct("<IiIIQQ"),
    6: struct.Struct("<IIQQQ"),
    7: struct.Struct("<iH"),
}


class RecordStream(list[Record]):
    """The records read, in stream order, and what was wrong with the stream (empty: nothing)."""

    def __init__(self, records: Iterable[Record] = (), problems: Iterable[str] = (), truncated: bool = False) -> None:
        super().__init__(records)
        self.problems: list[str] = list(problems)
        self.truncated = truncated  # the stream ends inside a record (a process killed mid-write)
        self.malformed = any(problem.startswith("malformed") for problem in self.problems)  # garbage: reading stopped

    @property
    def hello(self) -> Hello | None:
        return self[0] if self and isinstance(self[0], Hello) else None

    @property
    def flushes(self) -> int:
        return sum(1 for record in self if isinstance(record, Flush))


def _decode(kind: int, seq: int, body: bytes) -> Record | str:
    """One record from its body, or why it is malformed."""
    layout = _BODIES[kind]
    fixed = layout.unpack_from(body)
    tail = body[layout.size :]
    if kind == 1:
        return Hello(seq, *fixed)
    if kind == 2:
        start, end, stream, correlation, device, context, gx, gy, gz, bx, by, bz, name_len = fixed
        if name_len != len(tail):
            return f"a kernel name of {name_len} bytes in a record with {len(tail)}"
        return Kernel(
            seq, start, end, stream, correlation, device, context, (gx, gy, gz), (bx, by, bz), tail.decode("utf-8", "replace")
        )
    if kind == 3:
        return Memcpy(seq, *fixed[:8])
    if kind == 4:
        return Memset(seq, *fixed[:7])
    if kind == 5:
        label, status, stream, _pad, host_ns, gpu_ns = fixed
        return Mark(seq, label, status, stream, host_ns, gpu_ns)
    if kind == 6:
        written, _pad, dropped, host_ns, gpu_ns = fixed
        return Flush(seq, written, dropped, host_ns, gpu_ns)
    code, text_len = fixed
    if text_len != len(tail):
        return f"an error text of {text_len} bytes in a record with {len(tail)}"
    return RecorderError(seq, code, tail.decode("utf-8", "replace"))


def parse(data: bytes | bytearray | memoryview) -> RecordStream:
    """Every whole record up to the first malformed byte; never raises. `problems` says what a
    stream written by the recorder alone could not contain."""
    data = bytes(data)
    records: list[Record] = []
    problems: list[str] = []
    truncated = False
    offset = 0
    expected_seq = 0
    while offset < len(data):
        if len(data) - offset < HEADER.size:
            truncated = True
            problems.append(f"truncated: the stream ends inside a record header at byte {offset}")
            break
        magic, kind, size, seq = HEADER.unpack_from(data, offset)
        if magic != MAGIC:
            problems.append(f"malformed: no record header at byte {offset} (garbage in the stream)")
            break
        layout = _BODIES.get(kind)
        if layout is None or size < HEADER.size + layout.size or (kind not in (2, 7) and size != HEADER.size + layout.size):
            problems.append(f"malformed: a record of kind {kind} and size {size} at byte {offset}")
            break
        if len(data) - offset < size:
            truncated = True
            problems.append(f"truncated: the stream ends inside record {seq} at byte {offset}")
            break
        decoded = _decode(kind, seq, data[offset + HEADER.size : offset + size])
        if isinstance(decoded, str):
            problems.append(f"malformed: {decoded} at byte {offset}")
            break
        if seq != expected_seq:
            problems.append(
                f"sequence: record {len(records)} is numbered {seq}, expected {expected_seq} "
                "(records written by something other than the recorder, or lost)"
            )
        expected_seq = seq + 1
        problems.extend(_check(decoded, len(records)))
        records.append(decoded)
        offset += size
    if records and not isinstance(records[0], Hello):
        problems.append("the stream does not start with the recorder's HELLO")
    return RecordStream(records, problems, truncated)


def _check(record: Record, index: int) -> list[str]:
    """What a single record from the recorder could not say."""
    if isinstance(record, Hello):
        found = []
        if index:
            found.append(f"a second HELLO at record {index}")
        if record.format != FORMAT:
            found.append(f"HELLO announces format {record.format}, this judge reads {FORMAT}")
        if record.cupti_runtime != record.cupti_compiled:
            found.append(f"CUPTI version {record.cupti_runtime} differs from the headers' {record.cupti_compiled}")
        return found
    if isinstance(record, (Kernel, Memcpy, Memset)):
        if record.start_ns == 0 or record.end_ns < record.start_ns:
            return [f"implausible GPU times in record {record.seq} ({record.start_ns}..{record.end_ns})"]
        return []
    if isinstance(record, Flush):
        found = []
        if record.written != record.seq:
            found.append(f"FLUSH {record.seq} counts {record.written} records before it")
        if record.dropped:
            found.append(f"CUPTI dropped {record.dropped} records (the evidence is incomplete)")
        return found
    if isinstance(record, RecorderError):
        return [f"recorder error {record.code}: {record.text}"]
    return []


# ---- windows


@dataclass(frozen=True)
class KernelSpan:
    name: str
    start_ns: int
    end_ns: int
    stream: int

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass
class Window:
    """The GPU timeline between the marker labelled `label` and the next one."""

    label: int
    start_ns: int  # the end of the opening marker's memset
    end_ns: int  # the start of the closing marker's memset
    complete: bool = True  # both markers were recorded (else nothing is attributed to the window)
    kernels: list[KernelSpan] = field(default_factory=list)
    copies: list[Memcpy] = field(default_factory=list)
    memsets: list[Memset] = field(default_factory=list)  # other than the markers
    streams: set[int] = field(default_factory=set)  # streams with activity in the window

    @property
    def span_ns(self) -> int:
        return max(0, self.end_ns - self.start_ns)

    @property
    def busy_ns(self) -> int:
        """GPU time covered by at least one activity (the union of their intervals)."""
        intervals = sorted(
            [(k.start_ns, k.end_ns) for k in self.kernels]
            + [(c.start_ns, c.end_ns) for c in self.copies]
            + [(m.start_ns, m.end_ns) for m in self.memsets]
        )
        busy, reach = 0, None
        for start, end in intervals:
            if reach is None or start > reach:
                busy += end - start
                reach = end
            elif end > reach:
                busy += end - reach
                reach = end
        return busy

    @property
    def device_to_host(self) -> list[int]:
        """Bytes of each device-to-host copy in the window."""
        return [copy.bytes for copy in self.copies if copy.copy_kind == DTOH]


class WindowList(list[Window]):
    """Windows in label order, and what was wrong with the markers or the activity around them."""

    def __init__(self, items: Iterable[Window] = (), problems: Iterable[str] = (), before: int = 0, after: int = 0) -> None:
        super().__init__(items)
        self.problems: list[str] = list(problems)
        self.before = before  # activity records that ended before the first marker
        self.after = after  # activity records that started after the last marker


def windows(records: Sequence[Record], first_label: int, last_label: int) -> WindowList:
    """Split the GPU timeline at the markers first_label .. last_label (last_label - first_label
    windows; window i lies between markers first_label + i and first_label + i + 1)."""
    problems: list[str] = []
    if last_label <= first_label:
        return WindowList([], [f"no windows between labels {first_label} and {last_label}"])
    labels = range(first_label, last_label + 1)
    host: dict[int, list[Mark]] = {label: [] for label in labels}
    for record in records:
        if isinstance(record, Mark) and record.label in host:
            host[record.label].append(record)
    shaped: dict[int, list[Memset]] = {}  # memsets shaped like a marker, by value: one pass, not one per label
    for record in records:
        if isinstance(record, Memset) and record.bytes == MARKER_BYTES and record.value in host:
            shaped.setdefault(record.value, []).append(record)
    gpu: dict[int, Memset] = {}
    for label in labels:
        marks = host[label]
        if not marks:
            problems.append(f"marker {label}: no MARK record (the harness never placed it, or it was removed)")
            continue
        if len(marks) > 1:
            problems.append(f"marker {label}: placed {len(marks)} times")
        if marks[0].status != 0:
            problems.append(f"marker {label}: enqueueing it failed (CUresult {marks[0].status})")
            continue
        found = shaped.get(label, [])
        if not found:
            problems.append(f"marker {label}: placed but never recorded on the GPU (recording was stopped or disabled)")
            continue
        if len(found) > 1:
            problems.append(f"marker {label}: {len(found)} GPU records (a memset imitating a marker)")
        gpu[label] = found[0]
        if marks[0].stream and found[0].stream != marks[0].stream:
            problems.append(f"marker {label}: ran on stream {found[0].stream}, placed on stream {marks[0].stream}")
        if found[0].start_ns + ENQUEUE_TOLERANCE_NS < marks[0].gpu_ns:
            problems.append(f"marker {label}: ran on the GPU before it was enqueued (a forged record)")
    ordered = [gpu[label] for label in labels if label in gpu]
    if any(b.start_ns < a.end_ns for a, b in itertools.pairwise(ordered)):
        problems.append("markers ran out of order on the GPU")

    result: list[Window] = []
    for label in labels[:-1]:
        opening, closing = gpu.get(label), gpu.get(label + 1)
        if opening is None or closing is None:
            result.append(Window(label, 0, 0, complete=False))
        else:
            result.append(Window(label, opening.end_ns, closing.start_ns))
    marker_seqs = {marker.seq for marker in gpu.values()}
    bounds = [w.start_ns for w in result if w.complete]
    placed = [w for w in result if w.complete]
    first_start = gpu[first_label].start_ns if first_label in gpu else None
    last_end = gpu[last_label].end_ns if last_label in gpu else None
    before = after = 0
    for record in records:
        if not isinstance(record, (Kernel, Memcpy, Memset)) or record.seq in marker_seqs:
            continue
        if first_start is not None and record.end_ns <= first_start:
            before += 1
            continue
        if last_end is not None and record.start_ns >= last_end:
            after += 1
            continue
        slot = bisect.bisect_right(bounds, record.start_ns) - 1
        if slot < 0 or record.start_ns > placed[slot].end_ns:
            problems.append(f"{_describe(record)} runs across a marker, outside every window")
            continue
        window = placed[slot]
        if record.end_ns > window.end_ns:
            problems.append(f"{_describe(record)} runs past the end of window {window.label}")
        window.streams.add(record.stream)
        if isinstance(record, Kernel):
            window.kernels.append(KernelSpan(record.name, record.start_ns, record.end_ns, record.stream))
        elif isinstance(record, Memcpy):
            window.copies.append(record)
        else:
            window.memsets.append(record)
    return WindowList(result, problems, before, after)


def recorded_markers(records: Iterable[Record]) -> set[int]:
    """The labels of the marker memsets the GPU ran (CUPTI delivers a buffer of records whenever it
    completes, so a round's last records may reach the pipe after its FLUSH record)."""
    return {r.value for r in records if isinstance(r, Memset) and r.bytes == MARKER_BYTES}


def stream_summary(records: RecordStream, labels: range) -> str:
    """What a round's records held, for the note when they do not add up."""
    marks = sum(1 for r in records if isinstance(r, Mark) and r.label in labels)
    recorded = len(recorded_markers(records) & set(labels))
    flushes = [r for r in records if isinstance(r, Flush)]
    dropped = flushes[-1].dropped if flushes else 0
    first = next((i for i, r in enumerate(records) if isinstance(r, Mark) and r.label in labels), len(records))
    later = records[first:]
    kernels = sum(1 for r in later if isinstance(r, Kernel))
    memsets = [r for r in later if isinstance(r, Memset)]
    shapes = sorted({(r.bytes, r.value) for r in memsets})[:4]
    return (
        f"{marks} of {len(labels)} markers placed, {recorded} recorded on the GPU, {len(flushes)} flushes, "
        f"{dropped} records dropped by CUPTI; since the first marker {kernels} kernels and {len(memsets)} memsets "
        f"(bytes, value: {shapes})"
    )


def _describe(record: Activity) -> str:
    if isinstance(record, Kernel):
        return f"kernel {record.name[:80]!r} (record {record.seq})"
    if isinstance(record, Memcpy):
        return f"a {record.direction} copy of {record.bytes} bytes (record {record.seq})"
    return f"a memset of {record.bytes} bytes (record {record.seq})"


# ---- attribution


def silent_windows(window_list: Iterable[Window]) -> list[int]:
    """Labels of complete windows in which no kernel ran: a call that launched nothing, or one
    whose kernel records were silenced while its markers still arrived."""
    return [window.label for window in window_list if window.complete and not window.kernels]


def names_kernel(function: str, kernel: str) -> bool:
    """Whether the GPU kernel `kernel` is the Triton function `function` (Triton names the kernel
    after the function; older releases appended the argument specialisation, `_0d1d2de`). A name
    that looks like a mangled C++ symbol (`_Z...`) never matches: a submission could name a
    @triton.jit function after a library kernel to claim its time."""
    if not function or function.startswith("_Z"):
        return False
    return kernel == function or re.fullmatch(re.escape(function) + r"_(?:\d+[cdei]*)+", kernel) is not None


def time_by_name(window_list: Iterable[Window]) -> dict[str, int]:
    """GPU nanoseconds per kernel name, plus "memcpy <direction>" and "memset" entries."""
    totals: dict[str, int] = {}
    for window in window_list:
        for kernel in window.kernels:
            totals[kernel.name] = totals.get(kernel.name, 0) + kernel.duration_ns
        for copy in window.copies:
            key = f"memcpy {copy.direction}"
            totals[key] = totals.get(key, 0) + copy.end_ns - copy.start_ns
        for memset in window.memsets:
            totals["memset"] = totals.get("memset", 0) + memset.end_ns - memset.start_ns
    return totals


def share_of_time(window_list: Iterable[Window], functions: Iterable[str]) -> float | None:
    """The share of GPU activity time (kernels, copies and memsets) in the windows spent in kernels
    named after `functions` (the submission's @triton.jit functions, from its source); None when
    the windows saw no activity."""
    wanted = [name for name in functions if name]
    own = total = 0
    for name, spent in time_by_name(window_list).items():
        total += spent
        if any(names_kernel(function, name) for function in wanted):
            own += spent
    return own / total if total else None


def profile(window_list: Sequence[Window], functions: Iterable[str], top: int = 10) -> dict[str, object]:
    """What the harness's `profile` command reported, from the records of the calls' windows instead
    (torch's profiler must not run beside the recorder): {"fraction": the submission's share of GPU
    activity time or None, "kernels_us": the `top` names by GPU microseconds}."""
    totals = time_by_name(window_list)
    ranked = sorted(totals.items(), key=lambda item: -item[1])[:top]
    return {"fraction": share_of_time(window_list, functions), "kernels_us": {name: ns / 1e3 for name, ns in ranked}}


# ---- the pipe


@functools.cache
def recorder_cache() -> Path | None:
    """Build the recorder once per engine process, here in the trusted engine (outside any
    isolation, before any candidate runs), into the engine user's cache; fresh harness processes
    given it (`--native-cache`) only load it. None where it cannot be built (no
    CUPTI headers or compiler: harness processes then report why on stderr)."""
    from triton_referee.sandbox.harness import native

    location = native.locate_cupti()
    if isinstance(location, str):
        return None
    built = native.build(location, native.default_cache_dir())
    return built.parent if isinstance(built, Path) else None


class RecordPipe:
    """A pipe for one harness process's records: the engine keeps the read end and drains it on a
    thread (a full pipe would block the recorder), keeping at most `cap` bytes (more is flagged)."""

    def __init__(self, cap: int = 256 << 20) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.cap = cap
        self.overflowed = False
        self._data = bytearray()
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._drain, name="native-records", daemon=True)
        self._thread.start()

    def child_fd(self) -> int:
        """The write end, to pass to the harness process; close it here with `close_child_end`."""
        return self.write_fd

    def close_child_end(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 1 << 16)
            except OSError:
                chunk = b""
            with self._lock:
                if not chunk:  # every write end is closed: the process is gone
                    os.close(self.read_fd)
                    self._closed = True
                    self._lock.notify_all()
                    return
                room = self.cap - len(self._data)
                if len(chunk) > room:
                    self.overflowed = True
                self._data += chunk[: max(0, room)]
                self._lock.notify_all()

    def data(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    def stream(self) -> RecordStream:
        parsed = parse(self.data())
        if self.overflowed:
            parsed.problems.append(f"the process wrote more than {self.cap} bytes of records (the rest was dropped)")
        return parsed

    def wait_for_flush(self, count: int, timeout: float) -> RecordStream:
        """Wait until the stream holds at least `count` FLUSH records (or ends, or `timeout` passes),
        and return it parsed."""
        return self.wait_until(lambda parsed: parsed.flushes >= count, timeout)

    def wait_until(self, ready: Callable[[RecordStream], bool], timeout: float) -> RecordStream:
        """Wait until `ready` holds for the parsed stream (or it ends, or `timeout` passes), and
        return it parsed."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                size, closed = len(self._data), self._closed
            parsed = self.stream()
            if ready(parsed) or closed or parsed.malformed:
                return parsed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return parsed
            with self._lock:
                if len(self._data) == size and not self._closed:
                    self._lock.wait(remaining)

    def close(self, timeout: float = 1.0) -> None:
        """Close this end's copy of the write end and wait for the reader to see the end of the
        stream (the read end is closed by the reader thread, once every writer has gone)."""
        self.close_child_end()
        self._thread.join(timeout=timeout)
