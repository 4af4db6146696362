"""The harness messages (sandbox/harness/messages.py): round trips through JSON, and hostile replies
refused with the rule they break (the judge's side, with live processes: tests/worker/test_harness_client.py)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from triton_referee.sandbox.harness import messages
from triton_referee.sandbox.harness.messages import (
    CANDIDATE_COMMANDS,
    REFERENCE_COMMANDS,
    AuditEvent,
    CallCheck,
    CandidateSetup,
    CheckRound,
    ComparisonReport,
    ErrorDetail,
    ErrorReply,
    InputsCheck,
    MessageError,
    OpWork,
    OutputComparison,
    ReferenceSetup,
    RoundCheck,
    RunReply,
    TimedRoundReply,
    TimeRound,
    Work,
    decode,
    decode_request,
    request_wire,
    split_reply,
)


def honest_run_reply() -> dict[str, Any]:
    """A run reply as an honest candidate process sends it (the frame's header, envelope included)."""
    reply = RunReply(
        launches=1,
        foreign_launches=[],
        aliases_input=[],
        compute_ops={},
        device_to_host=0,
        unwritten_outputs=[],
        work=Work(
            torch_ops={"add": OpWork(calls=1, bytes=4096)}, scalar_reads=0, scalar_reads_of_kernel_data=0, triton_bytes=8192
        ),
        side_stream_launches=0,
        outputs={"t": "tensor", "dtype": "float32", "shape": [1024], "offset": 0, "nbytes": 4096, "fd": 0},
        tampering=[],
        audit_events=[AuditEvent(event="open", reason="reading outside the job", detail="/etc/passwd")],
    )
    return {"ok": True, "cmd": "run", **reply.to_wire()}


def decode_reply(header: dict[str, Any], reply_type: type[messages.Message] = RunReply) -> messages.Message:
    ok, body = split_reply(json.loads(json.dumps(header)))  # through JSON, as the channel carries it
    return decode(reply_type if ok else ErrorReply, body)


# --- round trips --------------------------------------------------------------------------------


EXAMPLES: list[tuple[str, messages.Message]] = [
    (
        "reference",
        ReferenceSetup(
            path="/job/reference/problem.py",
            source="import torch\n",
            device="cpu",
            precision="fp16",
            init_seed=7,
            input_sets=[{}, {"N": 64}],
            atol=1e-3,
        ),
    ),
    (
        "candidate",
        CandidateSetup(
            path="/job/candidate/candidate.py",
            source="x = 1\n",
            device="cuda",
            init_seed=3,
            init_inputs={"t": "list", "items": []},
            allowed_ops=["add"],
            audit_hook=False,
        ),
    ),
    ("candidate", TimeRound(calls=100, start=300, slack_s=0.002, first_label=601)),
    ("reference", CheckRound(checks=[RoundCheck(call=3, set=1, outputs={"t": "tensor"})], atol=None, rtol=1e-2)),
]


@pytest.mark.parametrize(("role", "request_message"), EXAMPLES, ids=lambda m: type(m).__name__)
def test_a_request_round_trips_through_json(role: str, request_message: messages.Message) -> None:
    wire = json.loads(json.dumps(request_wire(request_message)))
    assert wire["cmd"] == request_message.command
    assert decode_request(role, wire) == request_message


def test_replies_round_trip_and_unset_optionals_stay_off_the_wire() -> None:
    honest = honest_run_reply()
    assert "output_problem" not in honest  # None and optional: left out
    decoded = decode_reply(honest)
    assert isinstance(decoded, RunReply) and decoded.work is not None and decoded.work.torch_ops["add"].bytes == 4096
    assert {"ok": True, "cmd": "run", **decoded.to_wire()} == honest
    report = ComparisonReport(
        passed=False,
        undecodable="not a memfd",
        reason="mismatch",
        outputs=[OutputComparison(passed=False, index=0, worst_index=[2, 3], worst_expected=float("nan"))],
        inputs=InputsCheck(unchanged=True, changed_inputs=[]),
    )
    again = decode(ComparisonReport, json.loads(json.dumps(report.to_wire())))
    assert again.outputs[0].worst_index == [2, 3] and again.undecodable == "not a memfd"
    assert list(report.to_wire()) == ["passed", "undecodable", "reason", "outputs", "inputs"]  # the result document's order


def test_a_submitted_source_may_be_longer_than_other_strings() -> None:
    """Sources have their own limit (a submission with a table of constants runs to hundreds of KB);
    every other string keeps the short one."""
    long_source = "# x\n" * messages.MAX_TEXT_CHARS
    setup = CandidateSetup(path="/job/c.py", source=long_source, device="cpu", init_seed=1, init_inputs=None)
    assert decode_request("candidate", json.loads(json.dumps(request_wire(setup)))) == setup
    with pytest.raises(MessageError) as caught:
        decode_request("candidate", request_wire(dataclasses.replace(setup, path=long_source)))
    assert (caught.value.rule, caught.value.where) == ("too_large", "path")
    with pytest.raises(MessageError) as caught:
        decode_request("candidate", request_wire(dataclasses.replace(setup, source="#" * (messages.MAX_SOURCE_CHARS + 1))))
    assert (caught.value.rule, caught.value.where) == ("too_large", "source")


def test_every_command_has_a_request_and_a_reply_type() -> None:
    for table in (REFERENCE_COMMANDS, CANDIDATE_COMMANDS):
        for command, (request, reply) in table.items():
            assert request.command == command
            assert dataclasses.is_dataclass(request) and dataclasses.is_dataclass(reply)
            assert messages._hints(request) is not None and messages._hints(reply) is not None  # every annotation resolves


def test_an_error_reply_keeps_its_fields_as_sent() -> None:
    error = {
        "ok": False,
        "cmd": "setup",
        "error": {"kind": "compile_error", "type": "CompilationError", "message": "bad", "traceback": "line 3"},
        "tampering": [],
        "audit_events": [],
    }
    decoded = decode_reply(error)
    assert isinstance(decoded, ErrorReply) and decoded.error == ErrorDetail(
        kind="compile_error", type="CompilationError", message="bad", traceback="line 3"
    )
    assert decoded.error.to_wire() == error["error"]  # what reaches the result document


def test_call_check_evidence_names_every_field() -> None:
    assert CallCheck(call=1, set=0, passed=False).evidence() == {
        "call": 1,
        "set": 0,
        "passed": False,
        "reason": None,
        "undecodable": None,
    }


# --- hostile replies: each refused with the rule it breaks --------------------------------------


def mutated_run_reply(change: Any) -> dict[str, Any]:
    header = honest_run_reply()
    change(header)
    return header


HOSTILE = {
    "wrong_type": (lambda h: h.update(launches="1"), "wrong_type", "launches"),
    "bool_for_int": (lambda h: h.update(launches=True), "wrong_type", "launches"),
    "missing_key": (lambda h: h.pop("unwritten_outputs"), "missing_key", "unwritten_outputs"),
    "extra_key": (lambda h: h.update(verdict="correct"), "extra_key", "verdict"),
    "nested_extra_key": (lambda h: h["work"].update(speedup=100.0), "extra_key", "work.speedup"),
    "negative_count": (lambda h: h.update(device_to_host=-5), "out_of_range", "device_to_host"),
    "huge_count": (lambda h: h.update(launches=1 << 80), "out_of_range", "launches"),
    "huge_string": (lambda h: h.update(output_problem="x" * (messages.MAX_TEXT_CHARS + 1)), "too_large", "output_problem"),
    "huge_list": (lambda h: h.update(foreign_launches=["k"] * (messages.MAX_ITEMS + 1)), "too_large", "foreign_launches"),
    "deep_json": (lambda h: h.update(outputs=_nested(messages.MAX_JSON_DEPTH + 5)), "too_large", "outputs"),
    "object_for_list": (lambda h: h.update(tampering={"torch.add": "replaced"}), "wrong_type", "tampering"),
    "event_without_name": (lambda h: h.update(audit_events=[{"reason": "x"}]), "missing_key", "audit_events[0].event"),
    "no_envelope": (lambda h: h.pop("ok"), "bad_envelope", "ok"),
    "string_envelope": (lambda h: h.update(ok="yes"), "bad_envelope", "ok"),
}


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_reply_is_refused_with_the_named_rule(case: str) -> None:
    change, rule, where = HOSTILE[case]
    with pytest.raises(MessageError) as caught:
        decode_reply(mutated_run_reply(change))
    assert caught.value.rule == rule, caught.value
    assert caught.value.where.startswith(where), caught.value


def test_the_honest_neighbours_of_the_hostile_replies_are_accepted() -> None:
    """Each hostile reply's nearest honest one decodes: an int where an int is due (0 included),
    a long but bounded list, None for an optional field, a float given as an integer."""
    assert decode_reply(mutated_run_reply(lambda h: h.update(launches=0, device_to_host=0))).launches == 0
    many = decode_reply(mutated_run_reply(lambda h: h.update(foreign_launches=["k"] * messages.MAX_ITEMS)))
    assert len(many.foreign_launches) == messages.MAX_ITEMS
    assert decode_reply(mutated_run_reply(lambda h: h.update(outputs=None, output_problem="a subclass"))).outputs is None
    timed = decode(TimedRoundReply, {"samples": [1, 2.5, 0], "outputs": None, "output_problem": "lazy"})
    assert timed.samples == [1, 2.5, 0]


def test_an_unknown_or_malformed_request_is_refused() -> None:
    with pytest.raises(MessageError) as caught:
        decode_request("candidate", {"cmd": "compare", "trial": "t", "outputs": None})  # a reference command
    assert caught.value.rule == "unknown_command"
    with pytest.raises(MessageError) as caught:
        decode_request("reference", {"cmd": "refresh", "seeds": [1, "2"]})
    assert caught.value.rule == "wrong_type" and caught.value.where == "seeds[1]"
