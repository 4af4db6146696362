"""Timing: the reference (the candidate stopped) and the candidate in checked rounds, on the same
shapes, and the share of GPU time in the submission's kernels. Statistics are made here from raw
samples; see docs/performance.md and docs/evidence.md."""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from triton_referee.sandbox.harness.messages import CheckRound, RoundCheck, TimeRound
from triton_referee.sandbox.harness.stats import clean_samples, summarize, tight

from . import native_evidence, proportion, rules
from .evaluation_state import Evaluation, derive_seed, judge_work, timing_key
from .harness_client import Stop, close_fds
from .models import TimingStats, Verdict, Violation
from .reference_cache import ReferenceCache
from .watchers import watch_violations

# Timed rounds: every call's outputs are kept until the round is checked, within this many bytes.
KEEP_BYTES = {"cuda": 4 << 30, "cpu": 256 << 20}
MAX_CALLS_PER_ROUND = 100  # few rounds for µs kernels: each round costs a refresh, a check and a stop
MARKER_WAIT_S = 5.0  # how long a round's records may take to arrive once its calls have returned
HOST_SCALAR_BYTES = 64  # device-to-host bytes per timed call still taken as a scalar sync (`.item()`), not a detour


def timing_seeds(run: Evaluation) -> list[int]:
    return [derive_seed(run.fresh_salt, f"timing{k}") for k in range(_timing_set_count(run))]


def _timing_set_count(run: Evaluation) -> int:
    """The requested timing sets; by default one for a large problem (each set costs the reference
    its shared buffer and its expected outputs on the device, and the contents change every round)."""
    if "timing_sets" not in run.config.model_fields_set and run.large:
        return 1
    return run.config.timing_sets


def measure(run: Evaluation) -> None:
    """Time the reference (the candidate stopped) and the candidate (in checked rounds) on the same
    input shapes, holding the GPU's timing lock (when there is one) so no other evaluation's timing
    runs meanwhile."""
    with run.gpu_step():
        # Fresh every evaluation (never cached); on a hit made in the background since the setup.
        reply, fds = run.reference.timing_inputs(timing_seeds(run))
        run.timing_sets = len(reply.inputs)
        try:
            run.candidate.timing_inputs(reply.inputs, fds)
        finally:
            close_fds(fds)
    if run.timing_lock is None or run.device != "cuda":
        _time_unlocked(run)
    else:
        with run.timing_lock.held() as waited_s:
            run.performance.lock_wait_ms = waited_s * 1e3
            _time_unlocked(run)
    if run.device == "cuda" and not run.anti_cheat.violations:
        _profile(run)


def _profile(run: Evaluation) -> None:
    """The share of GPU time in the submission's own kernels (the profiler sees only this process's
    kernels; it holds the GPU shared only so as not to disturb another evaluation's timing)."""
    if run.native_windows:  # the timed calls' own records: no extra calls, nothing the candidate reports
        native: dict[str, Any] = native_evidence.profile(run.native_windows, run.kernel_functions)
        reported_fraction, kernels_us = native["fraction"], native["kernels_us"]
        calls = len(run.native_windows)
    else:
        with run.gpu_step():
            profiled = run.candidate.profile()
        run.add_violations(watch_violations(profiled, "profile"))
        reported_fraction, kernels_us = profiled.fraction, profiled.kernels_us
        calls = 3  # profile_kernels runs three
    run.performance.triton_time_fraction = reported_fraction
    fraction = reported_fraction or 0.0
    # Kernels of an allowed epilogue (a few µs each) are not a fallback, however small the problem.
    outside_us = sum(kernels_us.values()) * (1.0 - fraction) / max(calls, 1)  # per call
    allowance_us = proportion.epilogue_gpu_allowance_us(run.anti_cheat.warnings, run.config.epilogue_gpu_us_per_op)
    if fraction < run.config.min_triton_time_fraction and outside_us > allowance_us:
        run.add_violations(
            [
                rules.violation(
                    "low_triton_time_fraction",
                    {"fraction": fraction, "threshold": run.config.min_triton_time_fraction, "kernels_us": kernels_us},
                )
            ]
        )


