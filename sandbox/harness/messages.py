"""The harness protocol's messages: for every command, its request and its reply, defined once.

Stdlib only: the judge (worker/harness_client.py, which never imports torch) and the harness
processes (server.py, reference.py, candidate.py) both import this module. A message is a frozen
dataclass; on the wire it is the JSON object of its fields (protocol.py frames it), with optional
fields left out while they hold None.

`decode` is strict: every key must be a declared field (an extra key is refused, never ignored),
every value must have its declared type (an int is not a bool, a list is not a dict), counts and
sizes must lie in their bounds, and strings, lists and opaque JSON values have size limits. The
judge decodes every reply this way before it reads a field: the candidate's process is hostile
(its code can write any frame the harness could), so a malformed reply is a protocol violation
with a named rule (`MessageError.rule`), never a KeyError or TypeError in the judge.

Tensor descriptions (tensors.py) travel as opaque `Json` here: the reference decodes and checks
them where the tensors are attached (tensors.Attached), and the judge only relays them.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

# Limits on what one message may hold (a frame's header is at most 4 MiB anyway: protocol.py).
MAX_TEXT_CHARS = 1 << 16
MAX_SOURCE_CHARS = 1 << 22  # a submitted file (the models cap it at 4 Mi characters; a frame's header at 4 MiB)
MAX_ITEMS = 1 << 16
MAX_JSON_DEPTH = 24
MAX_NODES = 1 << 20  # values visited while decoding one message
MAX_INT = (1 << 63) - 1

Json = Any  # an opaque JSON value: checked for JSON types, depth and size, not for its shape


@dataclass(frozen=True)
class Bounds:
    """Inclusive bounds of a number field (used as Annotated[int, Bounds(0, n)])."""

    low: float
    high: float


@dataclass(frozen=True)
class MaxChars:
    """The length limit of a string field, where it is not MAX_TEXT_CHARS (Annotated[str, MaxChars(n)])."""

    limit: int


Count = Annotated[int, Bounds(0, MAX_INT)]
SourceText = Annotated[str, MaxChars(MAX_SOURCE_CHARS)]
Index = Annotated[int, Bounds(0, MAX_ITEMS)]
Seed = Annotated[int, Bounds(0, MAX_INT)]


class MessageError(ValueError):
    """A message that does not match its declared type. `rule` names what was wrong (a stable id):
    not_an_object, missing_key, extra_key, wrong_type, out_of_range, too_large, unknown_command,
    bad_envelope, out_of_order."""

    def __init__(self, rule: str, where: str, detail: str) -> None:
        super().__init__(f"{rule} at {where or 'the top'}: {detail}")
        self.rule = rule
        self.where = where
        self.detail = detail


@dataclass(frozen=True, kw_only=True)
class Message:
    """A request or a reply."""

    command: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        return _encode(self)

    @classmethod
    def from_wire(cls: type[M], data: Any) -> M:
        return decode(cls, data)


M = TypeVar("M", bound=Message)


# ---------------------------------------------------------------------------------------------
# Parts shared by several messages


@dataclass(frozen=True, kw_only=True)
class Environment(Message):
    """The versions a harness process runs (runtime.environment)."""

    device: str
    torch: str
    triton: str
    python: str
    interpreter: bool


@dataclass(frozen=True, kw_only=True)
class MemoryBudget(Message):
    memory: str
    budget_bytes: Count
    used_bytes: Count
    free_bytes: Count | None = None


@dataclass(frozen=True, kw_only=True)
class ErrorDetail(Message):
    """Why a command failed: `kind` (compile_error, runtime_error, invalid_submission, problem_error,
    infrastructure_error), the exception's type, message and trimmed traceback."""

    kind: str
    message: str = ""
    type: str | None = None
    traceback: str | None = None
    memory_budget: MemoryBudget | None = None


@dataclass(frozen=True, kw_only=True)
class AuditEvent(Message):
    """A call the candidate's audit hook refused (audit.py)."""

    event: str
    reason: str = ""
    detail: Json = None


