"""The in-process detectors on their own, in this process (no audit hook: it cannot be removed once
added, so the hook is exercised by the corpus in tests/test_corpus.py, in harness processes).

Each case changes something for real and undoes it; what the detector reports is asserted both ways.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.utils._python_dispatch as python_dispatch

from triton_referee.sandbox.harness import candidate  # noqa: F401 - the harness as the snapshot sees it in a candidate process
from triton_referee.sandbox.harness.audit import native_files
from triton_referee.sandbox.harness.integrity import IntegritySnapshot
from triton_referee.sandbox.harness.witness import OpWitness, witnessed_compute
from triton_referee.worker import rules


@pytest.fixture
def snapshot() -> IntegritySnapshot:
    """Per test: pytest swaps `warnings` functions around each test, as a candidate may not."""
    taken = IntegritySnapshot()
    assert taken.changes() == []
    return taken


def test_snapshot_sees_a_replaced_function_the_recorder_calls(snapshot: IntegritySnapshot) -> None:
    original = python_dispatch._push_mode
    python_dispatch._push_mode = lambda *args, **kwargs: None
    try:
        assert "torch.utils._python_dispatch._push_mode was replaced" in snapshot.changes()
    finally:
        python_dispatch._push_mode = original
    assert snapshot.changes() == []


def test_snapshot_sees_a_method_added_to_a_stdlib_class(snapshot: IntegritySnapshot) -> None:
    collections.Counter.items = lambda self: iter(())  # type: ignore[method-assign]
    try:
        assert "collections.Counter.items was added" in snapshot.changes()
    finally:
        del collections.Counter.items
    assert snapshot.changes() == []


def test_snapshot_sees_code_rewritten_in_place(snapshot: IntegritySnapshot) -> None:
    function = python_dispatch._pop_mode
    code = function.__code__
    function.__code__ = (lambda *args, **kwargs: None).__code__
    try:
        assert any("_pop_mode: code or defaults were rewritten" in change for change in snapshot.changes())
    finally:
        function.__code__ = code
    assert snapshot.changes() == []


def test_snapshot_sees_a_global_that_shadows_a_builtin(snapshot: IntegritySnapshot) -> None:
    python_dispatch.isinstance = lambda *args: False  # type: ignore[attr-defined]
    try:
        assert "torch.utils._python_dispatch.isinstance was added" in snapshot.changes()
    finally:
        del python_dispatch.isinstance
    assert snapshot.changes() == []


def test_snapshot_allows_new_names_that_shadow_nothing(snapshot: IntegritySnapshot) -> None:
    collections.Counter.referee_probe = 1  # type: ignore[attr-defined]
    try:
        assert snapshot.changes() == []
    finally:
        del collections.Counter.referee_probe


@pytest.fixture(scope="module")
def custom_op() -> Iterator[None]:
    library = torch.library.Library("detect_test", "DEF")
    library.define("clone(Tensor x) -> Tensor")
    library.define("alloc(Tensor x) -> Tensor")
    library.impl("clone", lambda x: torch.relu(x) * 2 + 1, "CompositeExplicitAutograd")
    library.impl("alloc", lambda x: torch.empty_like(x), "CompositeExplicitAutograd")
    yield
    del library


def _witnessed(body) -> dict[str, int]:
    witness = OpWitness()
    with witness:
        body()
    ops, failure = witness.take()
    assert failure is None
    return witnessed_compute(ops)


def test_witness_sees_ops_hidden_from_the_dispatch_mode(custom_op: None) -> None:
    x = torch.randn(64)

    def popped() -> None:
        with python_dispatch._disable_current_modes():
            torch.tanh(x)

    def excluded() -> None:
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.Python)):
            torch.exp(x)

    def threaded() -> None:
        worker = threading.Thread(target=lambda: torch.sigmoid(x))
        worker.start()
        worker.join()

    assert "tanh" in _witnessed(popped)
    assert "exp" in _witnessed(excluded)
    assert "sigmoid" in _witnessed(threaded)
    assert "relu" in _witnessed(lambda: torch.ops.detect_test.clone(x))


def test_witness_finds_no_compute_in_bookkeeping(custom_op: None) -> None:
    x = torch.randn(64)

    def bookkeeping() -> None:
        out = torch.ops.detect_test.alloc(x)
        out.view(8, 8).t().contiguous().to(torch.float64)
        out.numpy()

    assert _witnessed(bookkeeping) == {}


def test_native_files_are_found_by_content(tmp_path: Path) -> None:
    (tmp_path / "candidate.py").write_text("print('hi')\n")
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "innocent.txt").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64))
    assert native_files(str(tmp_path)) == ["build/innocent.txt"]


def test_refused_events_map_to_their_rules() -> None:
    assert rules.rule_of_event({"event": "thread.start"}) == "background_thread"
    assert rules.rule_of_event({"event": "cuda.graph.CUDAGraph.replay"}) == "cuda_graph"
    assert rules.rule_of_event({"event": "subprocess.Popen", "reason": "building native code (ninja)"}) == "native_code"
    assert rules.rule_of_event({"event": "gc.get_objects", "reason": "introspection"}) == "forbidden_call"
