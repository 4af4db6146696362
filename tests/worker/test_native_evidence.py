"""The judge's reading of native recorder streams (worker/native_evidence.py), on synthetic
streams: honest ones, truncated ones, garbage, and what a candidate writing into the descriptor or
imitating markers would produce. The parser must never raise and must say what is wrong."""

from __future__ import annotations

import os
import random
import struct
import threading

import pytest

from triton_referee.worker import native_evidence as ne

BASE = 0x40000000


class Writer:
    """Writes records in the recorder's format (tests/native/fake_cupti.c checks the C side)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.seq = 0

    def _record(self, kind: int, body: bytes, seq: int | None = None) -> Writer:
        number = self.seq if seq is None else seq
        self.data += struct.pack("<IHHI", ne.MAGIC, kind, 12 + len(body), number) + body
        self.seq = number + 1
        return self

    def hello(self, discarded: int = 0, runtime: int = 130001) -> Writer:
        return self._record(1, struct.pack("<IIIIQQQ", 1, runtime, 130001, 42, 1, 1, discarded))

    def kernel(self, name: str, start: int, end: int, stream: int = 7, seq: int | None = None) -> Writer:
        raw = name.encode()
        return self._record(2, struct.pack("<QQIIII3i3iH", start, end, stream, 1, 0, 1, 4, 1, 1, 128, 1, 1, len(raw)) + raw, seq)

    def memcpy(self, nbytes: int, kind: int, start: int, end: int, stream: int = 7) -> Writer:
        return self._record(3, struct.pack("<QQIIQBBBB", start, end, stream, 2, nbytes, kind, 0, 0, 0))

    def memset(self, value: int, start: int, end: int, nbytes: int = 4, stream: int = 7) -> Writer:
        return self._record(4, struct.pack("<QQIIQIHH", start, end, stream, 3, nbytes, value, 0, 0))

    def mark(self, label: int, gpu_ns: int = 0, status: int = 0, stream: int = 7) -> Writer:
        return self._record(5, struct.pack("<IiIIQQ", label, status, stream, 0, 1, gpu_ns))

    def flush(self, dropped: int = 0, written: int | None = None) -> Writer:
        return self._record(6, struct.pack("<IIQQQ", self.seq if written is None else written, 0, dropped, 1, 1))

    def error(self, text: str) -> Writer:
        return self._record(7, struct.pack("<iH", 17, len(text)) + text.encode())

    def marker(self, label: int, at: int) -> Writer:
        """A MARK record and its GPU memset at `at` .. `at` + 1000."""
        return self.mark(label, gpu_ns=at - 100).memset(label, at, at + 1000)


def honest() -> Writer:
    w = Writer().hello()
    w.marker(BASE, 10_000)
    w.kernel("add_kernel", 12_000, 17_000).memcpy(4096, ne.DTOH, 17_200, 18_000)
    w.marker(BASE + 1, 20_000)
    w.kernel("_ZN2at6native18elementwise_kernelEv", 22_000, 25_000).kernel("add_kernel", 24_000, 27_000)
    w.marker(BASE + 2, 30_000)
    return w.flush()


def test_an_honest_stream_parses_cleanly_into_windows() -> None:
    stream = ne.parse(honest().data)
    assert stream.problems == [] and not stream.truncated and not stream.malformed
    assert stream.flushes == 1 and stream.hello is not None
    found = ne.windows(stream, BASE, BASE + 2)
    assert found.problems == [] and [w.label for w in found] == [BASE, BASE + 1]
    first, second = found
    assert (first.start_ns, first.end_ns, first.span_ns) == (11_000, 20_000, 9_000)
    assert [k.name for k in first.kernels] == ["add_kernel"] and first.device_to_host == [4096]
    assert first.busy_ns == 5_000 + 800
    assert second.busy_ns == 27_000 - 22_000  # overlapping kernels count once
    assert ne.time_by_name(found) == {"add_kernel": 8_000, "memcpy DtoH": 800, "_ZN2at6native18elementwise_kernelEv": 3_000}
    assert ne.share_of_time(found, ["add_kernel"]) == pytest.approx(8_000 / 11_800)
    assert ne.silent_windows(found) == []


def test_every_truncation_is_flagged_and_never_raises() -> None:
    data = bytes(honest().data)
    boundaries = set()
    offset = 0
    while offset < len(data):
        boundaries.add(offset)
        offset += struct.unpack_from("<IHHI", data, offset)[2]
    for cut in range(len(data)):
        stream = ne.parse(data[:cut])
        if cut in boundaries:
            assert not stream.truncated, cut
        else:
            assert stream.truncated and stream.problems, cut
        ne.windows(stream, BASE, BASE + 2)  # whatever is left, windows cope


def test_random_garbage_and_mutations_never_raise() -> None:
    rng = random.Random(1234)
    data = bytes(honest().data)
    for _ in range(2000):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        stream = ne.parse(bytes(mutated))
        found = ne.windows(stream, BASE, BASE + 2)
        ne.share_of_time(found, ["add_kernel"])
    for _ in range(300):
        garbage = rng.randbytes(rng.randint(0, 400))
        assert ne.parse(garbage).problems or not garbage


def test_garbage_after_good_records_keeps_the_good_ones_and_flags_the_rest() -> None:
    w = Writer().hello().marker(BASE, 10_000)
    stream = ne.parse(bytes(w.data) + b"\x00forged by the candidate")
    assert len(stream) == 3 and stream.malformed
    assert any("garbage" in problem for problem in stream.problems)


def test_a_record_inserted_by_another_writer_breaks_the_sequence() -> None:
    w = Writer().hello().marker(BASE, 10_000)
    w.kernel("add_kernel", 12_000, 13_000, seq=2)  # guessed a number already used
    w.seq = 3
    w.marker(BASE + 1, 20_000).flush()
    stream = ne.parse(w.data)
    assert any(problem.startswith("sequence") for problem in stream.problems), stream.problems


def test_a_stream_without_hello_or_with_two_is_flagged() -> None:
    w = Writer()
    w.seq = 0
    w.marker(BASE, 10_000)
    assert any("HELLO" in problem for problem in ne.parse(w.data).problems)
    twice = Writer().hello().hello()
    assert any("second HELLO" in problem for problem in ne.parse(twice.data).problems)


def test_version_mismatch_dropped_records_errors_and_bad_flush_counts_are_flagged() -> None:
    problems = ne.parse(Writer().hello(runtime=120000).data).problems
    assert any("differs from the headers" in p for p in problems)
    assert any("dropped 5 records" in p for p in ne.parse(Writer().hello().flush(dropped=5).data).problems)
    assert any("recorder error 17" in p for p in ne.parse(Writer().hello().error("flush failed").data).problems)
    assert any("counts 9 records" in p for p in ne.parse(Writer().hello().flush(written=9).data).problems)


def test_implausible_times_and_bad_sizes_are_flagged() -> None:
    assert any("implausible" in p for p in ne.parse(Writer().hello().kernel("k", 50, 10).data).problems)
    assert any("implausible" in p for p in ne.parse(Writer().hello().kernel("k", 0, 10).data).problems)
    w = Writer().hello()
    w.data += struct.pack("<IHHI", ne.MAGIC, 3, 20, 1) + b"\0" * 8  # a memcpy record too short
    assert ne.parse(w.data).malformed
    w = Writer().hello()
    w.data += struct.pack("<IHHI", ne.MAGIC, 99, 12, 1)  # an unknown kind
    assert ne.parse(w.data).malformed
    w = Writer().hello()
    body = struct.pack("<QQIIII3i3iH", 1, 2, 7, 1, 0, 1, 1, 1, 1, 1, 1, 1, 50) + b"short"
    w.data += struct.pack("<IHHI", ne.MAGIC, 2, 12 + len(body), 1) + body  # name length lies
    assert ne.parse(w.data).malformed


def test_missing_duplicate_failed_and_early_markers_are_flagged() -> None:
    w = Writer().hello().marker(BASE, 10_000).mark(BASE + 1, gpu_ns=19_000)  # no GPU record
    w.mark(BASE + 2, status=201)  # enqueueing failed
    found = ne.windows(ne.parse(w.data), BASE, BASE + 3)
    text = " | ".join(found.problems)
    assert "never recorded on the GPU" in text and "CUresult 201" in text and f"marker {BASE + 3}: no MARK" in text
    assert [w.complete for w in found] == [False, False, False]

    w = Writer().hello().marker(BASE, 10_000).kernel("k", 11_500, 12_000)
    w.memset(BASE + 1, 12_500, 12_600)  # the candidate imitates the next marker before the real one
    w.marker(BASE + 1, 20_000)
    assert any("imitating a marker" in p for p in ne.windows(ne.parse(w.data), BASE, BASE + 1).problems)

    w = Writer().hello().mark(BASE, gpu_ns=50_000_000).memset(BASE, 10_000, 11_000).marker(BASE + 1, 60_000_000)
    assert any("before it was enqueued" in p for p in ne.windows(ne.parse(w.data), BASE, BASE + 1).problems)

    w = Writer().hello().marker(BASE, 30_000).marker(BASE + 1, 10_000)
    assert any("out of order" in p for p in ne.windows(ne.parse(w.data), BASE, BASE + 1).problems)

    w = Writer().hello().marker(BASE, 10_000).mark(BASE, gpu_ns=15_000).marker(BASE + 1, 20_000)
    assert any("placed 2 times" in p for p in ne.windows(ne.parse(w.data), BASE, BASE + 1).problems)


def test_an_honest_memset_with_another_value_or_size_is_not_a_marker() -> None:
    w = Writer().hello().marker(BASE, 10_000)
    w.memset(BASE + 1, 12_000, 12_500, nbytes=4096).memset(0, 13_000, 13_100)
    w.marker(BASE + 1, 20_000)
    found = ne.windows(ne.parse(w.data), BASE, BASE + 1)
    assert found.problems == [] and len(found[0].memsets) == 2


def test_activity_across_a_marker_or_outside_the_windows() -> None:
    w = Writer().hello().kernel("setup", 1_000, 2_000)
    w.marker(BASE, 10_000)
    w.kernel("side_stream_work", 15_000, 25_000, stream=9)  # runs past the next marker
    w.marker(BASE + 1, 20_000)
    w.kernel("afterwards", 40_000, 41_000)
    found = ne.windows(ne.parse(w.data), BASE, BASE + 1)
    assert any("runs past the end of window" in p for p in found.problems)
    assert found.before == 1 and found.after == 1
    assert found[0].streams == {9}


def test_window_arguments_and_empty_input() -> None:
    assert ne.windows([], BASE, BASE).problems
    found = ne.windows([], BASE, BASE + 1)
    assert len(found) == 1 and not found[0].complete and found.problems
    assert ne.share_of_time(found, ["k"]) is None
    assert ne.parse(b"") == [] and ne.parse(b"").problems == []


@pytest.mark.parametrize(
    ("function", "kernel", "matches"),
    [
        ("add_kernel", "add_kernel", True),
        ("add_kernel", "add_kernel_0d1d2de", True),  # Triton 2.x's specialisation suffix
        ("add_kernel", "add_kernel_fused", False),
        ("add", "add_kernel", False),
        ("_ZN2at6native18elementwise_kernelEv", "_ZN2at6native18elementwise_kernelEv", False),  # claims a library kernel
        ("", "", False),
    ],
)
def test_kernel_names_match_functions(function: str, kernel: str, matches: bool) -> None:
    assert ne.names_kernel(function, kernel) is matches


def test_the_pipe_drains_a_writer_and_caps_what_it_keeps() -> None:
    pipe = ne.RecordPipe(cap=1000)
    data = bytes(honest().data)

    def writer() -> None:
        os.write(pipe.child_fd(), data)
        os.write(pipe.child_fd(), b"x" * 5000)  # more than the cap: the writer must not block
        pipe.close_child_end()

    thread = threading.Thread(target=writer)
    thread.start()
    stream = pipe.wait_for_flush(5, timeout=5)
    thread.join(5)
    pipe.close()
    assert not thread.is_alive()
    assert pipe.overflowed and any("more than 1000 bytes" in p for p in stream.problems)
    assert len(pipe.data()) == 1000


def test_waiting_for_a_flush_returns_when_it_arrives() -> None:
    pipe = ne.RecordPipe()
    data = bytes(honest().data)
    os.write(pipe.child_fd(), data[:40])
    partial = pipe.wait_for_flush(1, timeout=0.2)
    assert partial.flushes == 0
    os.write(pipe.child_fd(), data[40:])
    whole = pipe.wait_for_flush(1, timeout=5)
    assert whole.flushes == 1 and whole.problems == []
    pipe.close(timeout=0.1)


def test_a_round_whose_marker_records_arrive_after_its_flush_is_waited_for() -> None:
    """CUPTI delivers each buffer when it completes it, so a round's marker memsets may reach the pipe
    after the round's FLUSH record. The wait the engine uses takes the records that arrive later, and
    the summary says what a round's records held (on an H200 it showed markers placed and none
    recorded: a kineto session had stopped the recorder, docs/native-recorder.md)."""
    pipe = ne.RecordPipe()
    labels = range(1, 5)
    early = Writer().hello()
    for label in labels:
        early.mark(label, gpu_ns=1000 * label)
    early.flush()
    late = Writer()
    late.seq = early.seq
    for label in labels:
        late.memset(label, 1000 * label + 100, 1000 * label + 200)
    os.write(pipe.child_fd(), bytes(early.data))

    def ready(parsed: ne.RecordStream) -> bool:
        return parsed.flushes >= 1 and set(labels) <= ne.recorded_markers(parsed)

    at_flush = pipe.wait_until(ready, timeout=0.2)  # the FLUSH alone is not enough
    assert at_flush.flushes == 1 and ne.recorded_markers(at_flush) == set()
    assert ne.stream_summary(at_flush, labels).startswith("4 of 4 markers placed, 0 recorded on the GPU, 1 flushes")
    threading.Timer(0.3, lambda: os.write(pipe.child_fd(), bytes(late.data))).start()
    complete = pipe.wait_until(ready, timeout=5)
    assert ne.recorded_markers(complete) == set(labels)
    assert ne.windows(complete, 1, 4).problems == []
    pipe.close(timeout=0.1)


def test_the_judge_side_and_the_loader_import_only_the_standard_library() -> None:
    """The engine never imports torch; the loader runs before torch in a harness process."""
    import ast
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for path in (root / "worker" / "native_evidence.py", root / "sandbox" / "harness" / "native" / "__init__.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                # the judge reads the loader's constants from sandbox.harness.native, the second file here
                assert name.split(".")[0] in sys.stdlib_module_names or name == "triton_referee.sandbox.harness", (
                    f"{path.name} imports {name}"
                )


def test_profile_from_windows_has_the_profile_commands_shape() -> None:
    found = ne.windows(ne.parse(honest().data), BASE, BASE + 2)
    result = ne.profile(found, ["add_kernel"], top=2)
    assert result["fraction"] == pytest.approx(8_000 / 11_800)
    assert result["kernels_us"] == {"add_kernel": 8.0, "_ZN2at6native18elementwise_kernelEv": 3.0}