@dataclass(frozen=True, kw_only=True)
class Observations(Message):
    """What the candidate process's watchers saw since its last reply (candidate.observations)."""

    tampering: list[str] = field(default_factory=list)
    audit_events: list[AuditEvent] = field(default_factory=list)
    host_memory_launches: Count = 0  # GPU launches that took a tensor in host memory (launches.py)
    threads_left_running: Count = 0  # threads still running after a call returned (witness.py)
    native_files: list[str] = field(default_factory=list)  # ELF files in the job directory (audit.native_files)
    hidden_compute: dict[str, Count] = field(default_factory=dict)  # compute the op witness saw and the mode did not


@dataclass(frozen=True, kw_only=True)
class ErrorReply(Observations):
    """The reply of a command that failed ({"ok": false, "error": ...}); a candidate's may carry
    what its watchers saw before the failure."""

    error: ErrorDetail


@dataclass(frozen=True, kw_only=True)
class OpWork(Message):
    calls: Count
    bytes: Count


@dataclass(frozen=True, kw_only=True)
class Work(Message):
    """Bytes touched by torch's compute ops and by the submission's launches (work.py)."""

    torch_ops: dict[str, OpWork]
    scalar_reads: Count
    scalar_reads_of_kernel_data: Count
    triton_bytes: Count = 0


# ---------------------------------------------------------------------------------------------
# Both roles


@dataclass(frozen=True, kw_only=True)
class Exit(Message):
    command = "exit"


@dataclass(frozen=True, kw_only=True)
class Done(Message):
    """A reply with nothing to say but that the command was done."""


# ---------------------------------------------------------------------------------------------
# The reference process (trusted; its replies are decoded as strictly all the same)


@dataclass(frozen=True, kw_only=True)
class JudgeSetup(Message):
    """Prepare the device and load no problem: the engine holds this problem's reference data."""

    command = "judge"
    device: str


@dataclass(frozen=True, kw_only=True)
class JudgeSetupReply(Message):
    environment: Environment


@dataclass(frozen=True, kw_only=True)
class ReferenceSetup(Message):
    """Write and load the problem, build its model, check its input sets and value ranges; with
    `checked`, built again for a cached problem (its sets and warnings are known)."""

    command = "setup"
    path: str
    source: SourceText
    device: str
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    init_seed: Seed
    input_sets: list[dict[str, int]]
    checked: bool = False
    mode: str = "strict"
    value_ranges: list[str] | None = None
    atol: float | None = None
    rtol: float | None = None


@dataclass(frozen=True, kw_only=True)
class ReferenceSetupReply(Message):
    environment: Environment
    init_inputs: Json = None  # a tensor description of the init inputs (their bytes come as a memfd)
    atol: float | None = None
    rtol: float | None = None
    allowed_ops: list[str] = field(default_factory=list)
    warnings: list[dict[str, Json]] = field(default_factory=list)  # Violation fields
    valid_sets: list[Index] | None = None  # None: all of them (None only from an old cache entry)
    randomize_parameters: bool = False
    value_ranges: list[str] = field(default_factory=list)
    mutates_inputs: list[Index] = field(default_factory=list)
    aliases_inputs: list[Index] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class CachedTrial(Message):
    """A cached trial's descriptions; its inputs' and expected outputs' bytes come as two memfds."""

    inputs: Json
    expected: Json


@dataclass(frozen=True, kw_only=True)
class TrialInputs(Message):
    """A trial's inputs, made by the reference from a seed (or, as a judge, from `cached`), shared
    with the candidate; with `expected_budget`, recorded for the reference-data cache."""

    command = "inputs"
    trial: str
    set_index: Index | None = None
    seed: Seed | None = None
    values: str | None = None
    expected_budget: int | None = None
    cached: CachedTrial | None = None


@dataclass(frozen=True, kw_only=True)
class TrialSizes(Message):
    inputs: Count
    expected: Count


@dataclass(frozen=True, kw_only=True)
class TrialRecord(Message):
    """Where a recorded trial's bytes are: `fds` index the reply's descriptors (inputs, expected)."""

    inputs: Json
    expected: Json
    fds: list[Index]


