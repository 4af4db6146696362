"""One evaluation: static checks, then the reference and the candidate in two processes, the
comparison in the reference process, and the verdict here. No torch in this process.

The judge owns the evidence (docs/evidence.md): tensors stay in shared memory (memfds on the CPU,
CUDA IPC on the GPU) made and read by the reference; this process relays descriptors and never
holds a tensor; timing statistics are made here from raw samples; timed calls run in rounds on
inputs the reference rewrites between rounds, and outputs of calls picked after each round are
checked while the candidate is stopped; the reference is timed only while the candidate is stopped.

Here: planning, starting both processes, the set-up of both sides, the trials and rechecks, and the
result document. Timing is worker/timed_rounds.py; what an evaluation has learned so far, and the
findings drawn from the candidate's replies, worker/evaluation_state.py; every command and reply
goes through worker/harness_client.py (typed messages of sandbox/harness/messages.py)."""

from __future__ import annotations

import ast
import dataclasses
import glob
import hashlib
import secrets
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from triton_referee.sandbox.harness import messages, shm
from triton_referee.sandbox.harness.messages import (
    CandidateSetup,
    Compare,
    ComparisonReport,
    Launchers,
    MessageError,
    ReferenceSetup,
    ReferenceSetupReply,
    TrialInputs,
    TrialInputsReply,
)
from triton_referee.sandbox.isolation import Isolation

from . import judging, rules, static_checks
from .evaluation_state import Evaluation, derive_seed, judge_work, timing_key
from .feedback import write_feedback
from .harness_client import CandidateClient, Exchange, ReferenceClient, Stop, close_fds
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
    Verdict,
    Violation,
)
from .pool import PoolClient, PoolUnavailable
from .process import HarnessProcess
from .reference_cache import ReferenceCache
from .reference_data import ReferenceData, ReferenceDataCache
from .reward import compute_reward
from .static_checks import ProblemSourceError
from .timed_rounds import measure, timing_seeds
from .timing_lock import TimingLock
from .watchers import watch_violations


def detect_device() -> Literal["cuda", "cpu"]:
    """'cuda' when an NVIDIA device node exists, else 'cpu' (decided without importing torch)."""
    return "cuda" if glob.glob("/dev/nvidia[0-9]*") else "cpu"


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


