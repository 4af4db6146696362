"""A second op recorder that the candidate cannot step around from Python: torch's profiler.

The dispatch mode (dispatch.py) sees ops at the Python dispatch key, on the thread that entered it.
Popping the mode (`_disable_current_modes`), excluding the Python key with a TLS guard, running the
op in another thread, or hiding it inside a custom op's body (the mode sees only the custom op)
all keep an op from it. The profiler records every op that goes through the dispatcher, from a
callback torch runs before any dispatch key is looked at, on every thread where the torch build
allows it (`profile_all_threads`), and nested ops too (a custom op's body). Its switches are sealed
by the audit guard, so the candidate can neither stop it nor start its own in its place.

The witness is on for every call of the candidate's forward, checked and timed, so the profiler
being on says nothing about which phase a call belongs to.
"""

from __future__ import annotations

from _thread import _count as _python_threads  # interpreter-wide: a fresh `_thread` module counts too
from collections import Counter
from os import listdir as _listdir
from time import sleep as _sleep
from typing import Any

import torch
from torch.autograd import profiler as autograd_profiler

from .dispatch import BOOKKEEPING_OPS

# Composite ops the dispatch mode never sees (they decompose above the Python key) that only cast,
# view, copy or query: bookkeeping, like their decompositions.
COMPOSITE_BOOKKEEPING = frozenset(
    {
        "to",
        "type_as",
        "item",
        "cpu",
        "cuda",
        "type",
        "resolve_conj",
        "resolve_neg",
        "is_pinned",
        "pin_memory",
        "_pin_memory",
        "numpy_T",
        "mT",
        "T",
        "expand_as",
        "reshape_as",
        "is_nonzero",
        "lift",
        "broadcast_to",
        "result_type",
        "_has_compatible_shallow_copy_type",
        "record_stream",
        "requires_grad_",
        "squeeze_",
        "unsqueeze_",
        "as_strided_",
        "t_",
        "transpose_",
        "detach_",
        "view_as_real",
        "view_as_complex",
        "_reshape_copy",
        "tensor_split",
        "swapaxes",
        "swapdims",
        "ravel",
        "is_same_size",
        "align_as",
        "_reshape_from_tensor",
        "_shape_as_tensor",
        "size",
        "stride",
        "numel",
        "dim",
        "is_contiguous",
    }
)


def experimental_config() -> Any:
    """All threads where torch allows it (also used by the GPU profile phase, so that phase looks
    like every other: `torch.autograd._profiler_enabled()` answers the same in all)."""
    try:
        from torch._C._profiler import _ExperimentalConfig

        return _ExperimentalConfig(profile_all_threads=True)
    except (ImportError, TypeError):  # an older torch: the calling thread only
        return None


def _os_threads() -> set[str]:
    try:
        return set(_listdir("/proc/self/task"))
    except OSError:
        return set()


class OpWitness:
    def __init__(self) -> None:
        self._config = experimental_config()
        self.all_threads = self._config is not None
        self._session: Any = None
        self.ops: Counter[str] = Counter()
        self.tops: list[tuple[str, tuple[str, ...]]] = []  # each outermost op: its name, and every name below it
        self.failure: str | None = None
        # Off where the native CUPTI recorder runs (GPU): kineto would take CUPTI's callbacks from it,
        # and the recorder's kernel windows are the stronger evidence there. Threads are counted anyway.
        self.profiling = True
        self.threads_left_running = 0  # Python threads started during a call and still alive after it
        self._threads_before = 0

    def __enter__(self) -> OpWitness:
        self._session = None
        self._threads_before = _python_threads()
        self._tasks_before = _os_threads()
        if not self.profiling or torch.autograd._profiler_enabled():  # the harness's own profile phase (switches are sealed)
            return self
        kwargs: dict[str, Any] = {"use_kineto": True, "record_shapes": False}
        if self._config is not None:
            kwargs["experimental_config"] = self._config
        session = autograd_profiler.profile(**kwargs)
        session.__enter__()
        self._session = session
        return self

    def __exit__(self, *exc: Any) -> None:
        # A new Python thread counts once it has bootstrapped; a new OS thread (which may be one still
        # starting, or torch's own pool) gives it a moment first.
        if _os_threads() - self._tasks_before:
            _sleep(0.01)
        self.threads_left_running += max(0, _python_threads() - self._threads_before)
        session, self._session = self._session, None
        if session is None:
            return
        try:
            session.__exit__(None, None, None)
            events = session.function_events
        except Exception as error:  # the session was stopped or replaced behind the harness's back
            self.failure = f"the op witness (torch's profiler) was stopped during the call: {type(error).__name__}: {error}"
            return
        for event in events:
            if getattr(event, "is_user_annotation", False):
                continue
            name = str(event.name)
            if "::" in name:
                self.ops[name.removeprefix("aten::")] += 1
                if getattr(event, "cpu_parent", None) is None:
                    self.tops.append((name.removeprefix("aten::"), tuple(_names_below(event))))

    def take(self) -> tuple[Counter[str], str | None]:
        ops, failure = self.ops, self.failure
        self.ops, self.failure = Counter(), None
        return ops, failure

    def take_hidden(self, seen: Counter[str], allowed: frozenset[str] = frozenset()) -> dict[str, int]:
        """Compute ops the dispatch mode never saw (`seen`: what it recorded over the same calls).
        An outermost op counts as seen when the mode recorded it or an op below it (a composite
        op reaches the mode decomposed); what runs inside a custom op the mode saw only from outside,
        or in an op it did not see at all (its mode popped, its key excluded, another thread), is hidden."""
        remaining = Counter(seen)
        hidden: Counter[str] = Counter()
        tops, self.tops = self.tops, []
        for name, below in tops:
            match = next((n for n in (name, *below) if remaining[n] > 0), None)
            if match is not None:
                remaining[match] -= 1
                if "::" in name:  # a custom op: the mode saw the container, not its body
                    hidden.update(below)
                continue
            hidden.update((name, *below))
        return witnessed_compute(hidden, allowed)

    def take_threads(self) -> int:
        left, self.threads_left_running = self.threads_left_running, 0
        return left


def _names_below(event: Any) -> list[str]:
    names, pending = [], list(getattr(event, "cpu_children", []) or [])
    while pending:
        child = pending.pop()
        name = str(child.name)
        if "::" in name:
            names.append(name.removeprefix("aten::"))
        pending.extend(getattr(child, "cpu_children", []) or [])
    return names


def witnessed_compute(ops: Counter[str], allowed: frozenset[str] = frozenset()) -> dict[str, int]:
    """Compute ops among what the profiler saw: aten ops other than bookkeeping, at any depth (a
    custom op's body included). Other namespaces are containers: their bodies are judged."""
    return {
        name: count
        for name, count in sorted(ops.items())
        if "::" not in name and name not in BOOKKEEPING_OPS and name not in COMPOSITE_BOOKKEEPING and name not in allowed
    }
