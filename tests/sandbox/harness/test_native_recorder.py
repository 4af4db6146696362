"""The native recorder on the CPU: recorder.c compiles against the CUPTI headers found on this
machine, is cached, refuses to start without a GPU driver, and - driven by a fake CUPTI and driver
(tests/native/fake_cupti.c; this machine has no GPU, so nothing real produces activity records) -
writes a stream the judge's parser reads back exactly, with the problems a hostile candidate's
ctypes tricks leave in it. Real CUPTI on a GPU: tests/gpu/test_native_recorder.py."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from triton_referee.sandbox.harness import native
from triton_referee.worker import native_evidence as ne

ROOT = Path(__file__).resolve().parents[3]
SCENARIO = ROOT / "tests" / "native" / "scenario.py"
FAKE_SOURCE = ROOT / "tests" / "native" / "fake_cupti.c"
BASE = 0x40000000  # the scenario's first marker label


@pytest.fixture(scope="module")
def location() -> native.CuptiLocation:
    found = native.locate_cupti()
    if isinstance(found, str):
        pytest.skip(f"no CUPTI headers on this machine: {found}")
    return found


@pytest.fixture(scope="module")
def built(location: native.CuptiLocation, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("native-cache")
    path = native.build(location, cache)
    assert isinstance(path, Path), path
    return path


@pytest.fixture(scope="module")
def fake_cupti(location: native.CuptiLocation, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fake") / "libfakecupti.so"
    compiler = native._compiler()
    assert compiler, "no C compiler, yet the recorder was expected to build"
    subprocess.run(
        [
            compiler,
            "-shared",
            "-fPIC",
            "-fvisibility=hidden",
            "-std=c11",
            "-O1",
            *(f"-I{d}" for d in location.include_dirs),
            "-o",
            str(out),
            str(FAKE_SOURCE),
        ],
        check=True,
    )
    return out


def test_the_recorder_compiles_against_the_cupti_headers_here_and_exports_its_interface(built: Path) -> None:
    library = ctypes.CDLL(str(built))
    for name in (
        "referee_recorder_start",
        "referee_recorder_attach",
        "referee_recorder_mark",
        "referee_recorder_flush",
        "referee_recorder_stop",
        "referee_recorder_broken",
    ):
        assert hasattr(library, name), name
    # Nothing else is exported: the sequence counter and the descriptor are private symbols.
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(built)], capture_output=True, text=True, check=True).stdout
    exported = {line.split()[-1] for line in symbols.splitlines() if " T " in line}
    assert exported == {
        "referee_recorder_start",
        "referee_recorder_attach",
        "referee_recorder_mark",
        "referee_recorder_flush",
        "referee_recorder_stop",
        "referee_recorder_broken",
    }


def test_a_second_build_reuses_the_cached_object(location: native.CuptiLocation, built: Path) -> None:
    before = built.stat().st_mtime_ns
    again = native.build(location, built.parent)
    assert again == built and built.stat().st_mtime_ns == before


def test_a_changed_source_builds_a_new_object(
    location: native.CuptiLocation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "recorder.c"
    source.write_text(native.SOURCE.read_text() + "\n/* changed */\n")
    first = native.build(location, tmp_path / "cache")
    monkeypatch.setattr(native, "SOURCE", source)
    second = native.build(location, tmp_path / "cache")
    assert isinstance(first, Path) and isinstance(second, Path) and first != second


def test_a_compile_error_is_a_reason_not_an_exception(
    location: native.CuptiLocation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "recorder.c"
    source.write_text("this is not C;\n")
    monkeypatch.setattr(native, "SOURCE", source)
    reason = native.build(location, tmp_path / "cache")
    assert isinstance(reason, str) and "compiling the recorder failed" in reason
    assert not list((tmp_path / "cache").glob("*.so"))  # no partial object left to load


def test_missing_headers_are_a_reason(tmp_path: Path) -> None:
    nowhere = native.CuptiLocation("libcupti.so", (str(tmp_path),), 130001)
    reason = native.build(nowhere, tmp_path / "cache")
    assert isinstance(reason, str) and "cupti.h" in reason


@pytest.mark.skipif(
    bool(ctypes.util.find_library("cuda")), reason="a CUDA driver is installed here; the GPU test covers starting"
)
def test_without_a_gpu_driver_load_recorder_returns_none_with_the_reason(built: Path, tmp_path: Path) -> None:
    # In a separate process: a started recorder is per process.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from harness import native; import pathlib; "
        "r = native.load_recorder(1, pathlib.Path(sys.argv[2])); print(r, native.last_failure)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code, str(ROOT / "sandbox"), str(built.parent)], capture_output=True, text=True, check=True
    )
    assert done.stdout.startswith("None ") and "libcuda.so.1" in done.stdout, done.stdout + done.stderr


def _play(scenario: str, location: native.CuptiLocation, built: Path, fake: Path) -> ne.RecordStream:
    """Run a scenario in its own process, read its records as the judge does."""
    pipe = ne.RecordPipe()
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                str(SCENARIO),
                str(ROOT / "sandbox"),
                str(fake),
                str(built.parent),
                os.pathsep.join(location.include_dirs),
                str(location.api_version),
                str(pipe.child_fd()),
                scenario,
            ],
            pass_fds=[pipe.child_fd()],
            capture_output=True,
            text=True,
            timeout=60,
        )
        pipe.close_child_end()
        assert done.returncode == 0, done.stderr
        return pipe.wait_for_flush(1, timeout=10)
    finally:
        pipe.close()


def test_an_honest_process_gives_a_clean_stream_with_its_windows(location, built, fake_cupti) -> None:
    stream = _play("honest", location, built, fake_cupti)
    assert stream.problems == []
    assert stream.hello is not None and stream.hello.discarded == 0
    assert [type(r).__name__ for r in stream].count("Kernel") == 3
    found = ne.windows(stream, BASE, BASE + 2)
    assert found.problems == [] and len(found) == 2
    first, second = found
    assert [k.name for k in first.kernels] == ["add_kernel"]
    assert first.kernels[0].duration_ns == 5000
    assert first.device_to_host == [4096]
    assert [k.name for k in second.kernels] == ["_ZN2at6native29vectorized_elementwise_kernelILi4EEEvi", "add_kernel"]
    assert second.device_to_host == []
    # The fake's clock: 200 ns launch gap before each kernel or copy, markers take 1000 ns after 500.
    assert first.busy_ns == 5000 + 800 and first.span_ns == 200 + 5000 + 200 + 800 + 500
    assert second.busy_ns == 5000
    assert ne.share_of_time(found, ["add_kernel"]) == pytest.approx(7000 / (5800 + 5000))
    assert found[0].streams == {7}  # the fake numbers stream handle 0 as stream id 7


def test_records_delivered_before_the_descriptor_arrives_are_counted_not_sent(location, built, fake_cupti) -> None:
    stream = _play("attach_later", location, built, fake_cupti)
    assert stream.problems == []
    assert stream.hello is not None and stream.hello.discarded == 2  # the kernel and that flush's FLUSH record
    assert all(getattr(record, "name", "") != "before_assignment" for record in stream)
    assert len(ne.windows(stream, BASE, BASE + 2)) == 2


def test_a_record_written_into_the_descriptor_breaks_the_sequence(location, built, fake_cupti) -> None:
    stream = _play("forged", location, built, fake_cupti)
    assert any(problem.startswith("sequence") for problem in stream.problems), stream.problems


def test_garbage_written_into_the_descriptor_is_flagged_and_reading_stops(location, built, fake_cupti) -> None:
    stream = _play("garbage", location, built, fake_cupti)
    assert stream.malformed and any("garbage" in problem for problem in stream.problems)


def test_silencing_kernel_records_leaves_windows_without_kernels(location, built, fake_cupti) -> None:
    stream = _play("silence_kernels", location, built, fake_cupti)
    found = ne.windows(stream, BASE, BASE + 2)
    assert found.problems == []  # the markers still arrive ...
    assert ne.silent_windows(found) == [BASE + 1]  # ... and the judge sees a call that launched nothing


def test_silencing_cupti_loses_the_markers(location, built, fake_cupti) -> None:
    stream = _play("silence_all", location, built, fake_cupti)
    found = ne.windows(stream, BASE, BASE + 2)
    assert any("never recorded on the GPU" in problem for problem in found.problems), found.problems
    assert not found[1].complete


def test_a_memset_imitating_a_marker_is_flagged(location, built, fake_cupti) -> None:
    stream = _play("imitate_marker", location, built, fake_cupti)
    found = ne.windows(stream, BASE, BASE + 2)
    assert any("imitating a marker" in problem for problem in found.problems), found.problems


def test_records_cupti_dropped_make_the_evidence_incomplete(location, built, fake_cupti) -> None:
    stream = _play("dropped", location, built, fake_cupti)
    assert any("dropped 3 records" in problem for problem in stream.problems), stream.problems


@pytest.mark.skipif(
    bool(ctypes.util.find_library("cuda")), reason="a CUDA driver is installed here; the GPU test covers starting"
)
def test_a_harness_process_given_an_evidence_fd_without_a_gpu_says_why_and_still_serves(tmp_path: Path) -> None:
    """`python -m harness --evidence-fd N` starts the recorder before serving; where it cannot
    (no driver here), it closes the descriptor - nothing else may write there - and says why."""
    import secrets
    import time

    from triton_referee.sandbox.harness.protocol import KEY_BYTES, Channel
    from triton_referee.sandbox.launch import BOOTSTRAP, HARNESS_PARENT, child_environment

    pipe = ne.RecordPipe()
    to_child_r, to_child_w = os.pipe()
    to_parent_r, to_parent_w = os.pipe()
    key_r, key_w = os.pipe()
    child_fds = (to_child_r, to_parent_w, key_r, pipe.child_fd())
    (tmp_path / "tmp").mkdir()
    argv = [
        sys.executable,
        "-I",
        "-c",
        BOOTSTRAP,
        str(HARNESS_PARENT),
        "--role",
        "candidate",
        "--read-fd",
        str(to_child_r),
        "--write-fd",
        str(to_parent_w),
        "--key-fd",
        str(key_r),
        "--evidence-fd",
        str(pipe.child_fd()),
    ]
    process = subprocess.Popen(
        argv,
        pass_fds=child_fds,
        cwd=tmp_path,
        env=child_environment(tmp_path, "candidate", "cpu"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    for fd in child_fds[:3]:
        os.close(fd)
    pipe.close_child_end()
    key = secrets.token_bytes(KEY_BYTES)
    os.write(key_w, key)
    os.close(key_w)
    try:
        channel = Channel(to_parent_r, to_child_w, key, is_parent=True)
        channel.send({"cmd": "exit"}, deadline=time.monotonic() + 60)
        reply, _ = channel.recv(deadline=time.monotonic() + 60)
        assert reply == {"ok": True}
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        os.close(to_parent_r)
        os.close(to_child_w)
        pipe.close(timeout=5)
    assert b"no native launch recorder:" in stderr and b"libcuda.so.1" in stderr, stderr
    assert pipe.data() == b""  # no HELLO: the judge knows the recorder never started


@pytest.mark.skipif(
    bool(ctypes.util.find_library("cuda")), reason="a CUDA driver is installed here; the GPU test covers starting"
)
@pytest.mark.parametrize("pooled", [False, True], ids=["fresh", "pooled"])
def test_harness_processes_get_the_record_pipe_fresh_and_from_the_warm_pool(
    pooled: bool, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The engine's plumbing (process.py, the zygote): with `native_records` the child receives the
    pipe and tries the recorder before serving; without a driver it says why, closes its end, and
    serves as usual."""
    import time

    from triton_referee.worker.process import HarnessProcess

    pool = request.getfixturevalue("warm_pool") if pooled else None
    workdir = (Path(pool.scratch) if pool else tmp_path) / f"job-native-{pooled}" / "candidate"
    process = HarnessProcess("candidate", workdir, "cpu", pool=pool, native_records=True)
    process.start()
    try:
        reply, _ = process.request({"cmd": "unknown"}, deadline=time.monotonic() + 60)
        assert reply["ok"] is False  # it serves
        records = process.records
        assert records is not None
        stream = records.wait_for_flush(1, timeout=5)  # returns at once: its end was closed
        assert records.data() == b"" and stream == []
    finally:
        process.close()
    assert "no native launch recorder:" in process.output()["stderr"]


def test_without_native_records_nothing_changes(tmp_path: Path) -> None:
    import time

    from triton_referee.worker.process import HarnessProcess

    process = HarnessProcess("candidate", tmp_path / "candidate", "cpu")
    process.start()
    try:
        process.request({"cmd": "unknown"}, deadline=time.monotonic() + 60)
    finally:
        process.close()
    assert process.records is None and "native launch recorder" not in process.output()["stderr"]


def test_markers_from_several_threads_during_flushes_stay_one_numbered_stream(location, built, fake_cupti) -> None:
    stream = _play("threads", location, built, fake_cupti)
    assert stream.problems == []  # consecutive sequence numbers, every FLUSH count right
    marks = [r for r in stream if isinstance(r, ne.Mark)]
    assert len(marks) == 2003 and len({m.label for m in marks}) == 2003
    assert stream.flushes > 1
    assert ne.windows(stream, BASE + 10_000, BASE + 10_999).problems == []
    assert ne.windows(stream, BASE, BASE + 2).problems == []