def evaluate(
    problem: Problem,
    submission: Submission,
    config: EvalConfig | None = None,
    *,
    job_id: str | None = None,
    python: str | None = None,
    reference_cache: ReferenceCache | None = None,
    isolation: Isolation | None = None,
    pool: PoolClient | None = None,
    timing_lock: TimingLock | None = None,
    reference_data: ReferenceDataCache | None = None,
    audit_hook: bool = True,
    allow_native_code: bool = False,
) -> EvaluationResult:
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
        error: dict[str, Any] | None = {"kind": failure.verdict.value, "message": failure.message, "line": failure.line}
        return _finish(
            result_id,
            config,
            failure.verdict,
            error,
            Correctness(),
            Performance(),
            AntiCheat(),
            Environment(),
            False,
            {},
            StageTimings(static=static_ms),
            started,
            submission.source,
        )

    hints = static_checks.suspicious_constructs(submission.source)
    static_warnings = [rules.violation("suspicious_source", {"constructs": hints})] if hints else []
    device = detect_device() if config.device == "auto" else config.device
    salt = config.seed if config.seed is not None else secrets.randbits(62)
    workdir = Path(tempfile.mkdtemp(prefix="job-", dir=pool.scratch if pool is not None else jobs_root()))
    # Each harness process writes its source into its own directory (which, under a namespace
    # backend or in the warm pool, exists only inside the isolation).
    reference_path = workdir / "reference" / "problem.py"
    candidate_path = workdir / "candidate" / "candidate.py"
    exchange = Exchange(deadline=started + config.timeout_s, timeout_s=config.timeout_s)
    run = Evaluation(
        config=config,
        device=device,
        salt=salt,
        fresh_salt=salt,
        exchange=exchange,
        reference=ReferenceClient(HarnessProcess("reference", workdir / "reference", device, python, isolation, pool), exchange),
        candidate=CandidateClient(
            HarnessProcess("candidate", workdir / "candidate", device, python, isolation, pool, native_records=device == "cuda"),
            exchange,
        ),
        # Another precision is another problem for the caches (inputs, expected outputs, timings).
        problem_sha256=judging.problem_key(
            problem.sha256
            if config.precision == "fp32"
            else hashlib.sha256(f"{problem.sha256}:{config.precision}".encode()).hexdigest(),
            config,
        ),
        reference_cache=reference_cache,
        timing_lock=timing_lock,
        started=started,
        reference_data=reference_data if reference_cache is not None else None,  # a hit needs the cached timing
        kernel_functions=static_checks.jit_functions(ast.parse(submission.source)),
        audit_hook=audit_hook,
        allow_native_code=allow_native_code,
    )
    run.anti_cheat.warnings.extend(static_warnings)
    verdict, error = Verdict.correct, None
    reference, candidate = run.reference.process, run.candidate.process
    try:
        reference.start()
        candidate.start()
        _check(run, (str(reference_path), problem.source), (str(candidate_path), submission.source), input_sets)
        if run.recording is not None and run.reference_data is not None and run.correctness.recheck_passed is not None:
            run.reference_data.put(run.data_key, run.recording)  # it got through every trial
        verdict = (
            Verdict.cheating
            if run.anti_cheat.violations
            else (
                Verdict.correct
                if run.correctness.passed == run.correctness.trials and run.correctness.recheck_passed is not False
                else Verdict.incorrect
            )
        )
    except Stop as stop:
        run.add_violations(stop.violations)
        verdict, error = stop.verdict, stop.error
    except (OSError, PoolUnavailable) as exc:
        verdict, error = Verdict.infrastructure_error, {"kind": "infrastructure_error", "message": f"{type(exc).__name__}: {exc}"}
    finally:
        candidate.close()
        reference.close()
        output = candidate.output()
        shutil.rmtree(workdir, ignore_errors=True)
    verdict, error = judging.interpreter_limitation(verdict, error, run.environment.interpreter, run.dtypes)
    if pool is not None and run.environment.launchers_built:
        try:  # the next evaluations with these argument types skip gcc
            pool.learn_launchers(run.environment.launchers_built)
        except (OSError, PoolUnavailable):
            pass
    if verdict == Verdict.infrastructure_error and reference.process is not None:
        reference_stderr = reference.output().get("stderr", "")
        if reference_stderr and error is not None:
            error = {**error, "reference_stderr": reference_stderr[-2000:]}
    timings = StageTimings(
        static=static_ms,
        start=(reference.start_seconds + candidate.start_seconds) * 1e3,
        steps={name: round(ms, 3) for name, ms in exchange.steps.items()},
        reference=reference.busy_seconds * 1e3,
        candidate=candidate.busy_seconds * 1e3,
    )
    return _finish(
        result_id,
        config,
        verdict,
        error,
        run.correctness,
        run.performance,
        run.anti_cheat,
        run.environment,
        run.compiled,
        output,
        timings,
        started,
        submission.source,
    )


# Large problems (evaluation_state.LARGE_TRIAL_BYTES): the deadline grows with a trial's bytes, and fewer trials are run by default.
SECONDS_PER_GIB = 10.0
LARGE_DEFAULT_TRIALS = 3