def _time_reference(run: Evaluation, compiled: bool = False) -> dict[str, Any]:
    """The reference's timing (with `compiled`, of torch.compile(reference): the compile baseline),
    from the cache or measured now with the candidate's processes stopped (SIGSTOP, checked by their
    state); only a timing taken so is cached."""
    cache = run.reference_cache
    cache_key = timing_key(run, run.input_sets, run.environment.model_dump())
    if compiled:
        cache_key = ReferenceCache.key(cache_key, [], {}, {"compiled": True})
        ref_stats = cache.get(cache_key) if cache is not None else None
    else:
        ref_stats = (
            run.cached_reference_stats if run.cached is not None else (cache.get(cache_key) if cache is not None else None)
        )
        run.performance.reference_cached = ref_stats is not None
    if ref_stats is not None:
        run.performance.reference_timed_alone = run.performance.reference_timed_alone or not compiled
        return ref_stats
    paused = run.candidate.process.pause()
    try:
        if not compiled:
            run.performance.reference_timed_alone = bool(paused.get("stopped"))
            run.performance.candidate_state_while_reference_timed = paused.get("states") or {}
        timed = run.reference.time(run.config.max_timing_seconds, compiled)
    finally:
        run.candidate.process.resume()
    samples = clean_samples(timed.samples(), 1 << 16)
    if not samples:
        raise Stop(
            Verdict.infrastructure_error, {"kind": "infrastructure_error", "message": "the reference timing has no samples"}
        )
    ref_stats = {**timed.facts(), **summarize(samples)}
    if cache is not None and paused.get("stopped"):
        cache.put(cache_key, ref_stats)
    return ref_stats


def _time_unlocked(run: Evaluation) -> None:
    ref_stats = _time_reference(run)
    cand_stats = _time_candidate(run)
    if cand_stats is None:
        return
    perf = run.performance
    perf.reference_ms = TimingStats(**{k: v for k, v in ref_stats.items() if k in TimingStats.model_fields})
    perf.candidate_ms = TimingStats(**{k: v for k, v in cand_stats.items() if k in TimingStats.model_fields})
    perf.method = cand_stats["method"]
    untrusted = cand_stats.get("untrusted")
    perf.meaningful = run.device == "cuda" and not run.environment.interpreter and not untrusted
    # On the GPU only: on the CPU inductor's C++ build takes minutes and the times mean nothing anyway.
    if run.config.compile_baseline and run.device == "cuda":
        compiled_stats = _time_reference(run, compiled=True)
        perf.compiled_reference_ms = TimingStats(**{k: v for k, v in compiled_stats.items() if k in TimingStats.model_fields})
        if perf.meaningful and cand_stats["median"] > 0:
            perf.speedup_vs_compiled = compiled_stats["median"] / cand_stats["median"]
    if perf.meaningful and cand_stats["median"] > 0:
        perf.speedup = ref_stats["median"] / cand_stats["median"]
        ref_low, ref_high = ref_stats["ci95"]
        cand_low, cand_high = cand_stats["ci95"]
        perf.speedup_ci95 = [ref_low / cand_high, ref_high / cand_low] if cand_low > 0 else None
        if cand_stats.get("event_ms_total"):
            perf.host_event_ratio = cand_stats["host_ms_total"] / cand_stats["event_ms_total"]
    elif untrusted:
        perf.note = (
            f"{untrusted}: the recorder started in the candidate's process and then stopped accounting for "
            "its timed calls, so no time the judge can trust was measured; speedup is not reported and the "
            "reward uses correctness only"
        )[:500]
    else:
        perf.note = (
            "Triton interpreter on the CPU: times are host-clock figures of the interpreter and mean "
            "nothing for GPU speed; speedup is not reported and the reward uses correctness only"
        )


def _calls_per_round(run: Evaluation) -> int:
    """As many calls as keep their outputs within KEEP_BYTES, at least one, at most
    MAX_CALLS_PER_ROUND (on the CPU, one call per timing set: the interpreter is slow)."""
    sets = run.timing_sets
    if run.device != "cuda":
        return sets
    fit = KEEP_BYTES["cuda"] // max(run.output_nbytes, 1)
    return int(max(1, min(MAX_CALLS_PER_ROUND, fit)))


