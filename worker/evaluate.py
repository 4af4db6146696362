"""One evaluation: static checks, then the reference and the candidate in two processes, the
comparison in the reference process, and the verdict here. No torch in this process.

The judge owns the evidence (docs/evidence.md): tensors stay in shared memory (memfds on the CPU,
CUDA IPC on the GPU) made and read by the reference; this process relays descriptors and never
holds a tensor; timing statistics are made here from raw samples; timed calls run in rounds on
inputs the reference rewrites between rounds, and outputs of calls picked after each round are
checked while the candidate is stopped; the reference is timed only while the candidate is stopped."""

from __future__ import annotations

import ast
import glob
import hashlib
import math
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.harness import shm
from sandbox.harness.stats import clean_samples, summarize, tight
from sandbox.isolation import Isolation

from . import judging, native_evidence, proportion, rules, static_checks
from .feedback import write_feedback
from .input_sets import plan_input_sets
from .models import (
    AntiCheat,
    Correctness,
    Environment,
    EvalConfig,
    EvaluationResult,
    Performance,
    Problem,
    StageTimings,
    Submission,
    TimingStats,
    Verdict,
    Violation,
)
from .pool import PoolClient, PoolUnavailable
from .process import HarnessDied, HarnessProcess, HarnessTimeout
from .reference_cache import ReferenceCache
from .reference_data import ReferenceData, ReferenceDataCache
from .reward import compute_reward
from .static_checks import ProblemSourceError
from .timing_lock import TimingLock

_FAILURE_VERDICTS = {
    "compile_error": Verdict.compile_error,
    "runtime_error": Verdict.runtime_error,
    "invalid_submission": Verdict.invalid_submission,
}


def detect_device() -> str:
    """'cuda' when an NVIDIA device node exists, else 'cpu' (decided without importing torch)."""
    return "cuda" if glob.glob("/dev/nvidia[0-9]*") else "cpu"