def _check(run: Evaluation, reference: tuple[str, str], candidate: tuple[str, str], input_sets: list[dict[str, int]]) -> None:
    config = run.config
    # The candidate process sets up its device (CUDA context, Triton's driver) while the reference
    # builds its model: both before any candidate code is loaded.
    prepare = run.candidate.start_prepare(run.device)
    reply, init_fds = _setup_reference(run, reference, input_sets)
    try:
        init_seed = derive_seed(run.salt, "init")  # after the setup: a hit brings its entry's salt
        run.candidate.finish(prepare)
        run.environment = _environment(run, reply.environment)
        run.anti_cheat.warnings.extend(Violation(**w) for w in reply.warnings)
        input_sets = _valid(input_sets, reply.valid_sets)
        # fp16/bf16 without a stated tolerance: KernelBench's 1e-2.
        low_precision = 1e-2 if config.precision != "fp32" else None
        run.tolerance = (
            config.atol if config.atol is not None else reply.atol if reply.atol is not None else low_precision,
            config.rtol if config.rtol is not None else reply.rtol if reply.rtol is not None else low_precision,
        )
        run.allowed_ops = sorted({*config.allowed_ops, *reply.allowed_ops})
        run.reference_aliases = set(reply.aliases_inputs)
        run.input_sets = input_sets
        run.correctness.input_sets = len(input_sets)
        run.correctness.input_set_overrides = input_sets
        run.correctness.value_ranges = list(reply.value_ranges)

        setup = run.candidate.setup(
            CandidateSetup(
                path=candidate[0],
                source=candidate[1],
                device=run.device,
                init_seed=init_seed,
                init_inputs=reply.init_inputs,
                precision=config.precision,
                allowed_ops=run.allowed_ops,
                audit_hook=run.audit_hook,
                allow_native_code=run.allow_native_code,
                randomize_parameters=reply.randomize_parameters,
            ),
            init_fds,
        )
    finally:
        close_fds(init_fds)
    run.add_violations(watch_violations(setup, "import"))
    # Every input set is checked at least once, whatever the trial count.
    trial = 0
    while trial < max(_trial_count(run), len(input_sets)):
        if not _trial(run, f"trial{trial}", trial % len(input_sets)):
            return
        trial += 1
    for name in run.correctness.value_ranges:  # adversarial value ranges on the original set (hardening.py)
        if not _trial(run, f"values_{name}", 0, values=name):
            return
    measure(run)
    # Fresh values on every input set, after timing (the first has the timed loop's shapes): a
    # candidate replaying what it saw while timed, or carrying outputs for inputs it saw in an
    # earlier result (cached trial inputs repeat), fails here.
    run.correctness.recheck_passed = all(
        _trial(run, "recheck" if k == 0 else f"recheck{k}", k, counted=False) for k in range(len(input_sets))
    )
    summary = run.candidate.summary()
    run.anti_cheat.triton_launches = summary.summary.triton_launches
    run.anti_cheat.kernels = summary.summary.kernels
    run.anti_cheat.foreign_kernels = summary.summary.foreign_kernels
    launchers = summary.launchers or Launchers()
    run.environment.launchers_seeded = launchers.seeded
    run.environment.launchers_built = [list(map(str, pattern)) for pattern in launchers.built[:16]]


def _valid(input_sets: list[dict[str, int]], valid: list[int] | None) -> list[dict[str, int]]:
    """The input sets the reference could run (all of them when it did not say)."""
    return [input_sets[i] for i in (valid if valid is not None else range(len(input_sets)))]


def _trial_count(run: Evaluation) -> int:
    """The requested trials; by default fewer for a large problem (each trial's inputs are fresh,
    and the timed rounds and rechecks check more calls on fresh values anyway)."""
    if "trials" not in run.config.model_fields_set and run.large:
        return min(run.config.trials, LARGE_DEFAULT_TRIALS)
    return run.config.trials


def _scale_deadline(run: Evaluation, reply: TrialInputsReply) -> None:
    """Once a trial's size is known: the deadline grows by SECONDS_PER_GIB per GiB of inputs and
    expected outputs, so a problem of several GB does not time out by default."""
    if run.trial_nbytes:
        return
    run.output_nbytes = reply.nbytes.expected
    run.trial_nbytes = reply.nbytes.inputs + run.output_nbytes
    extra = SECONDS_PER_GIB * run.trial_nbytes / (1 << 30)
    run.exchange.deadline = max(run.exchange.deadline, run.started + run.config.timeout_s + extra)


