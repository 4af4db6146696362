"""Pydantic models: what goes into an evaluation (the job the service queues for a worker) and the
result document that comes out."""

from __future__ import annotations

import hashlib
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_SOURCE_BYTES = 256 * 1024  # the default limit at the edges (CLI files, API requests)
_MAX_MODEL_SOURCE_CHARS = 16 * MAX_SOURCE_BYTES  # a hard cap in the models, above any configured limit


class Verdict(str, Enum):
    correct = "correct"
    incorrect = "incorrect"
    compile_error = "compile_error"
    runtime_error = "runtime_error"
    timeout = "timeout"
    cheating = "cheating"
    invalid_submission = "invalid_submission"
    infrastructure_error = "infrastructure_error"


class Severity(str, Enum):
    fatal = "fatal"
    warning = "warning"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Strict):
    """A KernelBench-format reference: `Model`, `get_inputs()`, `get_init_inputs()`."""

    source: str = Field(min_length=1, max_length=_MAX_MODEL_SOURCE_CHARS)
    name: str = "problem"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


class Submission(_Strict):
    """A candidate defining `ModelNew` with at least one `@triton.jit` kernel."""

    source: str = Field(max_length=_MAX_MODEL_SOURCE_CHARS)
    name: str = "candidate"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()


RewardPreset = Literal["tritonrl", "fast_p", "drkernel"]
# The choices an evaluation takes; `referee check` offers the same ones (typer checks them).
Mode = Literal["strict", "kernelbench"]
Device = Literal["auto", "cuda", "cpu"]
Precision = Literal["fp32", "fp16", "bf16"]


class RewardConfig(_Strict):
    preset: RewardPreset = "tritonrl"
    fast_p_threshold: float = Field(default=1.0, ge=0.0, description="fast_p: speedup that earns the reward")
    speedup_cap: float = Field(default=3.0, gt=0.0, description="drkernel: speedups above this count as this")
    cheat_penalty: float = Field(default=-1.0, description="reward given when a fatal anti-cheat rule fires")
    torch_epilogue_penalty: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="share of a correct answer's reward taken away when a small "
        "epilogue ran in torch (the torch_epilogue warning)",
    )


class EvalConfig(_Strict):
    mode: Mode = Field(
        default="strict",
        description="strict: parameters drawn at random, extra input sets (sizes, value ranges); "
        "kernelbench: the published inputs and parameters only, for results comparable with published numbers",
    )
    trials: int = Field(default=5, ge=1, le=100)
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    device: Device = "auto"
    seed: int | None = Field(default=None, description="fixes the input salt; default is a fresh secret per run")
    atol: float | None = Field(default=None, ge=0)
    rtol: float | None = Field(default=None, ge=0)
    input_sets: list[dict[str, int]] | None = Field(
        default=None, description="constant overrides per extra input set; default: derived from the problem"
    )
    timing_sets: int = Field(default=4, ge=1, le=16, description="input sets rotated in the timed loop")
    max_timing_seconds: float = Field(default=3.0, gt=0, le=60)
    allowed_ops: list[str] = Field(
        default_factory=list, description="aten ops (e.g. 'sum') this problem lets the candidate run in torch"
    )
    allow_foreign_kernels: bool = Field(
        default=False, description="accept launches of Triton kernels not defined in the submission"
    )
    min_triton_time_fraction: float = Field(
        default=0.5, ge=0.0, le=1.0, description="GPU: least share of kernel time in the submission's own kernels"
    )
    precision: Precision = Field(
        default="fp32",
        description="KernelBench's precision switch: floating-point inputs and both models' parameters in this dtype "
        "(fp16/bf16 default to atol = rtol = 1e-2, as KernelBench)",
    )
    compile_baseline: bool = Field(
        default=False, description="also time torch.compile(reference) and report the speedup over it (GPU only)"
    )
    torch_epilogue_max_share: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="largest share of the bytes touched that non-major torch compute ops "
        "may have and count as an epilogue (torch_epilogue warning) instead of torch_fallback",
    )
    value_ranges: list[Literal["scaled", "shifted", "negative", "near_constant"]] | None = Field(
        default=None,
        description="strict mode: the value ranges of the extra trials (default: every one the problem "
        "allows and the reference stays finite and accurate in)",
    )
    max_scalar_reads: int = Field(default=8, ge=0, description="scalar reads to the host (.item()) allowed per checked call")
    epilogue_gpu_us_per_op: float = Field(
        default=10.0,
        ge=0.0,
        description="GPU: kernel time per call outside the submission's kernels an allowed epilogue "
        "may take, per epilogue op, before low_triton_time_fraction applies",
    )
    reward: RewardConfig = RewardConfig()
    # No `isolation` here: the worker's setting decides, and a request must not be able to lower it.