def _time_candidate(run: Evaluation) -> dict[str, Any] | None:
    """Timed rounds. Before each, the reference rewrites the shared timing sets with fresh values
    from seeds only it and this process know; the candidate makes every call of the round, keeping
    each call's outputs; then this process picks (after the reply, at random) which calls the
    reference checks, with the candidate stopped. Statistics are made here, from the samples of the
    counted rounds (the first is warm-up): on the CPU from this process's own clock around each
    round, on the GPU from the harness's CUDA events (advisory: the candidate's process reports them)
    cross-checked against this process's clock."""
    gpu = run.device == "cuda"
    calls = _calls_per_round(run)
    # An eighth of the calls of each GPU round, at least two (a cheat replaying one call in ten goes
    # unseen with odds of 0.9**130 over ten rounds of 100); every call on the CPU (one round).
    checks_per_round = min(calls, max(2, math.ceil(calls / 8))) if gpu else calls
    min_reps, max_reps = (20, 1000) if gpu else (calls, calls)
    started = time.monotonic()
    samples: list[float] = []
    host_ms = event_ms = 0.0
    slack_s: float | None = None
    perf = run.performance
    perf.timing_evidence = "harness_cuda_events (advisory)" if gpu else "judge_host_clock"
    rounds = 0
    native_notes: list[str] = []
    untrusted: str | None = None  # why the native records stopped adding up, once they had started
    while True:
        seeds = [derive_seed(run.fresh_salt, f"round{rounds}.set{k}") for k in range(run.timing_sets)]
        with run.gpu_step():
            run.reference.refresh(seeds)
        began = time.monotonic()
        first_label = 1 + rounds * 2 * MAX_CALLS_PER_ROUND
        timed, fds = run.candidate.time_round(
            TimeRound(calls=calls, start=rounds * calls, slack_s=slack_s, first_label=first_label)
        )
        wall_ms = (time.monotonic() - began) * 1e3
        try:
            run.add_violations(watch_violations(timed, "timing") + judge_work(run, timed, "timing", timed_calls=calls))
            if timed.output_problem or timed.outputs is None or len(timed.outputs) != calls:
                run.add_violations(
                    [rules.violation("non_plain_output", {"phase": "timing", "detail": str(timed.output_problem)[:300]})]
                )
                return None
            picked = sorted(secrets.SystemRandom().sample(range(calls), min(checks_per_round, calls)))
            checks = [RoundCheck(call=i, set=(rounds * calls + i) % run.timing_sets, outputs=timed.outputs[i]) for i in picked]
            paused = run.candidate.process.pause(light=True)
            try:
                with run.gpu_step(holds=False):
                    checked = run.reference.check_round(
                        CheckRound(checks=checks, atol=run.tolerance[0], rtol=run.tolerance[1]), fds
                    )
            finally:
                run.candidate.process.resume()
        finally:
            close_fds(fds)
        perf.timed_calls_checked += len(checks)
        perf.timed_rounds = rounds + 1
        perf.candidate_stopped_while_checked = bool(paused.get("stopped")) and perf.candidate_stopped_while_checked is not False
        failed = [c.evidence() for c in checked.checks if not c.passed]
        if failed:
            run.add_violations(
                [rules.violation("timed_output_mismatch", {"round": rounds, "calls": calls, "failed": failed[:4]})]
            )
            return None
        if checked.changed_sets:
            run.add_violations([rules.violation("input_mutation", {"phase": "timing", "changed_sets": checked.changed_sets})])
            return None
        claimed = clean_samples(timed.samples, calls)
        if len(claimed) != calls or sum(claimed) > wall_ms * 1.05 + 1.0:
            run.add_violations(
                [
                    rules.violation(
                        "timing_claim_inconsistent",
                        {"round": rounds, "claimed_ms_total": sum(claimed) if claimed else None, "judge_wall_ms": wall_ms},
                    )
                ]
            )
            return None
        # Once the records have stopped adding up, no later round's records are waited for: the speed
        # is not credited either way.
        call_windows, note = _native_samples(run, first_label, calls, rounds + 1) if gpu and untrusted is None else (None, None)
        if note and note not in native_notes:
            native_notes.append(note)
        # The recorder said hello before the candidate was imported; records that stop adding up after
        # that are the candidate's doing or a fault, and either way the events its process reports
        # instead are only a claim: the speed is not credited (a candidate gains nothing by it).
        if note and note.startswith(UNUSABLE_RECORDS) and rounds > 0 and untrusted is None:
            untrusted = note
        native = [w.span_ns / 1e6 for w in call_windows] if call_windows is not None else None
        if call_windows is not None and rounds > 0:
            run.native_windows.extend(call_windows)
            found = _native_violations(run, call_windows, rounds)
            if found:
                run.add_violations(found)
                return None
        if rounds == 0:  # warm-up: compiles, autotuning; sets the spin before each timed call
            slack_s = min(2 * wall_ms / 1e3 / calls, 20e-3)
        else:
            if gpu and native is None and perf.timing_evidence == "native_recorder":
                perf.timing_evidence = "mixed (native recorder, then harness_cuda_events: advisory)"
            elif gpu and native is not None and rounds == 1:
                perf.timing_evidence = "native_recorder"
            samples.extend(native if native is not None else claimed if gpu else [wall_ms / calls] * calls)
            host_ms += wall_ms
            event_ms += sum(claimed)
        rounds += 1
        if len(samples) >= min_reps and (
            len(samples) >= max_reps
            or time.monotonic() - started > run.config.max_timing_seconds
            or (gpu and tight(samples, 0.005))
        ):
            break
        if time.monotonic() - started > 4 * run.config.max_timing_seconds and samples:
            break
    if native_notes:
        perf.note = "; ".join(native_notes)[:500]
    stats = summarize(samples)
    if untrusted:
        stats["untrusted"] = untrusted
    stats.update(
        method="cuda_events+l2_flush"
        if gpu
        else "host_clock",  # the method names are a public contract host_ms_total=host_ms, event_ms_total=event_ms,
        stable=bool(gpu and tight(samples, 0.005)),
    )
    return stats