def _setup_reference(
    run: Evaluation, reference: tuple[str, str], input_sets: list[dict[str, int]]
) -> tuple[ReferenceSetupReply, list[int]]:
    """The reference's setup reply and its init inputs' memfd: from the cache on a hit (the
    reference process judges the trials, and builds the live model in the background for the fresh
    timing inputs and rechecks), else from the problem's model (recorded for the cache when it is on)."""
    if run.reference_data is not None:
        judged = run.reference.judge(run.device)
        run.cached = _cached_reference_data(run, input_sets, judged.environment)
        if run.cached is not None:
            cached = run.cached.setup_reply(judged.environment)
            run.salt = run.cached.salt
            run.performance.reference_outputs_cached = True
            run.reference.setup_in_background(
                ReferenceSetup(
                    path=reference[0],
                    source=reference[1],
                    device=run.device,
                    precision=run.config.precision,
                    init_seed=derive_seed(run.salt, "init"),
                    input_sets=_valid(input_sets, cached.valid_sets),
                    checked=True,
                )
            )
            run.reference.timing_inputs_in_background(timing_seeds(run))
            return cached, [shm.from_bytes(run.cached.init_bytes, "referee-init")]
    reply, fds = run.reference.setup(
        ReferenceSetup(
            path=reference[0],
            source=reference[1],
            device=run.device,
            precision=run.config.precision,
            init_seed=derive_seed(run.salt, "init"),
            input_sets=input_sets,
            **judging.setup_options(run.config),
        )
    )
    if run.reference_data is not None and not reply.mutates_inputs:  # its inputs' after-state is not cached
        try:
            init_bytes = shm.read_all(fds[0], run.reference_data.max_entry_bytes) if fds else b""
            run.recording = ReferenceData.start(run.salt, reply, init_bytes)
        except (OSError, ValueError):
            run.recording = None
    return reply, fds


def _cached_reference_data(
    run: Evaluation, input_sets: list[dict[str, int]], reported: messages.Environment
) -> ReferenceData | None:
    """This problem's entry in the reference-data cache, if any; a hit also needs the reference's
    cached timing (kept in the run, as the judge cannot time anything)."""
    assert run.reference_data is not None and run.reference_cache is not None
    environment = _environment(run, reported).model_dump()
    run.data_key = ReferenceDataCache.key(
        run.problem_sha256,
        input_sets,
        environment,
        trials=run.config.trials,
        timing_sets=run.config.timing_sets,
        device=run.device,
        seed=run.config.seed,
    )
    entry = run.reference_data.take(run.data_key)
    if entry is None:
        return None
    try:
        valid_sets = _valid(input_sets, entry.setup_reply(reported).valid_sets)
    except (MessageError, IndexError):  # an entry this version cannot read is a miss
        return None
    run.cached_reference_stats = run.reference_cache.get(timing_key(run, valid_sets, environment))
    return entry if run.cached_reference_stats is not None else None


def _environment(run: Evaluation, reported: messages.Environment) -> Environment:
    facts = reported.to_wire()
    return Environment(
        **{k: v for k, v in facts.items() if k in Environment.model_fields and k != "confinement"},
        isolation=run.reference.process.isolation_name,
        confinement=run.candidate.process.confinement,
    )


def _record_comparison(run: Evaluation, report: ComparisonReport) -> None:
    for output in report.outputs:
        for key in ("max_abs_error", "max_rel_error", "max_abs_error_vs_fp64", "reference_error_vs_fp64"):
            value = getattr(output, key)
            if value is not None:
                current = getattr(run.correctness, key)
                setattr(run.correctness, key, value if current is None else max(current, value))
        if output.atol is not None:
            run.correctness.atol, run.correctness.rtol = output.atol, output.rtol


def _trial_inputs(run: Evaluation, label: str, set_index: int, values: str | None = None) -> tuple[TrialInputsReply, list[int]]:
    """A trial's inputs, shared by the reference (the reply's descriptors go to the candidate): on a
    hit, from the cached inputs and expected outputs the engine hands the judge; else made by the
    reference (recorded for the cache while they still fit its entry size). Rechecks are never cached."""
    if run.cached is not None and label in run.cached.trials:
        cached, inputs, expected = run.cached.judge_request(label)
        supplied = [shm.from_bytes(inputs, "referee-cached"), shm.from_bytes(expected, "referee-cached")]
        try:
            return run.reference.inputs(TrialInputs(trial=label, cached=cached), supplied)
        finally:
            close_fds(supplied)
    recheck = label.startswith("recheck")
    request = TrialInputs(
        trial=label, set_index=set_index, seed=derive_seed(run.fresh_salt if recheck else run.salt, label), values=values
    )
    recording, cache = run.recording, run.reference_data
    if recording is None or cache is None or recheck:
        return run.reference.inputs(request)
    reply, fds = run.reference.inputs(dataclasses.replace(request, expected_budget=cache.max_entry_bytes - recording.nbytes))
    record = reply.record
    if record is None:  # too large for the cache, or not encodable: not cached
        run.recording = None
        return reply, fds
    first = record.fds[0] if record.fds else len(fds)
    try:
        recording.add_trial(
            label,
            set_index,
            reply,
            shm.read_all(fds[first], cache.max_entry_bytes),
            shm.read_all(fds[first + 1], cache.max_entry_bytes),
        )
    except (OSError, ValueError, IndexError):
        run.recording = None
    close_fds(fds[first:])
    return reply, fds[:first]