@dataclass(frozen=True, kw_only=True)
class TrialInputsReply(Message):
    inputs: Json
    shapes: list[list[Count]]
    nbytes: TrialSizes
    record: TrialRecord | None = None


@dataclass(frozen=True, kw_only=True)
class Compare(Message):
    """Compare the candidate's outputs of a trial (their descriptors come with the request)."""

    command = "compare"
    trial: str
    outputs: Json
    atol: float | None = None
    rtol: float | None = None


@dataclass(frozen=True, kw_only=True)
class OutputComparison(Message):
    """One output's comparison (compare.compare_tensor)."""

    passed: bool
    index: Index
    reason: str | None = None
    mismatched: Count | None = None
    max_abs_error: float | None = None
    max_rel_error: float | None = None
    atol: float | None = None
    rtol: float | None = None
    worst_index: list[Count] | None = None
    worst_expected: Json = None
    worst_actual: Json = None
    failed_elements: list[dict[str, Json]] | None = None
    fp64: str | None = None
    fp64_allowance: float | None = None
    max_abs_error_vs_fp64: float | None = None
    reference_error_vs_fp64: float | None = None
    reference_max_abs_error: float | None = None
    candidate_max_abs_error_vs_fp64: float | None = None


@dataclass(frozen=True, kw_only=True)
class InputsCheck(Message):
    unchanged: bool
    changed_inputs: list[Index]


@dataclass(frozen=True, kw_only=True)
class ComparisonReport(Message):
    passed: bool
    undecodable: str | None = None  # what the candidate sent could not be read as its outputs
    reason: str | None = None
    outputs: list[OutputComparison] = field(default_factory=list)
    inputs: InputsCheck


@dataclass(frozen=True, kw_only=True)
class CompareReply(Message):
    report: ComparisonReport


@dataclass(frozen=True, kw_only=True)
class TimingInputs(Message):
    """The timed loop's shared input sets, one per seed (their contents change every round)."""

    command = "timing_inputs"
    seeds: list[Seed]


@dataclass(frozen=True, kw_only=True)
class TimingInputsReply(Message):
    inputs: list[Json]  # one description per set; the descriptors come with the reply


@dataclass(frozen=True, kw_only=True)
class Refresh(Message):
    """Fresh values in every shared timing set, before a timed round of the candidate."""

    command = "refresh"
    seeds: list[Seed]


@dataclass(frozen=True, kw_only=True)
class RoundCheck(Message):
    call: Index
    set: Index
    outputs: Json


@dataclass(frozen=True, kw_only=True)
class CheckRound(Message):
    """Check the timed calls the engine picked (their outputs' descriptors come with the request)."""

    command = "check_round"
    checks: list[RoundCheck]
    atol: float | None = None
    rtol: float | None = None


@dataclass(frozen=True, kw_only=True)
class CallCheck(Message):
    call: Index
    set: Index
    passed: bool
    reason: str | None = None
    undecodable: str | None = None

    def evidence(self) -> dict[str, Any]:
        """Every field, None included (a violation's evidence names them all)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass(frozen=True, kw_only=True)
class CheckRoundReply(Message):
    checks: list[CallCheck]
    changed_sets: list[Index]


@dataclass(frozen=True, kw_only=True)
class TimingOptions(Message):
    max_seconds: float


@dataclass(frozen=True, kw_only=True)
class TimeReference(Message):
    """Time the reference (or, with `compiled`, torch.compile of it) on its timing inputs."""

    command = "time"
    options: TimingOptions
    compiled: bool = False


@dataclass(frozen=True, kw_only=True)
class TimeReply(Message):
    stats: dict[str, Json]  # raw per-call `samples` (ms) and the timer's own figures

    def samples(self) -> Any:
        return self.stats.get("samples")

    def facts(self) -> dict[str, Any]:
        """The timer's figures, less the raw samples."""
        return {k: v for k, v in self.stats.items() if k != "samples"}


# ---------------------------------------------------------------------------------------------
# The candidate process (hostile: everything it replies is a claim, decoded strictly)


@dataclass(frozen=True, kw_only=True)
class Prepare(Message):
    """Make the device ready before any submitted code is loaded."""

    command = "prepare"
    device: str


