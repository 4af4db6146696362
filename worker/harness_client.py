"""The judge's side of the conversation with an evaluation's two harness processes.

Every command goes out as a typed request of sandbox/harness/messages.py and every reply comes back
decoded, strictly, into its typed reply before the judge reads a field. The candidate's process is
hostile: a reply of its that does not decode is the `protocol_violation` rule (verdict cheating);
one of the trusted reference's is an infrastructure error. A process that dies, breaks the channel
or misses the deadline earns its verdict here too, as does a command that failed in it (an error
reply). Either way the evaluation ends with `Stop`.

`ReferenceClient` and `CandidateClient` have one method per command; worker/evaluate.py calls only
those, and holds no key of the protocol.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from triton_referee.sandbox.harness.messages import (
    CANDIDATE_COMMANDS,
    REFERENCE_COMMANDS,
    CandidateSetup,
    CandidateSetupReply,
    CandidateTimingInputs,
    CheckRound,
    CheckRoundReply,
    Compare,
    CompareReply,
    Done,
    ErrorReply,
    JudgeSetup,
    JudgeSetupReply,
    Message,
    MessageError,
    Prepare,
    Profile,
    ProfileReply,
    ReferenceSetup,
    ReferenceSetupReply,
    Refresh,
    Run,
    RunReply,
    Summary,
    SummaryReply,
    TimedRoundReply,
    TimeReference,
    TimeReply,
    TimeRound,
    TimingInputs,
    TimingInputsReply,
    TimingOptions,
    TrialInputs,
    TrialInputsReply,
    decode,
    request_wire,
    split_reply,
)

from . import rules
from .models import Verdict, Violation
from .process import HarnessDied, HarnessProcess, HarnessTimeout
from .static_checks import ProblemSourceError
from .watchers import watch_violations

R = TypeVar("R", bound=Message)

# The verdicts a candidate's own failure earns (any other kind it reports: an infrastructure error).
FAILURE_VERDICTS = {
    "compile_error": Verdict.compile_error,
    "runtime_error": Verdict.runtime_error,
    "invalid_submission": Verdict.invalid_submission,
}


class Stop(Exception):
    """Ends the evaluation early with a verdict (and the violations that earned it, if any)."""

    def __init__(self, verdict: Verdict, error: dict[str, Any] | None = None, violations: list[Violation] | None = None) -> None:
        super().__init__(verdict.value)
        self.verdict = verdict
        self.error = error
        self.violations = violations or []


@dataclass
class Exchange:
    """What both conversations of one evaluation share: the deadline (it grows with a large
    problem's trials), the limit to name in a timeout, and the time spent per step ("role.command", ms)."""

    deadline: float
    timeout_s: float
    steps: dict[str, float] = field(default_factory=dict)

    def add_step(self, step: str, ms: float) -> None:
        self.steps[step] = self.steps.get(step, 0.0) + ms


@dataclass
class Pending(Generic[R]):
    """A command sent whose reply is still to be collected."""

    request: Message
    reply_type: type[R]
    started: float
    step: str


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class HarnessClient:
    """Sends typed requests to one harness process and decodes its replies (see the module's docstring)."""

    trusted = False
    commands: dict[str, tuple[type[Message], type[Message]]] = CANDIDATE_COMMANDS  # what this kind of process answers

    def __init__(self, process: HarnessProcess, exchange: Exchange) -> None:
        self.process = process
        self.exchange = exchange
        self._deferred: list[Pending[Message]] = []
        self._answers: dict[str, tuple[Message, list[int]]] = {}  # deferred commands' replies, by command

    @property
    def role(self) -> str:
        return self.process.role

    def ask(self, request: Message, fds: list[int] | None = None) -> tuple[Message, list[int]]:
        """Send a command (with shared-memory descriptors, which stay the caller's) and wait for the
        reply and the descriptors that came with it (the caller's to close: see `close_fds`)."""
        return self.collect(self.post(request, fds))

    def post(self, request: Message, fds: list[int] | None = None) -> Pending[Message]:
        """Send a command; its answer is collected later, so two processes can work at once."""
        self.drain()
        return self._send(request, fds, f"{self.role}.{request.command}")

    def defer(self, request: Message, step: str) -> None:
        """Send a command the process works on in the background: its answer is taken (see
        `answer`) before the next command to this process."""
        self._deferred.append(self._send(request, None, step))

    def drain(self) -> None:
        deferred, self._deferred = self._deferred, []
        for pending in deferred:
            self._answers[pending.request.command] = self.collect(pending)

    def answer(self, command: str) -> tuple[Message, list[int]] | None:
        """The reply of a deferred command, once drained (None if it was not deferred)."""
        self.drain()
        return self._answers.pop(command, None)

    def collect(self, pending: Pending[R]) -> tuple[R, list[int]]:
        command = pending.request.command
        try:
            header, _ = self._failing(lambda: self.process.collect({"cmd": command}, deadline=self.exchange.deadline))
        finally:
            self.exchange.add_step(pending.step, (time.monotonic() - pending.started) * 1e3)
        fds = self.process.take_fds()
        try:
            ok, body = split_reply(header)
            reply: Message = decode(pending.reply_type, body) if ok else decode(ErrorReply, body)
        except MessageError as exc:
            close_fds(fds)
            raise self._malformed(command, exc) from None
        if isinstance(reply, ErrorReply):
            close_fds(fds)
            raise self._failed(reply, command)
        return cast(R, reply), fds

    def _send(self, request: Message, fds: list[int] | None, step: str) -> Pending[Message]:
        reply_type = self.commands[request.command][1]
        started = time.monotonic()
        self._failing(lambda: self.process.post(request_wire(request), deadline=self.exchange.deadline, fds=fds))
        return Pending(request, reply_type, started, step)

    def _failed(self, reply: ErrorReply, command: str) -> Exception:
        """The verdict of a command that failed in the process."""
        error = reply.error
        if self.trusted:
            if error.kind == "problem_error":
                return ProblemSourceError(error.message or "the reference failed")
            return Stop(Verdict.infrastructure_error, error.to_wire())
        # What the watchers saw before the failure: torch ops before a crash stay a crash (an error
        # reply carries none), refused calls and tampering do not.
        caught = watch_violations(reply, command)
        if caught:  # a forbidden call that ended the run is cheating, not a crash
            return Stop(Verdict.cheating, error.to_wire(), caught)
        return Stop(FAILURE_VERDICTS.get(error.kind, Verdict.infrastructure_error), error.to_wire())

    def _malformed(self, command: str, exc: MessageError) -> Stop:
        if self.trusted:
            return Stop(
                Verdict.infrastructure_error,
                {
                    "kind": "infrastructure_error",
                    "message": f"the {self.role} process sent a malformed reply to {command!r}: {exc}",
                },
            )
        evidence = {"command": command, "problem": exc.rule, "at": exc.where, "detail": exc.detail[:300]}
        return Stop(Verdict.cheating, None, [rules.violation("protocol_violation", evidence)])

    def _failing(self, step: Any) -> Any:
        """Run a channel step, turning a dead or silent process into the verdict it earns."""
        try:
            return step()
        except HarnessTimeout as exc:
            if not self.trusted:
                raise Stop(
                    Verdict.timeout, {"kind": "timeout", "message": f"{exc} (limit {self.exchange.timeout_s:g} s)"}
                ) from exc
            raise Stop(Verdict.infrastructure_error, {"kind": "infrastructure_error", "message": str(exc)}) from exc
        except HarnessDied as exc:
            verdict = Verdict.infrastructure_error if self.trusted else Verdict.runtime_error
            error: dict[str, Any] = {"kind": verdict.value, "message": str(exc), "returncode": exc.returncode}
            if exc.memory is not None:  # killed for memory: name the budget and what was held
                used, budget = exc.memory
                error["memory_budget"] = {
                    "memory": "host (resident)",
                    "budget_bytes": budget,
                    "used_bytes": used,
                    "whose": self.role,
                }
            raise Stop(verdict, error) from exc


class ReferenceClient(HarnessClient):
    """The reference process: trusted, but its replies are decoded as strictly as the candidate's."""

    trusted = True
    commands = REFERENCE_COMMANDS

    def judge(self, device: str) -> JudgeSetupReply:
        return cast(JudgeSetupReply, self.ask(JudgeSetup(device=device))[0])

    def setup(self, request: ReferenceSetup) -> tuple[ReferenceSetupReply, list[int]]:
        return cast(tuple[ReferenceSetupReply, list[int]], self.ask(request))

    def setup_in_background(self, request: ReferenceSetup) -> None:
        self.defer(request, "reference.background_setup")

    def inputs(self, request: TrialInputs, fds: list[int] | None = None) -> tuple[TrialInputsReply, list[int]]:
        return cast(tuple[TrialInputsReply, list[int]], self.ask(request, fds))

    def compare(self, request: Compare, fds: list[int]) -> CompareReply:
        return cast(CompareReply, self.ask(request, fds)[0])

    def timing_inputs(self, seeds: list[int]) -> tuple[TimingInputsReply, list[int]]:
        """The shared timing sets: the reply of the background command if one was sent, else made now."""
        answer = self.answer(TimingInputs.command)
        return cast(tuple[TimingInputsReply, list[int]], answer or self.ask(TimingInputs(seeds=seeds)))

    def timing_inputs_in_background(self, seeds: list[int]) -> None:
        self.defer(TimingInputs(seeds=seeds), "reference.background_timing_inputs")

    def refresh(self, seeds: list[int]) -> Done:
        return cast(Done, self.ask(Refresh(seeds=seeds))[0])

    def check_round(self, request: CheckRound, fds: list[int]) -> CheckRoundReply:
        return cast(CheckRoundReply, self.ask(request, fds)[0])

    def time(self, max_seconds: float, compiled: bool = False) -> TimeReply:
        request = TimeReference(options=TimingOptions(max_seconds=max_seconds), compiled=compiled)
        return cast(TimeReply, self.ask(request)[0])


class CandidateClient(HarnessClient):
    """The candidate process: hostile; every reply is a claim, decoded strictly."""

    def start_prepare(self, device: str) -> Pending[Message]:
        """Sent while the reference builds its model; collect with `finish`."""
        return self.post(Prepare(device=device))

    def finish(self, pending: Pending[Message]) -> Message:
        return self.collect(pending)[0]

    def setup(self, request: CandidateSetup, fds: list[int]) -> CandidateSetupReply:
        return cast(CandidateSetupReply, self.ask(request, fds)[0])

    def run(self, trial: str, inputs: Any, fds: list[int]) -> tuple[RunReply, list[int]]:
        return cast(tuple[RunReply, list[int]], self.ask(Run(trial=trial, inputs=inputs), fds))

    def timing_inputs(self, inputs: list[Any], fds: list[int]) -> Done:
        return cast(Done, self.ask(CandidateTimingInputs(inputs=inputs), fds)[0])

    def time_round(self, request: TimeRound) -> tuple[TimedRoundReply, list[int]]:
        return cast(tuple[TimedRoundReply, list[int]], self.ask(request))

    def profile(self) -> ProfileReply:
        return cast(ProfileReply, self.ask(Profile())[0])

    def summary(self) -> SummaryReply:
        return cast(SummaryReply, self.ask(Summary())[0])