def _trial(run: Evaluation, label: str, set_index: int, counted: bool = True, values: str | None = None) -> bool:
    """One correctness trial on fresh inputs (in a value range of hardening.py when `values`); returns whether it passed."""
    with run.gpu_step():
        reply, input_fds = _trial_inputs(run, label, set_index, values)
    _scale_deadline(run, reply)
    try:
        with run.gpu_step(holds=run.compiled):  # the first run is mostly compiling: it holds nothing
            outcome, output_fds = run.candidate.run(label, reply.inputs, input_fds)
    finally:
        close_fds(input_fds)
    run.compiled = run.compiled or outcome.launches > 0
    run.dtypes |= judging.dtypes_in(reply.inputs) | judging.dtypes_in(outcome.outputs)
    if counted:
        run.correctness.trials += 1
    try:
        with run.gpu_step():
            compared = run.reference.compare(
                Compare(trial=label, outputs=outcome.outputs, atol=run.tolerance[0], rtol=run.tolerance[1]), output_fds
            )
    finally:
        close_fds(output_fds)
    report = compared.report
    _record_comparison(run, report)
    violations = watch_violations(outcome, label) + judge_work(run, outcome, label)
    # With an op allowlist, an output may legitimately come from an allowed torch op.
    if outcome.unwritten_outputs and not outcome.output_problem and not run.allowed_ops:
        violations.append(rules.violation("output_not_written_by_kernel", {"trial": label, "outputs": outcome.unwritten_outputs}))
    if outcome.host_written_outputs and not run.allowed_ops:  # changed from the host after its last launch
        violations.append(
            rules.violation("output_not_written_by_kernel", {"trial": label, "written_from_host": outcome.host_written_outputs})
        )
    if outcome.foreign_launches and not run.config.allow_foreign_kernels:
        violations.append(rules.violation("foreign_kernel", {"trial": label, "kernels": outcome.foreign_launches}))
    if outcome.launches == 0:
        violations.append(rules.violation("no_triton_launch", {"trial": label, "foreign_kernels": outcome.foreign_launches}))
    if report.undecodable:
        violations.append(rules.violation("non_plain_output", {"trial": label, "detail": report.undecodable}))
    if outcome.output_problem:
        violations.append(rules.violation("non_plain_output", {"trial": label, "detail": outcome.output_problem}))
    if not report.inputs.unchanged:
        violations.append(rules.violation("input_mutation", {"trial": label, "changed_inputs": report.inputs.changed_inputs}))
    aliased = [i for i in outcome.aliases_input if i not in run.reference_aliases]  # an in-place reference returns its input
    if aliased:
        violations.append(rules.violation("output_aliases_input", {"trial": label, "inputs": aliased}))
    run.add_violations(violations)
    passed = report.passed and not violations
    if counted and passed:
        run.correctness.passed += 1
    if not passed and run.correctness.first_failure is None:
        reason = violations[0].message if violations else report.reason
        run.correctness.first_failure = {
            "trial": label,
            "input_set": set_index,
            "shapes": reply.shapes,
            **{k: v for k, v in report.to_wire().items() if k not in ("outputs", "inputs")},
            "reason": reason,
        }
        for output in report.outputs:
            if not output.passed:
                run.correctness.first_failure.update(
                    {k: getattr(output, k) for k in ("worst_index", "worst_expected", "worst_actual", "failed_elements")}
                )
                break
    return passed


def _finish(
    result_id: str,
    config: EvalConfig,
    verdict: Verdict,
    error: dict[str, Any] | None,
    correctness: Correctness,
    performance: Performance,
    anti_cheat: AntiCheat,
    environment: Environment,
    compiled: bool,
    output: dict[str, str],
    timings: StageTimings,
    started: float,
    source: str | None = None,
) -> EvaluationResult:
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
