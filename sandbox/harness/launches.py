"""Counts Triton kernel launches in the candidate's process.

The hook wraps `run` on Triton's JIT and interpreter function classes before the candidate is
imported, so it sees every launch path that ends there: `kernel[grid](...)`, `@triton.autotune`
and `@triton.heuristics` wrappers (they call the wrapped function's `run`), compiled or
interpreted. A kernel counts as the submission's own when its Python function was defined in the
submitted file.
"""

from __future__ import annotations

import ctypes
import zlib
from collections import Counter
from collections.abc import Callable
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
    # Host (CPU) storages: a fingerprint of their bytes right after the launch, and the op recorder's
    # count then (a change later with no op since was written from the host: numpy, a raw pointer).
    fingerprints: dict[tuple[int, int], int] = field(default_factory=dict)  # by extent (start, end)
    sequence: int = 0


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
    op_clock: Callable[[], int] = lambda: 0  # the op recorder's count of dispatched ops
    on_gpu: bool = False  # compiled launches on a GPU (not the interpreter)
    host_memory_launches: int = 0  # GPU launches that took a tensor in host memory (pinned)

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
        held = (
            [value.untyped_storage() for value in list(args) + list(kwargs.values()) if isinstance(value, torch.Tensor)]
            if self.keep_storages
            else []
        )
        storages = {storage.data_ptr() for storage in held}
        tensors = {value.data_ptr(): value for value in list(args) + list(kwargs.values()) if isinstance(value, torch.Tensor)}
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        side_stream = torch.cuda.is_initialized() and torch.cuda.current_stream() != torch.cuda.default_stream()
        host = [
            value
            for value in list(args) + list(kwargs.values())
            if isinstance(value, torch.Tensor) and value.device.type == "cpu"
        ]
        if self.on_gpu and host:
            self.host_memory_launches += 1  # the kernel reads or writes host memory: data left the device
        fingerprints = {_extent(value): _fingerprint(value) for value in host} if self.keep_storages else {}
        self.launches.append(
            Launch(
                kernel=name,
                own=own,
                storages=storages,
                keep_alive=held,
                side_stream=side_stream,
                nbytes=nbytes,
                fingerprints=fingerprints,
                sequence=self.op_clock(),
            )
        )
        (self.totals if own else self.foreign)[name] += 1

    def host_written(self, outputs: Any, launches: list[Launch]) -> list[int]:
        """Indices of host outputs whose bytes changed after the last launch that took their storage,
        with no torch op dispatched since: written from the host (numpy on `out.numpy()`, a pointer)."""
        now = self.op_clock()
        changed = []
        for index, tensor in enumerate(outputs if isinstance(outputs, (list, tuple)) else [outputs]):
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu" or tensor.layout != torch.strided:
                continue
            extent = _extent(tensor)
            last = next((launch for launch in reversed(launches) if extent in launch.fingerprints), None)
            if last is not None and last.sequence == now and _fingerprint(tensor) != last.fingerprints[extent]:
                changed.append(index)
        return changed

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


def _extent(tensor: Any) -> tuple[int, int]:
    """(address, bytes) a host tensor's elements span (not its whole storage: a mapped input's
    storage can be far larger than the tensor)."""
    if not tensor.numel():
        return tensor.data_ptr(), 0
    span = 1 + sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride(), strict=True) if size)
    return tensor.data_ptr(), span * tensor.element_size()


def _fingerprint(tensor: Any) -> int:
    """CRC of the bytes a host tensor spans, read in place (no torch op: the recorders must not see it)."""
    address, nbytes = _extent(tensor)
    if not nbytes or not address:
        return 0
    return zlib.crc32((ctypes.c_char * nbytes).from_address(address))
