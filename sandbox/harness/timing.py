"""Timing of one forward, done the same way for the reference and the candidate.

GPU method (reported as "cuda_events+l2_flush"): before every call the L2 cache is flushed by
writing a buffer larger than it, then the GPU spins, so that the flush and the spin together last
about twice the host time of one call (the call's launches are queued before its start event and
host overhead is not measured; the flush alone is ~85 us on an H100, so small calls spin little);
CUDA events bracket the call on the current stream; the inputs
rotate over several sets so that nothing can be served from a cache. Each batch of calls ends with
a device-wide synchronize, and the host clock across the batch is compared with the events: work
hidden on other streams shows up as host time the events did not see.

Stopping rule: after warm-up, calls run in batches until the 95% confidence interval of the
median (from order statistics) is within `target_rel_ci` of the median on either side, or until
`max_reps` calls or `max_seconds` have been spent; at least `min_reps` calls are always made
(defaults: 0.5%, 1000 calls, 3 s, 20 calls). Kernels of ~0.1 ms and more stop on the interval;
µs-scale kernels, whose event times are coarse, usually stop at 1000 calls.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile  # imported before the integrity snapshot

from .stats import median_ci95, summarize

_perf_counter = time.perf_counter  # bound before any candidate code is imported


class CudaTimer:
    """Times `call(inputs)` with CUDA events and an L2 flush per call."""

    def __init__(self, device: torch.device, flush_bytes: int | None = None) -> None:
        self.device = device
        if flush_bytes is None:  # twice the L2 (50 MB on an H100): enough to evict it, cheap to write
            l2_bytes = getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or (64 << 20)
            flush_bytes = max(2 * l2_bytes, 32 << 20)
        self._flush = torch.empty(flush_bytes // 4, dtype=torch.int32, device=device)
        self._Event = torch.cuda.Event
        self._synchronize = torch.cuda.synchronize
        clock_khz = getattr(torch.cuda.get_device_properties(device), "clock_rate", 0) or 2_000_000
        self._clock_hz = clock_khz * 1e3

    def run(
        self,
        call: Callable[[Sequence[Any]], Any],
        input_sets: Sequence[Sequence[Any]],
        *,
        warmup_reps: int = 3,
        min_reps: int = 20,
        max_reps: int = 1000,
        max_seconds: float = 3.0,
        target_rel_ci: float = 0.005,
        batch: int = 20,
    ) -> dict[str, Any]:
        host_seconds = 0.0
        for i in range(warmup_reps):
            self._synchronize()
            started = _perf_counter()
            call(input_sets[i % len(input_sets)])
            if i:  # the first call may compile
                host_seconds = max(host_seconds, _perf_counter() - started)
        flush_seconds = self._flush_seconds()
        # Slack: the GPU flushes and then spins for about twice the host time of one call in all,
        # so the call's launches are queued before its start event runs and host overhead (Python,
        # the harness's own hooks) stays out of the measured GPU time, for reference and candidate alike.
        slack_cycles = int(min(max(2 * host_seconds - flush_seconds, 20e-6), 20e-3) * self._clock_hz)

        samples: list[float] = []
        host_ms = 0.0
        event_ms = 0.0
        started = _perf_counter()
        while True:
            count = min(batch, max_reps - len(samples))
            starts = [self._Event(enable_timing=True) for _ in range(count)]
            ends = [self._Event(enable_timing=True) for _ in range(count)]
            flush_done = [self._Event(enable_timing=True) for _ in range(count)]
            self._synchronize()
            host_start = _perf_counter()
            for i in range(count):
                flush_done[i].record()  # marks the start of this rep (flush included)
                self._flush.zero_()
                torch.cuda._sleep(slack_cycles)
                starts[i].record()
                call(input_sets[(len(samples) + i) % len(input_sets)])
                ends[i].record()
            self._synchronize()
            host_ms += (_perf_counter() - host_start) * 1e3
            event_ms += flush_done[0].elapsed_time(ends[-1])
            samples.extend(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))
            if len(samples) >= min_reps:
                median = statistics.median(samples)
                low, high = median_ci95(samples)
                tight = median > 0 and (median - low) <= target_rel_ci * median and (high - median) <= target_rel_ci * median
                if tight or len(samples) >= max_reps or _perf_counter() - started > max_seconds:
                    break
        stats = summarize(samples)
        stats["samples"] = samples
        stats["slack_cycles"] = slack_cycles
        stats["method"] = "cuda_events+l2_flush"
        stats["stable"] = bool((stats["ci95"][1] - stats["ci95"][0]) <= 2 * target_rel_ci * stats["median"])
        stats["host_ms_total"] = host_ms
        stats["event_ms_total"] = event_ms
        stats["host_ms_per_call"] = host_seconds * 1e3
        stats["flush_ms"] = flush_seconds * 1e3
        return stats

    def round(
        self,
        call: Callable[[Sequence[Any]], Any],
        input_sets: Sequence[Sequence[Any]],
        calls: int,
        start: int = 0,
        slack_s: float | None = None,
        recorder: Any = None,
        first_label: int = 0,
    ) -> dict[str, Any]:
        """One round of the candidate's timed calls, as `run` times each call (flush, spin, events on
        the current stream), keeping every call's outputs. Returns the raw samples (ms), the
        outputs, and the host time of the round; the engine makes the statistics. With the native
        recorder, call i is also bracketed by markers first_label + 2i and first_label + 2i + 1, and
        the records are flushed after the round: the engine then takes the call's GPU time from
        the records (worker/native_evidence.py), which the candidate's Python cannot rewrite."""
        seconds = float(slack_s) if isinstance(slack_s, (int, float)) else 20e-6  # the engine's, from the warm-up round
        slack_cycles = int(max(20e-6, min(seconds, 20e-3)) * self._clock_hz)
        starts = [self._Event(enable_timing=True) for _ in range(calls)]
        ends = [self._Event(enable_timing=True) for _ in range(calls)]
        outputs: list[Any] = []
        self._synchronize()
        host_start = _perf_counter()
        for i in range(calls):
            self._flush.zero_()
            torch.cuda._sleep(slack_cycles)
            stream = torch.cuda.current_stream(self.device).cuda_stream if recorder is not None else 0
            if recorder is not None:
                recorder.mark(first_label + 2 * i, stream)
            starts[i].record()
            result = call(input_sets[(start + i) % len(input_sets)])
            ends[i].record()
            if recorder is not None:
                recorder.mark(first_label + 2 * i + 1, stream)
            outputs.append(keep_as_returned(result))
        self._synchronize()
        host_ms = (_perf_counter() - host_start) * 1e3
        if recorder is not None:
            recorder.flush()
        return {
            "samples": [s.elapsed_time(e) for s, e in zip(starts, ends, strict=True)],
            "outputs": outputs,
            "host_ms": host_ms,
            "method": "cuda_events+l2_flush",
        }

    def _flush_seconds(self, reps: int = 3) -> float:
        """The shortest of a few flushes, measured with events (the spin before each call adds to it)."""
        marks = [self._Event(enable_timing=True) for _ in range(reps + 1)]
        self._synchronize()
        marks[0].record()
        for mark in marks[1:]:
            self._flush.zero_()
            mark.record()
        self._synchronize()
        return min(a.elapsed_time(b) for a, b in itertools.pairwise(marks)) / 1e3


