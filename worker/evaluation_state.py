"""What one evaluation has learned so far (`Evaluation`), and the findings the judge draws from the
candidate's replies: torch's share of its work (what its watchers saw: worker/watchers.py).

Shared by worker/evaluate.py (set-up, trials, verdict) and worker/timed_rounds.py (timing)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from triton_referee.sandbox.harness.messages import RunReply, TimedRoundReply

from . import proportion
from .harness_client import CandidateClient, Exchange, ReferenceClient
from .models import AntiCheat, Correctness, Environment, EvalConfig, Performance, Violation
from .reference_cache import ReferenceCache
from .reference_data import ReferenceData, ReferenceDataCache
from .timing_lock import TimingLock

LARGE_TRIAL_BYTES = 1 << 30  # a large problem: fewer trials and one timing set by default


def derive_seed(salt: int, label: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{label}".encode()).digest()[:8], "big") & ((1 << 62) - 1)


@dataclass
class Evaluation:
    """What one evaluation has learned so far."""

    config: EvalConfig
    device: str
    salt: int  # the trials' (on a reference-data hit, the cache entry's)
    fresh_salt: int  # this evaluation's own secret: timing inputs and rechecks
    exchange: Exchange  # the deadline and the time spent per step, shared by both conversations
    reference: ReferenceClient
    candidate: CandidateClient
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
    started: float = 0.0
    audit_hook: bool = True  # off only by the operator's test switch (evaluate's audit_hook)
    allow_native_code: bool = False  # the operator's switch (evaluate's allow_native_code)
    trial_nbytes: int = 0  # inputs and expected outputs of one trial (known after the first)
    output_nbytes: int = 0
    timing_sets: int = 1  # how many the reference made
    kernel_functions: list[str] = field(default_factory=list)  # the submission's @triton.jit functions (from its source)
    native_windows: list[Any] = field(default_factory=list)  # the timed calls' windows of native records

    @contextmanager
    def gpu_step(self, holds: bool = True) -> Iterator[None]:
        """Around a step that runs kernels but is not timing: holds the GPU shared, so no timing
        runs meanwhile (see timing_lock.py)."""
        if not holds or self.timing_lock is None or self.device != "cuda":
            yield
            return
        with self.timing_lock.shared() as waited_s:
            self.exchange.add_step("wait.gpu", waited_s * 1e3)
            yield

    @property
    def large(self) -> bool:
        """A trial of at least LARGE_TRIAL_BYTES (inputs and expected outputs), once one is known."""
        return self.trial_nbytes >= LARGE_TRIAL_BYTES

    def add_violations(self, violations: list[Violation]) -> None:
        known = {v.rule for v in self.anti_cheat.violations}
        self.anti_cheat.violations.extend(v for v in violations if v.rule not in known)


def timing_key(run: Evaluation, input_sets: list[dict[str, int]], environment: dict[str, Any]) -> str:
    return ReferenceCache.key(
        run.problem_sha256,
        input_sets,
        environment,
        {"sets": run.config.timing_sets, "max_seconds": run.config.max_timing_seconds},
    )


def judge_work(run: Evaluation, reply: RunReply | TimedRoundReply, phase: str, timed_calls: int = 0) -> list[Violation]:
    """Torch's share of the work (worker/proportion.py): fatal findings returned, epilogue warnings kept.
    `timed_calls`: the calls the judge asked of a timed round (0 for a checked run)."""
    fatal, warnings = proportion.judge(reply.compute_ops, reply.work, phase, run.config, run.device, timed_calls)
    proportion.keep_warning(run.anti_cheat.warnings, warnings)
    return fatal