@dataclass(frozen=True, kw_only=True)
class CandidateSetup(Message):
    """Write and import the submission, build ModelNew from the init inputs (a memfd)."""

    command = "setup"
    path: str
    source: SourceText
    device: str
    init_seed: Seed
    init_inputs: Json
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    allowed_ops: list[str] = field(default_factory=list)
    audit_hook: bool = True
    allow_native_code: bool = False  # the operator's switch (REFEREE_ALLOW_NATIVE_CODE): native_code off
    randomize_parameters: bool = False


@dataclass(frozen=True, kw_only=True)
class CandidateSetupReply(Observations):
    environment: Environment


@dataclass(frozen=True, kw_only=True)
class Run(Message):
    """One checked call of the candidate on a trial's shared inputs."""

    command = "run"
    trial: str
    inputs: Json


@dataclass(frozen=True, kw_only=True)
class RunReply(Observations):
    launches: Count
    foreign_launches: list[str]
    aliases_input: list[Index]
    compute_ops: dict[str, Count]
    device_to_host: Count
    unwritten_outputs: list[Index]
    work: Work | None = None
    side_stream_launches: Count = 0
    host_written_outputs: list[Index] = field(default_factory=list)  # changed from the host after their last launch
    outputs: Json = None  # a description of the outputs (None: they could not be exported)
    output_problem: str | None = None


@dataclass(frozen=True, kw_only=True)
class CandidateTimingInputs(Message):
    """Map the shared timing sets (their descriptors come with the request)."""

    command = "timing_inputs"
    inputs: list[Json]


@dataclass(frozen=True, kw_only=True)
class TimeRound(Message):
    """One round of timed calls on the shared timing sets, every call's outputs kept."""

    command = "time_round"
    calls: Annotated[int, Bounds(1, MAX_ITEMS)]
    start: Count = 0
    slack_s: float | None = None
    first_label: Count = 0


@dataclass(frozen=True, kw_only=True)
class TimedRoundReply(Observations):
    """Raw per-call samples (ms, a claim) and every call's outputs; with `output_problem`, the
    outputs could not be exported (and the figures of the round are left out)."""

    samples: list[float]
    outputs: list[Json] | None = None
    output_problem: str | None = None
    host_ms: float | None = None
    method: str | None = None
    launches: Count | None = None
    compute_ops: dict[str, Count] | None = None
    work: Work | None = None
    side_stream_launches: Count | None = None
    device_to_host: Count | None = None


@dataclass(frozen=True, kw_only=True)
class Profile(Message):
    command = "profile"


@dataclass(frozen=True, kw_only=True)
class ProfileReply(Observations):
    fraction: float | None  # the judge compares it with its threshold
    kernels_us: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class Summary(Message):
    command = "summary"


@dataclass(frozen=True, kw_only=True)
class LaunchSummary(Message):
    triton_launches: Count
    kernels: list[str]
    foreign_kernels: list[str]


@dataclass(frozen=True, kw_only=True)
class Launchers(Message):
    """Triton launchers this process seeded from the warm pool, and the argument patterns it built."""

    seeded: Count = 0
    built: list[list[Json]] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class SummaryReply(Message):
    summary: LaunchSummary
    launchers: Launchers | None = None


# What each role answers: command -> (request, reply). The server decodes a request by its `cmd`.
REFERENCE_COMMANDS: dict[str, tuple[type[Message], type[Message]]] = {
    request.command: (request, reply)
    for request, reply in (
        (JudgeSetup, JudgeSetupReply),
        (ReferenceSetup, ReferenceSetupReply),
        (TrialInputs, TrialInputsReply),
        (Compare, CompareReply),
        (TimingInputs, TimingInputsReply),
        (Refresh, Done),
        (CheckRound, CheckRoundReply),
        (TimeReference, TimeReply),
        (Exit, Done),
    )
}
CANDIDATE_COMMANDS: dict[str, tuple[type[Message], type[Message]]] = {
    request.command: (request, reply)
    for request, reply in (
        (Prepare, Done),
        (CandidateSetup, CandidateSetupReply),
        (Run, RunReply),
        (CandidateTimingInputs, Done),
        (TimeRound, TimedRoundReply),
        (Profile, ProfileReply),
        (Summary, SummaryReply),
        (Exit, Done),
    )
}
COMMANDS = {"reference": REFERENCE_COMMANDS, "candidate": CANDIDATE_COMMANDS}