def time_on_host(call: Callable[[Sequence[Any]], Any], input_sets: Sequence[Sequence[Any]], reps: int = 3) -> dict[str, Any]:
    """CPU / interpreter mode: a few host-clock calls. Not a meaningful speed figure."""
    samples = []
    for i in range(reps):
        start = _perf_counter()
        call(input_sets[i % len(input_sets)])
        samples.append((_perf_counter() - start) * 1e3)
    stats = summarize(samples)
    stats["samples"] = samples
    stats["method"] = "host_clock"
    stats["stable"] = False
    return stats


def keep_as_returned(value: Any) -> Any:
    """A timed call's outputs as they were when it returned, copied right after the call (outside
    its timed window): a later call that overwrites the same buffer (an output buffer reused from
    call to call, which is honest) cannot change what is checked for this one, and a tensor replayed
    from an earlier call is checked against this call's inputs."""
    if type(value) in (list, tuple):
        return type(value)(keep_as_returned(item) for item in value)
    if type(value) is not torch.Tensor:
        return value  # anything else is judged (and rejected) when the outputs are exported
    return value.clone()


def round_on_host(
    call: Callable[[Sequence[Any]], Any], input_sets: Sequence[Sequence[Any]], calls: int, start: int = 0
) -> dict[str, Any]:
    """CPU / interpreter mode: one round of host-clock calls, every call's outputs kept."""
    samples: list[float] = []
    outputs: list[Any] = []
    for i in range(calls):
        began = _perf_counter()
        result = call(input_sets[(start + i) % len(input_sets)])
        samples.append((_perf_counter() - began) * 1e3)
        outputs.append(keep_as_returned(result))
    return {"samples": samples, "outputs": outputs, "host_ms": sum(samples), "method": "host_clock"}


def profile_kernels(
    call: Callable[[Sequence[Any]], Any], input_sets: Sequence[Sequence[Any]], mode: Any, reps: int = 3
) -> dict[str, float]:
    """GPU kernel time (microseconds) per kernel name over `reps` calls, from torch's profiler."""
    torch.cuda.synchronize()
    from .witness import experimental_config  # the op witness's settings: the profiler looks the same in every phase

    with profile(activities=[ProfilerActivity.CUDA], experimental_config=experimental_config()) as prof, torch.no_grad(), mode:
        for i in range(reps):
            call(input_sets[i % len(input_sets)])
        torch.cuda.synchronize()
    times: dict[str, float] = {}
    for event in prof.events():
        if getattr(event, "device_type", None) == DeviceType.CUDA:
            times[event.name] = times.get(event.name, 0.0) + float(
                getattr(event, "device_time", 0.0) or getattr(event, "cuda_time", 0.0)
            )
    return times