UNUSABLE_RECORDS = "native records unusable"


def _native_samples(run: Evaluation, first_label: int, calls: int, flushes: int) -> tuple[list[Any] | None, str | None]:
    """The windows of a round's calls in the native recorder's records (each call between its two
    markers), or None and why not (no recorder, or records that do not add up: then the harness's
    events, advisory)."""
    records = run.candidate.process.records
    if records is None:
        return None, None
    labels = range(first_label, first_label + 2 * calls)
    wanted = set(labels)
    # The round's FLUSH record, and the GPU records of every marker it placed: CUPTI may still be
    # delivering a buffer it took before the flush (an honest round's records arrive within ms).
    stream = records.wait_until(
        lambda parsed: parsed.flushes >= flushes and wanted <= native_evidence.recorded_markers(parsed), timeout=MARKER_WAIT_S
    )
    if stream.hello is None:
        return None, "no native recorder in the candidate's process"
    found = native_evidence.windows(stream, first_label, labels[-1])
    calls_windows = list(found)[0::2]
    if found.problems or len(calls_windows) != calls or not all(w.complete for w in calls_windows):
        summary = native_evidence.stream_summary(stream, labels)
        return None, f"{UNUSABLE_RECORDS} ({summary}): " + "; ".join(found.problems[:3])
    return calls_windows, None


def _native_violations(run: Evaluation, call_windows: list[Any], round_index: int) -> list[Violation]:
    """What the records of a round's calls show: a timed call that ran none of the submission's
    kernels did not do the work; data copied to the host is a CPU detour (a scalar is allowed)."""
    idle = [
        i
        for i, window in enumerate(call_windows)
        if not any(native_evidence.names_kernel(f, k.name) for k in window.kernels for f in run.kernel_functions)
    ]
    found = []
    if idle:
        found.append(
            rules.violation(
                "no_triton_launch", {"phase": "timing", "round": round_index, "calls": idle[:10], "evidence": "native recorder"}
            )
        )
    copied = [sum(window.device_to_host) for window in call_windows]
    if max(copied, default=0) > HOST_SCALAR_BYTES:
        found.append(
            rules.violation(
                "device_to_host_transfer",
                {"phase": "timing", "round": round_index, "bytes_per_call": max(copied), "evidence": "native recorder"},
            )
        )
    return found