class EvaluationJob(_Strict):
    """One evaluation as the service queues it and a worker's job function takes it (`worker/jobs.py`).

    The queue carries its JSON form (`model_dump(mode="json")`); `run_evaluation` validates it back,
    once, before anything runs."""

    id: str = Field(min_length=1)
    problem: Problem
    submission: Submission
    config: EvalConfig = EvalConfig()


class Violation(_Strict):
    rule: str
    severity: Severity
    message: str
    evidence: dict[str, Any] = {}


class Correctness(_Strict):
    trials: int = 0
    passed: int = 0
    input_sets: int = 0
    input_set_overrides: list[dict[str, int]] = []
    value_ranges: list[str] = Field(
        default=[],
        description="extra trials on the original set with inputs moved into "
        "these value ranges (sandbox/harness/hardening.py; strict mode)",
    )
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    max_abs_error_vs_fp64: float | None = Field(
        default=None,
        description="the candidate's largest error against the reference run in float64 (where the problem runs in float64)",
    )
    reference_error_vs_fp64: float | None = Field(
        default=None,
        description="the fp32 reference's own largest error against its float64 run (the comparison allows a multiple of it)",
    )
    atol: float | None = None
    rtol: float | None = None
    recheck_passed: bool | None = None
    first_failure: dict[str, Any] | None = None


class TimingStats(_Strict):
    median: float
    iqr: float | None = None
    n: int
    ci95: list[float] | None = None
    mean: float | None = None
    min: float | None = None
    max: float | None = None
    stable: bool | None = None


class Performance(_Strict):
    candidate_ms: TimingStats | None = None
    reference_ms: TimingStats | None = None
    speedup: float | None = None
    speedup_ci95: list[float] | None = None
    # With `compile_baseline`: torch.compile(reference), timed the same way, and the speedup over it.
    compiled_reference_ms: TimingStats | None = None
    speedup_vs_compiled: float | None = None
    method: str | None = None
    triton_time_fraction: float | None = None
    host_event_ratio: float | None = None
    reference_cached: bool = False  # the reference's timing came from the cache
    reference_outputs_cached: bool = False  # its inputs and expected outputs too: no reference model was built
    lock_wait_ms: float | None = None  # time spent waiting for the GPU's timing lock
    # Where the candidate's per-call times come from: "judge_host_clock" (CPU: this engine's clock
    # around each round), "harness_cuda_events (advisory)" (the candidate's process reports them),
    # "native_recorder" (trusted). See docs/evidence.md.
    timing_evidence: str | None = None
    timed_rounds: int = 0
    timed_calls_checked: int = 0  # timed calls whose outputs the reference checked (picked after each round)
    candidate_stopped_while_checked: bool | None = None
    reference_timed_alone: bool | None = None  # the candidate's processes were stopped (or it was cached so)
    candidate_state_while_reference_timed: dict[str, str] = {}  # pid -> /proc state letter (T: stopped)
    meaningful: bool = False
    note: str | None = None


class AntiCheat(_Strict):
    violations: list[Violation] = []
    warnings: list[Violation] = []
    triton_launches: int = 0
    kernels: list[str] = []
    foreign_kernels: list[str] = []


class Rewards(_Strict):
    correctness: float = 0.0
    speedup: float = 0.0


class Environment(_Strict):
    device: str | None = None
    torch: str | None = None
    triton: str | None = None
    python: str | None = None
    isolation: str = "process"
    confinement: list[str] = Field(
        default=[],
        description="kernel-enforced layers around the candidate's process: "
        "e.g. landlock:7, seccomp, and the backend's namespaces (`:pool` when shared by "
        "the warm pool's processes); see docs/threat-model.md",
    )
    interpreter: bool | None = None
    launchers_seeded: int = Field(
        default=0,
        description="Triton launchers (C modules per kernel argument-type pattern, "
        "Triton 3.6) taken from the warm pool's verified builds instead of compiled",
    )
    launchers_built: list[list[str]] = Field(
        default=[],
        description="argument-type patterns the candidate's process "
        "compiled a launcher for (the warm pool builds them for later evaluations)",
    )


class StageTimings(_Strict):
    queued: float = 0.0
    static: float = 0.0
    start: float = 0.0  # starting (or taking from the warm pool) both harness processes
    steps: dict[str, float] = {}  # per harness command, e.g. "candidate.setup" (import and compile) or "candidate.time"
    reference: float = 0.0
    candidate: float = 0.0
    total: float = 0.0


class EvaluationResult(_Strict):
    id: str
    status: Literal["completed", "failed"] = "completed"
    verdict: Verdict
    reward: float = 0.0
    rewards: Rewards = Rewards()
    reward_preset: RewardPreset = "tritonrl"
    compiled: bool = False
    correct: bool = False
    correctness: Correctness = Correctness()
    performance: Performance = Performance()
    anti_cheat: AntiCheat = AntiCheat()
    feedback: str = ""
    error: dict[str, Any] | None = None
    output: dict[str, str] = {}
    environment: Environment = Environment()
    timings_ms: StageTimings = StageTimings()
