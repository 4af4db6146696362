"""Counts Triton kernel launches in the candidate's process.

The hook wraps `run` on Triton's JIT and interpreter function classes before the candidate is
imported, so it sees every launch path that ends there: `kernel[grid](...)`, `@triton.autotune`
and `@triton.heuristics` wrappers (they call the wrapped function's `run`), compiled or
interpreted. A kernel counts as the submission's own when its Python function was defined in the
submitted file.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Launch:
    kernel: str
    own: bool
    storages: set[int]  # storage addresses of every tensor argument (empty while timing)
    keep_alive: list[Any]  # the storages themselves: freed memory would be reused at the same address
    side_stream: bool = False  # launched on a CUDA stream other than the default one
    nbytes: int = 0  # bytes of its tensor arguments (the work it may touch; kept while timing too)


@dataclass
class LaunchRecorder:
    candidate_file: str
    launches: list[Launch] = field(default_factory=list)
    totals: Counter[str] = field(default_factory=Counter)
    foreign: Counter[str] = field(default_factory=Counter)
    recording: bool = True
    # Off while timing: holding every call's output alive over a thousand timed calls made the
    # allocator fetch fresh device memory on each call (host time, and noise, in the candidate's
    # timing only). Which storages a launch wrote is checked in the correctness runs.
    keep_storages: bool = True

    def install(self) -> None:
        from triton.runtime.jit import JITFunction

        classes: list[Any] = [JITFunction]  # Triton's classes (untyped: their `run` is replaced)
        try:
            from triton.runtime.interpreter import InterpretedFunction

            classes.append(InterpretedFunction)
        except ImportError:  # an old Triton without the interpreter module
            pass
        for cls in classes:
            cls.run = self._wrap(cls.run)

    def _wrap(self, original: Any) -> Any:
        recorder = self

        def run(fn_self: Any, *args: Any, grid: Any, warmup: bool, **kwargs: Any) -> Any:
            result = original(fn_self, *args, grid=grid, warmup=warmup, **kwargs)
            if not warmup and recorder.recording:  # counted once it ran: a launch that failed did no work
                recorder.record(fn_self, args, kwargs)
            return result

        run.__wrapped__ = original  # type: ignore[attr-defined]
        return run

    def record(self, jit_fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        python_fn = getattr(jit_fn, "fn", None)
        code = getattr(python_fn, "__code__", None)
        name = getattr(python_fn, "__name__", type(jit_fn).__name__)
        own = code is not None and code.co_filename == self.candidate_file
        held = [value.untyped_storage() for value in list(args) + list(kwargs.values())
                if isinstance(value, torch.Tensor)] if self.keep_storages else []
        storages = {storage.data_ptr() for storage in held}
        tensors = {value.data_ptr(): value for value in list(args) + list(kwargs.values()) if isinstance(value, torch.Tensor)}
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        side_stream = torch.cuda.is_initialized() and torch.cuda.current_stream() != torch.cuda.default_stream()
        self.launches.append(Launch(kernel=name, own=own, storages=storages, keep_alive=held, side_stream=side_stream,
                                    nbytes=nbytes))
        (self.totals if own else self.foreign)[name] += 1

    def take(self) -> list[Launch]:
        """Launches since the last call (one forward's worth)."""
        taken, self.launches = self.launches, []
        return taken

    def summary(self) -> dict[str, Any]:
        return {
            "triton_launches": sum(self.totals.values()),
            "kernels": sorted(self.totals),
            "foreign_kernels": sorted(self.foreign),
        }