def request_wire(request: Message) -> dict[str, Any]:
    """A request's frame header: its fields and its command."""
    return {"cmd": request.command, **request.to_wire()}


def decode_request(role: str, header: Any) -> Message:
    """A request as the harness receives it (`cmd` names its type)."""
    if type(header) is not dict:
        raise MessageError("not_an_object", "", "a request must be a JSON object")
    command = header.get("cmd")
    known = COMMANDS[role].get(command) if type(command) is str else None
    if known is None:
        raise MessageError("unknown_command", "cmd", f"{role} has no command {str(command)[:80]!r}")
    return decode(known[0], {k: v for k, v in header.items() if k != "cmd"})


def split_reply(header: Any) -> tuple[bool, dict[str, Any]]:
    """(ok, body) of a reply frame's header: its `ok` flag, and its fields less the envelope."""
    if type(header) is not dict:
        raise MessageError("not_an_object", "", "a reply must be a JSON object")
    ok = header.get("ok")
    if type(ok) is not bool:
        raise MessageError("bad_envelope", "ok", f"expected true or false, got {_kind(ok)}")
    return ok, {k: v for k, v in header.items() if k not in ("ok", "cmd")}


# ---------------------------------------------------------------------------------------------
# The codec


def _encode(value: Any) -> Any:
    if isinstance(value, Message):
        out: dict[str, Any] = {}
        for item in dataclasses.fields(value):
            got = getattr(value, item.name)
            if got is None and item.default is None:  # optional and unset: left out
                continue
            out[item.name] = _encode(got)
        return out
    if isinstance(value, (list, tuple)):
        return [_encode(item) for item in value]
    if isinstance(value, dict):
        return {key: _encode(item) for key, item in value.items()}
    return value


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = get_type_hints(cls, include_extras=True)
    return hints


def decode(cls: type[M], data: Any) -> M:
    """`data` (a decoded JSON object) as a `cls`, checked field by field (see the module's docstring)."""
    budget = [MAX_NODES]
    return _message(cls, data, "", budget)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _spend(budget: list[int], where: str) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise MessageError("too_large", where, f"more than {MAX_NODES} values in one message")