def derive_seed(salt: int, label: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{label}".encode()).digest()[:8], "big") & ((1 << 62) - 1)


class _Stop(Exception):
    """Ends the evaluation early with a verdict."""

    def __init__(self, verdict: Verdict, error: dict[str, Any] | None = None) -> None:
        super().__init__(verdict.value)
        self.verdict = verdict
        self.error = error


@dataclass
class _Run:
    """What one evaluation has learned so far."""

    config: EvalConfig
    device: str
    salt: int  # the trials' (on a reference-data hit, the cache entry's)
    fresh_salt: int  # this evaluation's own secret: timing inputs and rechecks
    deadline: float
    reference: HarnessProcess
    candidate: HarnessProcess
    correctness: Correctness = field(default_factory=Correctness)
    performance: Performance = field(default_factory=Performance)
    anti_cheat: AntiCheat = field(default_factory=AntiCheat)
    environment: Environment = field(default_factory=Environment)
    problem_sha256: str = ""
    input_sets: list[dict[str, int]] = field(default_factory=list)
    reference_cache: ReferenceCache | None = None
    reference_data: ReferenceDataCache | None = None
    data_key: str = ""
    cached: ReferenceData | None = None  # a hit: the reference process is a judge, the data comes from here
    cached_reference_stats: dict[str, Any] | None = None  # the timing that came with a hit
    recording: ReferenceData | None = None  # a miss being recorded for the cache
    timing_lock: TimingLock | None = None
    tolerance: tuple[float | None, float | None] = (None, None)
    allowed_ops: list[str] = field(default_factory=list)
    reference_aliases: set[int] = field(default_factory=set)  # inputs the reference returns (in-place modules)
    dtypes: set[str] = field(default_factory=set)  # of the trials' inputs and outputs (judging.interpreter_limitation)
    compiled: bool = False
    steps: dict[str, float] = field(default_factory=dict)  # ms per "role.command"
    answers: dict[str, tuple[dict[str, Any], list[int]]] = field(default_factory=dict)  # deferred commands' replies
    started: float = 0.0
    audit_hook: bool = True  # off only by the operator's test switch (evaluate's audit_hook)
    allow_native_code: bool = False  # the operator's switch (evaluate's allow_native_code)
    trial_nbytes: int = 0  # inputs and expected outputs of one trial (known after the first)
    output_nbytes: int = 0
    timing_sets: int = 1  # how many the reference made
    kernel_functions: list[str] = field(default_factory=list)  # the submission's @triton.jit functions (from its source)
    native_windows: list[Any] = field(default_factory=list)  # the timed calls' windows of native records
    _started: dict[str, float] = field(default_factory=dict)
    _deferred: dict[str, list[tuple[dict[str, Any], float, str]]] = field(default_factory=dict)

    @contextmanager
    def gpu_step(self, holds: bool = True) -> Iterator[None]:
        """Around a step that runs kernels but is not timing: holds the GPU shared, so no timing
        runs meanwhile (see timing_lock.py)."""
        if not holds or self.timing_lock is None or self.device != "cuda":
            yield
            return
        with self.timing_lock.shared() as waited_s:
            self.steps["wait.gpu"] = self.steps.get("wait.gpu", 0.0) + waited_s * 1e3
            yield

    def add_violations(self, violations: list[Violation]) -> None:
        known = {v.rule for v in self.anti_cheat.violations}
        self.anti_cheat.violations.extend(v for v in violations if v.rule not in known)

    def ask(self, process: HarnessProcess, header: dict[str, Any], fds: list[int] | None = None) -> tuple[dict[str, Any], list[int]]:
        """Send a command (with shared-memory descriptors, which stay the caller's) and wait for the
        reply and the descriptors that came with it (the caller's to close: see `close_fds`)."""
        self.post(process, header, fds)
        return self.collect(process, header)

    def post(self, process: HarnessProcess, header: dict[str, Any], fds: list[int] | None = None) -> None:
        """Send a command; its answer is collected later, so two processes can work at once."""
        self.drain(process)
        self._started[process.role] = time.monotonic()
        self._failing(process, lambda: process.post(header, deadline=self.deadline, fds=fds))

    def defer(self, process: HarnessProcess, header: dict[str, Any], step: str) -> None:
        """Send a command the process works on in the background: its answer is taken (into
        `answers`, by command) before the next command to that process."""
        self._failing(process, lambda: process.post(header, deadline=self.deadline))
        self._deferred.setdefault(process.role, []).append((header, time.monotonic(), step))

    def drain(self, process: HarnessProcess) -> None:
        for header, started, step in self._deferred.pop(process.role, []):
            self._started[process.role] = started
            self.answers[header["cmd"]] = self.collect(process, header, step)

    def collect(self, process: HarnessProcess, header: dict[str, Any], step: str | None = None) -> tuple[dict[str, Any], list[int]]:
        step = step or f"{process.role}.{header['cmd']}"
        try:
            reply, _ = self._failing(process, lambda: process.collect(header, deadline=self.deadline))
        finally:
            elapsed = (time.monotonic() - self._started.get(process.role, time.monotonic())) * 1e3
            self.steps[step] = self.steps.get(step, 0.0) + elapsed
        fds = process.take_fds()
        if not reply.get("ok"):
            close_fds(fds)
            error = reply.get("error") or {"kind": "infrastructure_error", "message": "malformed reply"}
            kind = error.get("kind")
            if process is self.reference and kind == "problem_error":
                raise ProblemSourceError(error.get("message", "the reference failed"))
            verdict = _FAILURE_VERDICTS.get(kind, Verdict.infrastructure_error) if process is self.candidate else Verdict.infrastructure_error
            # Torch ops before a crash stay a crash; refused calls and tampering do not.
            evidence = {k: v for k, v in reply.items() if k != "compute_ops"}
            caught = _watch_violations(evidence, header["cmd"]) if process is self.candidate else []
            if caught:  # a forbidden call that ended the run is cheating, not a crash
                self.add_violations(caught)
                verdict = Verdict.cheating
            raise _Stop(verdict, error)
        return reply, fds

    def _failing(self, process: HarnessProcess, step: Any) -> Any:
        """Run a channel step, turning a dead or silent process into the verdict it earns."""
        try:
            return step()
        except HarnessTimeout as exc:
            if process is self.candidate:
                raise _Stop(Verdict.timeout, {"kind": "timeout", "message": f"{exc} (limit {self.config.timeout_s:g} s)"}) from exc
            raise _Stop(Verdict.infrastructure_error, {"kind": "infrastructure_error", "message": str(exc)}) from exc
        except HarnessDied as exc:
            verdict = Verdict.runtime_error if process is self.candidate else Verdict.infrastructure_error
            error: dict[str, Any] = {"kind": verdict.value, "message": str(exc), "returncode": exc.returncode}
            if exc.memory is not None:  # killed for memory: name the budget and what was held
                used, budget = exc.memory
                error["memory_budget"] = {"memory": "host (resident)", "budget_bytes": budget, "used_bytes": used,
                                          "whose": process.role}
            raise _Stop(verdict, error) from exc


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _native_samples(run: _Run, first_label: int, calls: int, flushes: int) -> tuple[list[Any] | None, str | None]:
    """The windows of a round's calls in the native recorder's records (each call between its two
    markers), or None and why not (no recorder, or records that do not add up: then the harness's
    events, advisory)."""
    records = run.candidate.records
    if records is None:
        return None, None
    stream = records.wait_for_flush(flushes, timeout=5.0)
    if stream.hello is None:
        return None, "no native recorder in the candidate's process"
    found = native_evidence.windows(stream, first_label, first_label + 2 * calls - 1)
    calls_windows = list(found)[0::2]
    if found.problems or len(calls_windows) != calls or not all(w.complete for w in calls_windows):
        return None, "native records unusable: " + "; ".join(found.problems[:3])
    return calls_windows, None


def _native_violations(run: _Run, call_windows: list[Any], round_index: int) -> list[Violation]:
    """What the records of a round's calls show: a timed call that ran none of the submission's
    kernels did not do the work; data copied to the host is a CPU detour (a scalar is allowed)."""
    idle = [i for i, window in enumerate(call_windows)
            if not any(native_evidence.names_kernel(f, k.name) for k in window.kernels for f in run.kernel_functions)]
    found = []
    if idle:
        found.append(rules.violation("no_triton_launch", {"phase": "timing", "round": round_index, "calls": idle[:10],
                                                          "evidence": "native recorder"}))
    copied = [sum(window.device_to_host) for window in call_windows]
    if max(copied, default=0) > HOST_SCALAR_BYTES:
        found.append(rules.violation("device_to_host_transfer", {"phase": "timing", "round": round_index,
                                                                 "bytes_per_call": max(copied), "evidence": "native recorder"}))
    return found


def jobs_root() -> Path:
    """Where fresh-process evaluations keep their working directories: one place, so a candidate's
    guard can refuse reads of any other job's files."""
    root = Path(tempfile.gettempdir()) / "referee-jobs"
    root.mkdir(mode=0o700, exist_ok=True)
    return root


def plan_problem(source: str, input_sets: list[dict[str, int]] | None = None) -> list[dict[str, int]]:
    """Check a reference statically and return the input sets it will be checked on (the first is
    the original). Raises ProblemSourceError for a reference that is not a usable problem."""
    tree = static_checks.check_problem(source)
    try:
        return [{}] + [s for s in input_sets if s] if input_sets is not None else plan_input_sets(tree)
    except ValueError as exc:
        raise ProblemSourceError(str(exc)) from exc


def evaluate(problem: Problem, submission: Submission, config: EvalConfig | None = None, *,
             job_id: str | None = None, python: str | None = None,
             reference_cache: ReferenceCache | None = None, isolation: Isolation | None = None,
             pool: PoolClient | None = None, timing_lock: TimingLock | None = None,
             reference_data: ReferenceDataCache | None = None, audit_hook: bool = True,
             allow_native_code: bool = False) -> EvaluationResult:
    """Run one evaluation. Raises ProblemSourceError for a reference that is not a usable problem.
    With `reference_cache`, the reference's timing is reused for the same problem, plan and card.
    With `reference_data` too, its inputs and expected outputs are (see `reference_data.py`).
    With `pool`, both harness processes are forked by the warm pool's zygote (its isolation applies)
    instead of started fresh. With `timing_lock`, the GPU is held only while timing. `audit_hook=False`
    is the operator's test switch (REFEREE_UNSAFE_NO_AUDIT_HOOK, from the worker's settings, never a
    request): the candidate runs without the audit hook, as if it had beaten it. `allow_native_code=True`
    is the operator's REFEREE_ALLOW_NATIVE_CODE: building and loading native code is not `native_code`."""
    config = config or EvalConfig()
    started = time.monotonic()
    result_id = job_id or uuid.uuid4().hex
    input_sets = judging.planned_sets(plan_problem(problem.source, config.input_sets), config)
    failure = static_checks.check_candidate(submission.source)
    static_ms = (time.monotonic() - started) * 1e3
    if failure is not None:
        error = {"kind": failure.verdict.value, "message": failure.message, "line": failure.line}
        return _finish(result_id, config, failure.verdict, error, Correctness(), Performance(), AntiCheat(),
                       Environment(), False, {}, StageTimings(static=static_ms), started, submission.source)

    hints = static_checks.suspicious_constructs(submission.source)
    static_warnings = [rules.violation("suspicious_source", {"constructs": hints})] if hints else []
    device = detect_device() if config.device == "auto" else config.device
    salt = config.seed if config.seed is not None else secrets.randbits(62)
    workdir = Path(tempfile.mkdtemp(prefix="job-", dir=pool.scratch if pool is not None else jobs_root()))
    # Each harness process writes its source into its own directory (which, under a namespace
    # backend or in the warm pool, exists only inside the isolation).
    reference_path = workdir / "reference" / "problem.py"
    candidate_path = workdir / "candidate" / "candidate.py"
    run = _Run(
        config=config, device=device, salt=salt, fresh_salt=salt, deadline=started + config.timeout_s,
        reference=HarnessProcess("reference", workdir / "reference", device, python, isolation, pool),
        candidate=HarnessProcess("candidate", workdir / "candidate", device, python, isolation, pool,
                                 native_records=device == "cuda"),
        # Another precision is another problem for the caches (inputs, expected outputs, timings).
        problem_sha256=judging.problem_key(
            problem.sha256 if config.precision == "fp32" else hashlib.sha256(f"{problem.sha256}:{config.precision}".encode()).hexdigest(), config),
        reference_cache=reference_cache, timing_lock=timing_lock, started=started,
        reference_data=reference_data if reference_cache is not None else None,  # a hit needs the cached timing
        kernel_functions=static_checks.jit_functions(ast.parse(submission.source)), audit_hook=audit_hook,
        allow_native_code=allow_native_code,
    )
    run.anti_cheat.warnings.extend(static_warnings)
    verdict, error = Verdict.correct, None
    try:
        run.reference.start()
        run.candidate.start()
        _check(run, (str(reference_path), problem.source), (str(candidate_path), submission.source), input_sets)
        if run.recording is not None and run.reference_data is not None and run.correctness.recheck_passed is not None:
            run.reference_data.put(run.data_key, run.recording)  # it got through every trial
        verdict = Verdict.cheating if run.anti_cheat.violations else (
            Verdict.correct if run.correctness.passed == run.correctness.trials and run.correctness.recheck_passed is not False else Verdict.incorrect
        )
    except _Stop as stop:
        verdict, error = stop.verdict, stop.error
    except (OSError, PoolUnavailable) as exc:
        verdict, error = Verdict.infrastructure_error, {"kind": "infrastructure_error", "message": f"{type(exc).__name__}: {exc}"}
    finally:
        run.candidate.close()
        run.reference.close()
        output = run.candidate.output()
        shutil.rmtree(workdir, ignore_errors=True)
    verdict, error = judging.interpreter_limitation(verdict, error, run.environment.interpreter, run.dtypes)
    if pool is not None and run.environment.launchers_built:
        try:  # the next evaluations with these argument types skip gcc
            pool.learn_launchers(run.environment.launchers_built)
        except (OSError, PoolUnavailable):
            pass
    if verdict == Verdict.infrastructure_error and run.reference.process is not None:
        reference_stderr = run.reference.output().get("stderr", "")
        if reference_stderr and error is not None:
            error = {**error, "reference_stderr": reference_stderr[-2000:]}
    timings = StageTimings(
        static=static_ms,
        start=(run.reference.start_seconds + run.candidate.start_seconds) * 1e3,
        steps={name: round(ms, 3) for name, ms in run.steps.items()},
        reference=run.reference.busy_seconds * 1e3,
        candidate=run.candidate.busy_seconds * 1e3,
    )
    return _finish(result_id, config, verdict, error, run.correctness, run.performance, run.anti_cheat,
                   run.environment, run.compiled, output, timings, started, submission.source)


# Large problems: the deadline grows with a trial's bytes, and fewer trials are run by default.
SECONDS_PER_GIB = 10.0
LARGE_TRIAL_BYTES = 1 << 30
LARGE_DEFAULT_TRIALS = 3
# Timed rounds: every call's outputs are kept until the round is checked, within this many bytes.
KEEP_BYTES = {"cuda": 4 << 30, "cpu": 256 << 20}
MAX_CALLS_PER_ROUND = 100  # few rounds for µs kernels: each round costs a refresh, a check and a stop
HOST_SCALAR_BYTES = 64  # device-to-host bytes per timed call still taken as a scalar sync (`.item()`), not a detour


def _check(run: _Run, reference: tuple[str, str], candidate: tuple[str, str], input_sets: list[dict[str, int]]) -> None:
    config = run.config
    # The candidate process sets up its device (CUDA context, Triton's driver) while the reference
    # builds its model: both before any candidate code is loaded.
    prepare = {"cmd": "prepare", "device": run.device}
    run.post(run.candidate, prepare)
    reply, init_fds = _setup_reference(run, reference, input_sets)
    try:
        init_seed = derive_seed(run.salt, "init")  # after the setup: a hit brings its entry's salt
        run.collect(run.candidate, prepare)
        run.environment = _environment(run, reply["environment"])
        run.anti_cheat.warnings.extend(Violation(**w) for w in reply.get("warnings", []))
        input_sets = [input_sets[i] for i in reply.get("valid_sets", range(len(input_sets)))]
        # fp16/bf16 without a stated tolerance: KernelBench's 1e-2.
        low_precision = 1e-2 if config.precision != "fp32" else None
        run.tolerance = (
            config.atol if config.atol is not None else reply.get("atol") if reply.get("atol") is not None else low_precision,
            config.rtol if config.rtol is not None else reply.get("rtol") if reply.get("rtol") is not None else low_precision,
        )
        run.allowed_ops = sorted({*config.allowed_ops, *reply.get("allowed_ops", [])})
        run.reference_aliases = set(reply.get("aliases_inputs", []))
        run.input_sets = input_sets
        run.correctness.input_sets = len(input_sets)
        run.correctness.input_set_overrides = input_sets
        run.correctness.value_ranges = list(reply.get("value_ranges", []))

        setup, _ = run.ask(run.candidate, {"cmd": "setup", "path": candidate[0], "source": candidate[1], "device": run.device,
                                           "init_seed": init_seed, "init_inputs": reply["init_inputs"], "precision": config.precision,
                                           "allowed_ops": run.allowed_ops, "audit_hook": run.audit_hook,
                                           "allow_native_code": run.allow_native_code,
                                           "randomize_parameters": bool(reply.get("randomize_parameters"))}, init_fds)
    finally:
        close_fds(init_fds)
    run.add_violations(_watch_violations(setup, "import"))
    # Every input set is checked at least once, whatever the trial count.
    trial = 0
    while trial < max(_trial_count(run), len(input_sets)):
        if not _trial(run, f"trial{trial}", trial % len(input_sets)):
            return
        trial += 1
    for name in run.correctness.value_ranges:  # adversarial value ranges on the original set (hardening.py)
        if not _trial(run, f"values_{name}", 0, values=name):
            return
    _time(run)
    # Fresh values on every input set, after timing (the first has the timed loop's shapes): a
    # candidate replaying what it saw while timed, or carrying outputs for inputs it saw in an
    # earlier result (cached trial inputs repeat), fails here.
    run.correctness.recheck_passed = all(_trial(run, "recheck" if k == 0 else f"recheck{k}", k, counted=False)
                                         for k in range(len(input_sets)))
    summary, _ = run.ask(run.candidate, {"cmd": "summary"})
    run.anti_cheat.triton_launches = summary["summary"]["triton_launches"]
    run.anti_cheat.kernels = summary["summary"]["kernels"]
    run.anti_cheat.foreign_kernels = summary["summary"]["foreign_kernels"]
    launchers = summary.get("launchers") or {}
    run.environment.launchers_seeded = int(launchers.get("seeded") or 0)
    run.environment.launchers_built = [list(map(str, pattern)) for pattern in (launchers.get("built") or [])[:16]]


def _trial_count(run: _Run) -> int:
    """The requested trials; by default fewer for a large problem (each trial's inputs are fresh,
    and the timed rounds and rechecks check more calls on fresh values anyway)."""
    if "trials" not in run.config.model_fields_set and run.trial_nbytes >= LARGE_TRIAL_BYTES:
        return min(run.config.trials, LARGE_DEFAULT_TRIALS)
    return run.config.trials


def _scale_deadline(run: _Run, reply: dict[str, Any]) -> None:
    """Once a trial's size is known: the deadline grows by SECONDS_PER_GIB per GiB of inputs and
    expected outputs, so a problem of several GB does not time out by default."""
    if run.trial_nbytes:
        return
    sizes = reply.get("nbytes") or {}
    run.output_nbytes = int(sizes.get("expected") or 0)
    run.trial_nbytes = int(sizes.get("inputs") or 0) + run.output_nbytes
    extra = SECONDS_PER_GIB * run.trial_nbytes / (1 << 30)
    run.deadline = max(run.deadline, run.started + run.config.timeout_s + extra)


def _setup_reference(run: _Run, reference: tuple[str, str], input_sets: list[dict[str, int]]) -> tuple[dict[str, Any], list[int]]:
    """The reference's setup reply and its init inputs' memfd: from the cache on a hit (the
    reference process judges the trials, and builds the live model in the background for the fresh
    timing inputs and rechecks), else from the problem's model (recorded for the cache when it is on)."""
    if run.reference_data is not None:
        judged, _ = run.ask(run.reference, {"cmd": "setup", "judge": True, "device": run.device})
        run.cached = _cached_reference_data(run, input_sets, judged["environment"])
        if run.cached is not None:
            run.salt = run.cached.salt
            run.performance.reference_outputs_cached = True
            valid_sets = [input_sets[i] for i in run.cached.setup.get("valid_sets", range(len(input_sets)))]
            run.defer(run.reference, {"cmd": "setup", "path": reference[0], "source": reference[1], "device": run.device,
                                      "precision": run.config.precision, "init_seed": derive_seed(run.salt, "init"), "input_sets": valid_sets, "checked": True},
                      "reference.background_setup")
            run.defer(run.reference, _timing_inputs_header(run), "reference.background_timing_inputs")
            reply, init_bytes = run.cached.setup_reply(judged["environment"])
            return reply, [shm.from_bytes(init_bytes, "referee-init")]
    reply, fds = run.ask(run.reference, {
        "cmd": "setup", "path": reference[0], "source": reference[1], "device": run.device, "precision": run.config.precision,
        "init_seed": derive_seed(run.salt, "init"), "input_sets": input_sets, **judging.setup_options(run.config),
    })
    if run.reference_data is not None and not reply.get("mutates_inputs"):  # its inputs' after-state is not cached
        try:
            init_bytes = shm.read_all(fds[0], run.reference_data.max_entry_bytes) if fds else b""
            run.recording = ReferenceData.start(run.salt, reply, init_bytes)
        except (OSError, ValueError):
            run.recording = None
    return reply, fds


def _cached_reference_data(run: _Run, input_sets: list[dict[str, int]], reported: dict[str, Any]) -> ReferenceData | None:
    """This problem's entry in the reference-data cache, if any; a hit also needs the reference's
    cached timing (kept in the run, as the judge cannot time anything)."""
    assert run.reference_data is not None and run.reference_cache is not None
    environment = _environment(run, reported).model_dump()
    run.data_key = ReferenceDataCache.key(run.problem_sha256, input_sets, environment, trials=run.config.trials,
                                          timing_sets=run.config.timing_sets, device=run.device, seed=run.config.seed)
    entry = run.reference_data.take(run.data_key)
    if entry is None:
        return None
    valid_sets = [input_sets[i] for i in entry.setup.get("valid_sets", range(len(input_sets)))]
    run.cached_reference_stats = run.reference_cache.get(_timing_key(run, valid_sets, environment))
    return entry if run.cached_reference_stats is not None else None


def _environment(run: _Run, reported: dict[str, Any]) -> Environment:
    return Environment(**{k: v for k, v in reported.items() if k in Environment.model_fields and k != "confinement"},
                       isolation=run.reference.isolation_name, confinement=run.candidate.confinement)


def _timing_key(run: _Run, input_sets: list[dict[str, int]], environment: dict[str, Any]) -> str:
    return ReferenceCache.key(run.problem_sha256, input_sets, environment,
                              {"sets": run.config.timing_sets, "max_seconds": run.config.max_timing_seconds})


def _watch_violations(reply: dict[str, Any], phase: str) -> list[Violation]:
    """Violations from what the candidate process's watchers saw during one phase."""
    events = reply.get("audit_events", [])
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_rule.setdefault(rules.rule_of_event(event), []).append(event)
    checks = [
        ("torch_fallback", None if "work" in reply else reply.get("compute_ops"), "ops"),  # else: _judge_work
        ("torch_fallback", reply.get("hidden_compute"), "hidden_ops"),  # ops the dispatch mode never saw: never proportionate
        ("tampering", reply.get("tampering", [])[:20], "changed"),
        *((rule, found[:20], "events") for rule, found in sorted(by_rule.items())),
        ("native_code", reply.get("native_files"), "files"),  # none reported where the operator allows native code
        ("background_thread", reply.get("threads_left_running"), "threads_left_running"),
        ("side_stream", reply.get("side_stream_launches"), "launches"),
        ("device_to_host_transfer", (reply.get("device_to_host") or 0) + (reply.get("host_memory_launches") or 0), "copies"),
    ]
    return [rules.violation(rule, {"phase": phase, key: value}) for rule, value, key in checks if value]


def _judge_work(run: _Run, reply: dict[str, Any], phase: str) -> list[Violation]:
    """Torch's share of the work (worker/proportion.py): fatal findings returned, epilogue warnings kept."""
    fatal, warnings = proportion.judge(reply, phase, run.config, run.device)
    proportion.keep_warning(run.anti_cheat.warnings, warnings)
    return fatal


def _record_comparison(run: _Run, report: dict[str, Any]) -> None:
    for output in report.get("outputs", []):
        for key in ("max_abs_error", "max_rel_error", "max_abs_error_vs_fp64", "reference_error_vs_fp64"):
            value = output.get(key)
            if value is not None:
                current = getattr(run.correctness, key)
                setattr(run.correctness, key, value if current is None else max(current, value))
        if output.get("atol") is not None:
            run.correctness.atol, run.correctness.rtol = output["atol"], output["rtol"]


def _trial_inputs(run: _Run, label: str, set_index: int, values: str | None = None) -> tuple[dict[str, Any], list[int]]:
    """A trial's inputs, shared by the reference (the reply's descriptors go to the candidate): on a
    hit, from the cached inputs and expected outputs the engine hands the judge; else made by the
    reference (recorded for the cache while they still fit its entry size). Rechecks are never cached."""
    if run.cached is not None and label in run.cached.trials:
        cached, inputs, expected = run.cached.judge_request(label)
        supplied = [shm.from_bytes(inputs, "referee-cached"), shm.from_bytes(expected, "referee-cached")]
        try:
            return run.ask(run.reference, {"cmd": "inputs", "trial": label, "cached": cached}, supplied)
        finally:
            close_fds(supplied)
    recheck = label.startswith("recheck")
    header = {"cmd": "inputs", "trial": label, "set_index": set_index,
              "seed": derive_seed(run.fresh_salt if recheck else run.salt, label), "values": values}
    recording, cache = run.recording, run.reference_data
    if recording is None or cache is None or recheck:
        return run.ask(run.reference, header)
    reply, fds = run.ask(run.reference, {**header, "expected_budget": cache.max_entry_bytes - recording.nbytes})
    record = reply.get("record")
    if record is None:  # too large for the cache, or not encodable: not cached
        run.recording = None
        return reply, fds
    first = record["fds"][0]
    try:
        recording.add_trial(label, set_index, reply, shm.read_all(fds[first], cache.max_entry_bytes),
                            shm.read_all(fds[first + 1], cache.max_entry_bytes))
    except (OSError, ValueError, IndexError):
        run.recording = None
    close_fds(fds[first:])
    return reply, fds[:first]


def _timing_inputs_header(run: _Run) -> dict[str, Any]:
    return {"cmd": "timing_inputs", "seeds": [derive_seed(run.fresh_salt, f"timing{k}") for k in range(_timing_set_count(run))]}


def _timing_set_count(run: _Run) -> int:
    """The requested timing sets; by default one for a large problem (each set costs the reference
    its shared buffer and its expected outputs on the device, and the contents change every round)."""
    if "timing_sets" not in run.config.model_fields_set and run.trial_nbytes >= LARGE_TRIAL_BYTES:
        return 1
    return run.config.timing_sets


def _timing_inputs(run: _Run) -> tuple[dict[str, Any], list[int]]:
    """Fresh every evaluation (never cached); on a hit made in the background since the setup."""
    run.drain(run.reference)
    return run.answers.pop("timing_inputs", None) or run.ask(run.reference, _timing_inputs_header(run))


def _trial(run: _Run, label: str, set_index: int, counted: bool = True, values: str | None = None) -> bool:
    """One correctness trial on fresh inputs (in a value range of hardening.py when `values`); returns whether it passed."""
    with run.gpu_step():
        reply, input_fds = _trial_inputs(run, label, set_index, values)
    _scale_deadline(run, reply)
    try:
        with run.gpu_step(holds=run.compiled):  # the first run is mostly compiling: it holds nothing
            outcome, output_fds = run.ask(run.candidate, {"cmd": "run", "trial": label, "inputs": reply["inputs"]}, input_fds)
    finally:
        close_fds(input_fds)
    run.compiled = run.compiled or outcome["launches"] > 0
    run.dtypes |= judging.dtypes_in(reply["inputs"]) | judging.dtypes_in(outcome.get("outputs"))
    if counted:
        run.correctness.trials += 1
    compare_header = {"cmd": "compare", "trial": label, "outputs": outcome.get("outputs"),
                      "atol": run.tolerance[0], "rtol": run.tolerance[1]}
    try:
        with run.gpu_step():
            compared, _ = run.ask(run.reference, compare_header, output_fds)
    finally:
        close_fds(output_fds)
    report = compared["report"]
    _record_comparison(run, report)
    violations = _watch_violations(outcome, label) + _judge_work(run, outcome, label)
    # With an op allowlist, an output may legitimately come from an allowed torch op.
    if outcome["unwritten_outputs"] and not outcome.get("output_problem") and not run.allowed_ops:
        violations.append(rules.violation("output_not_written_by_kernel", {"trial": label, "outputs": outcome["unwritten_outputs"]}))
    if outcome.get("host_written_outputs") and not run.allowed_ops:  # changed from the host after its last launch
        violations.append(rules.violation("output_not_written_by_kernel", {"trial": label, "written_from_host": outcome["host_written_outputs"]}))
    if outcome["foreign_launches"] and not run.config.allow_foreign_kernels:
        violations.append(rules.violation("foreign_kernel", {"trial": label, "kernels": outcome["foreign_launches"]}))
    if outcome["launches"] == 0:
        violations.append(rules.violation("no_triton_launch", {"trial": label, "foreign_kernels": outcome["foreign_launches"]}))
    if report.get("undecodable"):
        violations.append(rules.violation("non_plain_output", {"trial": label, "detail": report["undecodable"]}))
    if outcome.get("output_problem"):
        violations.append(rules.violation("non_plain_output", {"trial": label, "detail": outcome["output_problem"]}))
    if not report["inputs"]["unchanged"]:
        violations.append(rules.violation("input_mutation", {"trial": label, "changed_inputs": report["inputs"]["changed_inputs"]}))
    aliased = [i for i in outcome["aliases_input"] if i not in run.reference_aliases]  # an in-place reference returns its input
    if aliased:
        violations.append(rules.violation("output_aliases_input", {"trial": label, "inputs": aliased}))
    run.add_violations(violations)
    passed = bool(report["passed"]) and not violations
    if counted and passed:
        run.correctness.passed += 1
    if not passed and run.correctness.first_failure is None:
        reason = violations[0].message if violations else report.get("reason")
        run.correctness.first_failure = {"trial": label, "input_set": set_index, "shapes": reply.get("shapes"),
                                         **{k: v for k, v in report.items() if k not in ("outputs", "inputs")},
                                         "reason": reason}
        for output in report.get("outputs", []):
            if not output["passed"]:
                run.correctness.first_failure.update({k: output.get(k) for k in ("worst_index", "worst_expected", "worst_actual", "failed_elements")})
                break
    return passed


def _time(run: _Run) -> None:
    """Time the reference (the candidate stopped) and the candidate (in checked rounds) on the same
    input shapes, holding the GPU's timing lock (when there is one) so no other evaluation's timing
    runs meanwhile."""
    with run.gpu_step():
        reply, fds = _timing_inputs(run)
        run.timing_sets = len(reply["inputs"])
        try:
            run.ask(run.candidate, {"cmd": "timing_inputs", "inputs": reply["inputs"]}, fds)
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


def _profile(run: _Run) -> None:
    """The share of GPU time in the submission's own kernels (the profiler sees only this process's
    kernels; it holds the GPU shared only so as not to disturb another evaluation's timing)."""
    if run.native_windows:  # the timed calls' own records: no extra calls, nothing the candidate reports
        profiled: dict[str, Any] = native_evidence.profile(run.native_windows, run.kernel_functions)
        calls = len(run.native_windows)
    else:
        with run.gpu_step():
            profiled, _ = run.ask(run.candidate, {"cmd": "profile"})
        run.add_violations(_watch_violations(profiled, "profile"))
        calls = 3  # profile_kernels runs three
    run.performance.triton_time_fraction = profiled["fraction"]
    fraction = profiled["fraction"] or 0.0
    # Kernels of an allowed epilogue (a few µs each) are not a fallback, however small the problem.
    outside_us = sum(profiled["kernels_us"].values()) * (1.0 - fraction) / max(calls, 1)  # per call
    allowance_us = proportion.epilogue_gpu_allowance_us(run.anti_cheat.warnings, run.config.epilogue_gpu_us_per_op)
    if fraction < run.config.min_triton_time_fraction and outside_us > allowance_us:
        run.add_violations([rules.violation("low_triton_time_fraction", {
            "fraction": fraction, "threshold": run.config.min_triton_time_fraction, "kernels_us": profiled["kernels_us"]})])


def _time_reference(run: _Run, options: dict[str, Any], compiled: bool = False) -> dict[str, Any]:
    """The reference's timing (with `compiled`, of torch.compile(reference): the compile baseline),
    from the cache or measured now with the candidate's processes stopped (SIGSTOP, checked by their
    state); only a timing taken so is cached."""
    cache = run.reference_cache
    cache_key = _timing_key(run, run.input_sets, run.environment.model_dump())
    if compiled:
        cache_key = ReferenceCache.key(cache_key, [], {}, {"compiled": True})
        ref_stats = cache.get(cache_key) if cache is not None else None
    else:
        ref_stats = run.cached_reference_stats if run.cached is not None else (cache.get(cache_key) if cache is not None else None)
        run.performance.reference_cached = ref_stats is not None
    if ref_stats is not None:
        run.performance.reference_timed_alone = run.performance.reference_timed_alone or not compiled
        return ref_stats
    paused = run.candidate.pause()
    try:
        if not compiled:
            run.performance.reference_timed_alone = bool(paused.get("stopped"))
            run.performance.candidate_state_while_reference_timed = paused.get("states") or {}
        reference, _ = run.ask(run.reference, {"cmd": "time", "options": options, "compiled": compiled})
    finally:
        run.candidate.resume()
    samples = clean_samples(reference["stats"].get("samples"), 1 << 16)
    if not samples:
        raise _Stop(Verdict.infrastructure_error, {"kind": "infrastructure_error", "message": "the reference timing has no samples"})
    ref_stats = {**{k: v for k, v in reference["stats"].items() if k != "samples"}, **summarize(samples)}
    if cache is not None and paused.get("stopped"):
        cache.put(cache_key, ref_stats)
    return ref_stats


def _time_unlocked(run: _Run) -> None:
    options = {"max_seconds": run.config.max_timing_seconds}
    ref_stats = _time_reference(run, options)
    cand_stats = _time_candidate(run)
    if cand_stats is None:
        return
    perf = run.performance
    perf.reference_ms = TimingStats(**{k: v for k, v in ref_stats.items() if k in TimingStats.model_fields})
    perf.candidate_ms = TimingStats(**{k: v for k, v in cand_stats.items() if k in TimingStats.model_fields})
    perf.method = cand_stats["method"]
    perf.meaningful = run.device == "cuda" and not run.environment.interpreter
    # On the GPU only: on the CPU inductor's C++ build takes minutes and the times mean nothing anyway.
    if run.config.compile_baseline and run.device == "cuda":
        compiled_stats = _time_reference(run, options, compiled=True)
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
    else:
        perf.note = ("Triton interpreter on the CPU: times are host-clock figures of the interpreter and mean "
                     "nothing for GPU speed; speedup is not reported and the reward uses correctness only")


def _calls_per_round(run: _Run) -> int:
    """As many calls as keep their outputs within KEEP_BYTES, at least one, at most
    MAX_CALLS_PER_ROUND (on the CPU, one call per timing set: the interpreter is slow)."""
    sets = run.timing_sets
    if run.device != "cuda":
        return sets
    fit = KEEP_BYTES["cuda"] // max(run.output_nbytes, 1)
    return int(max(1, min(MAX_CALLS_PER_ROUND, fit)))


def _time_candidate(run: _Run) -> dict[str, Any] | None:
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
    while True:
        seeds = [derive_seed(run.fresh_salt, f"round{rounds}.set{k}") for k in range(run.timing_sets)]
        with run.gpu_step():
            run.ask(run.reference, {"cmd": "refresh", "seeds": seeds})
        began = time.monotonic()
        first_label = 1 + rounds * 2 * MAX_CALLS_PER_ROUND
        timed, fds = run.ask(run.candidate, {"cmd": "time_round", "calls": calls, "start": rounds * calls,
                                             "slack_s": slack_s, "first_label": first_label})
        wall_ms = (time.monotonic() - began) * 1e3
        try:
            run.add_violations(_watch_violations(timed, "timing") + _judge_work(run, timed, "timing"))
            if timed.get("output_problem") or not isinstance(timed.get("outputs"), list) or len(timed["outputs"]) != calls:
                run.add_violations([rules.violation("non_plain_output", {"phase": "timing", "detail": str(timed.get("output_problem"))[:300]})])
                return None
            picked = sorted(secrets.SystemRandom().sample(range(calls), min(checks_per_round, calls)))
            checks = [{"call": i, "set": (rounds * calls + i) % run.timing_sets, "outputs": timed["outputs"][i]} for i in picked]
            paused = run.candidate.pause(light=True)
            try:
                with run.gpu_step(holds=False):
                    checked, _ = run.ask(run.reference, {"cmd": "check_round", "checks": checks, "atol": run.tolerance[0],
                                                         "rtol": run.tolerance[1]}, fds)
            finally:
                run.candidate.resume()
        finally:
            close_fds(fds)
        perf.timed_calls_checked += len(checks)
        perf.timed_rounds = rounds + 1
        perf.candidate_stopped_while_checked = bool(paused.get("stopped")) and perf.candidate_stopped_while_checked is not False
        failed = [c for c in checked["checks"] if not c["passed"]]
        if failed:
            run.add_violations([rules.violation("timed_output_mismatch", {"round": rounds, "calls": calls, "failed": failed[:4]})])
            return None
        if checked.get("changed_sets"):
            run.add_violations([rules.violation("input_mutation", {"phase": "timing", "changed_sets": checked["changed_sets"]})])
            return None
        claimed = clean_samples(timed.get("samples"), calls)
        if len(claimed) != calls or sum(claimed) > wall_ms * 1.05 + 1.0:
            run.add_violations([rules.violation("timing_claim_inconsistent", {
                "round": rounds, "claimed_ms_total": sum(claimed) if claimed else None, "judge_wall_ms": wall_ms})])
            return None
        call_windows, note = _native_samples(run, first_label, calls, rounds + 1) if gpu else (None, None)
        if note and note not in native_notes:
            native_notes.append(note)
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
        if len(samples) >= min_reps and (len(samples) >= max_reps or time.monotonic() - started > run.config.max_timing_seconds
                                         or (gpu and tight(samples, 0.005))):
            break
        if time.monotonic() - started > 4 * run.config.max_timing_seconds and samples:
            break
    if native_notes:
        perf.note = "; ".join(native_notes)[:500]
    stats = summarize(samples)
    stats.update(method="cuda_events+l2_flush" if gpu else "host_clock",  # the method names are a public contract host_ms_total=host_ms, event_ms_total=event_ms,
                 stable=bool(gpu and tight(samples, 0.005)))
    return stats


def _finish(result_id: str, config: EvalConfig, verdict: Verdict, error: dict[str, Any] | None,
            correctness: Correctness, performance: Performance, anti_cheat: AntiCheat, environment: Environment,
            compiled: bool, output: dict[str, str], timings: StageTimings, started: float,
            source: str | None = None) -> EvaluationResult:
    if verdict == Verdict.compile_error:
        compiled = False
    elif verdict in (Verdict.correct, Verdict.incorrect, Verdict.cheating):
        compiled = compiled or anti_cheat.triton_launches > 0
    penalty = config.reward.torch_epilogue_penalty if any(w.rule == "torch_epilogue" for w in anti_cheat.warnings) else 0.0
    reward, rewards = compute_reward(verdict, performance.speedup, performance.meaningful, config.reward, penalty)
    timings.total = (time.monotonic() - started) * 1e3
    result = EvaluationResult(
        id=result_id,
        verdict=verdict,
        reward=reward,
        rewards=rewards,
        reward_preset=config.reward.preset,
        compiled=compiled,
        correct=verdict == Verdict.correct,
        correctness=correctness,
        performance=performance,
        anti_cheat=anti_cheat,
        error=error,
        output=output,
        environment=environment,
        timings_ms=timings,
    )
    result.feedback = write_feedback(result, source)  # with the source, feedback quotes the offending lines
    return result