def _message(cls: type[M], data: Any, where: str, budget: list[int]) -> M:
    _spend(budget, where)
    if type(data) is not dict:
        raise MessageError(
            "not_an_object" if not where else "wrong_type", where, f"expected an object ({cls.__name__}), got {_kind(data)}"
        )
    hints = _hints(cls)
    declared = {f.name: f for f in dataclasses.fields(cls) if f.init}
    extra = [key for key in data if key not in declared]
    if extra:
        raise MessageError("extra_key", _join(where, str(extra[0])[:80]), f"{cls.__name__} has no field {str(extra[0])[:80]!r}")
    values: dict[str, Any] = {}
    for name, item in declared.items():
        path = _join(where, name)
        if name not in data:
            if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING:
                raise MessageError("missing_key", path, f"{cls.__name__} needs {name!r}")
            continue
        values[name] = _value(hints[name], data[name], path, budget)
    return cls(**values)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _value(tp: Any, value: Any, where: str, budget: list[int]) -> Any:
    _spend(budget, where)
    origin = get_origin(tp)
    if origin is Annotated:
        base, *extras = get_args(tp)
        limits = [extra.limit for extra in extras if isinstance(extra, MaxChars)]
        checked: Any = _text(value, where, limits[0]) if limits else _value(base, value, where, budget)
        for extra in extras:
            if isinstance(extra, Bounds) and not extra.low <= checked <= extra.high:
                raise MessageError("out_of_range", where, f"{checked!r} is outside [{extra.low:g}, {extra.high:g}]")
        return checked
    if tp is Any:
        return _json(value, where, budget, 0)
    if origin in (Union, types.UnionType):
        arms = get_args(tp)
        if value is None and type(None) in arms:
            return None
        failure: MessageError | None = None
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _value(arm, value, where, budget)
            except MessageError as exc:
                if exc.rule != "wrong_type" or failure is None:
                    failure = exc
        assert failure is not None
        raise failure
    if origin is Literal:
        if not any(type(value) is type(choice) and value == choice for choice in get_args(tp)):
            raise MessageError("wrong_type", where, f"expected one of {list(get_args(tp))}, got {str(value)[:80]!r}")
        return value
    if origin is list:
        if type(value) is not list:
            raise MessageError("wrong_type", where, f"expected a list, got {_kind(value)}")
        if len(value) > MAX_ITEMS:
            raise MessageError("too_large", where, f"{len(value)} items, more than {MAX_ITEMS}")
        (item_type,) = get_args(tp)
        return [_value(item_type, item, f"{where}[{i}]", budget) for i, item in enumerate(value)]
    if origin is dict:
        if type(value) is not dict:
            raise MessageError("wrong_type", where, f"expected an object, got {_kind(value)}")
        if len(value) > MAX_ITEMS:
            raise MessageError("too_large", where, f"{len(value)} keys, more than {MAX_ITEMS}")
        _, item_type = get_args(tp)
        out = {}
        for key, item in value.items():
            _text(key, where)
            out[key] = _value(item_type, item, _join(where, key[:80]), budget)
        return out
    if isinstance(tp, type) and issubclass(tp, Message):
        return _message(tp, value, where, budget)
    if tp is type(None):
        if value is not None:
            raise MessageError("wrong_type", where, f"expected null, got {_kind(value)}")
        return None
    if tp is bool:
        if type(value) is not bool:
            raise MessageError("wrong_type", where, f"expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if type(value) is not int:
            raise MessageError("wrong_type", where, f"expected an integer, got {_kind(value)}")
        if not -MAX_INT <= value <= MAX_INT:
            raise MessageError("out_of_range", where, "an integer beyond 64 bits")
        return value
    if tp is float:
        if type(value) not in (int, float):
            raise MessageError("wrong_type", where, f"expected a number, got {_kind(value)}")
        if type(value) is int and not -MAX_INT <= value <= MAX_INT:
            raise MessageError("out_of_range", where, "an integer beyond 64 bits")
        return value
    if tp is str:
        return _text(value, where)
    raise TypeError(f"messages.py cannot decode {tp!r}")  # a declaration this codec does not know


def _text(value: Any, where: str, limit: int = MAX_TEXT_CHARS) -> str:
    if type(value) is not str:
        raise MessageError("wrong_type", where, f"expected a string, got {_kind(value)}")
    if len(value) > limit:
        raise MessageError("too_large", where, f"a string of {len(value)} characters, more than {limit}")
    return value


def _json(value: Any, where: str, budget: list[int], depth: int) -> Any:
    """An opaque JSON value, within the limits (the frame's JSON decoder made it: only these types)."""
    _spend(budget, where)
    if depth > MAX_JSON_DEPTH:
        raise MessageError("too_large", where, f"nested deeper than {MAX_JSON_DEPTH}")
    kind = type(value)
    if value is None or kind in (bool, float):
        return value
    if kind is int:
        if not -MAX_INT <= value <= MAX_INT:
            raise MessageError("out_of_range", where, "an integer beyond 64 bits")
        return value
    if kind is str:
        return _text(value, where)
    if kind is list:
        if len(value) > MAX_ITEMS:
            raise MessageError("too_large", where, f"{len(value)} items, more than {MAX_ITEMS}")
        return [_json(item, f"{where}[{i}]", budget, depth + 1) for i, item in enumerate(value)]
    if kind is dict:
        if len(value) > MAX_ITEMS:
            raise MessageError("too_large", where, f"{len(value)} keys, more than {MAX_ITEMS}")
        for key in value:
            _text(key, where)
        return {key: _json(item, _join(where, key[:80]), budget, depth + 1) for key, item in value.items()}
    raise MessageError("wrong_type", where, f"not a JSON value: {kind.__name__}")
