"""Findings from what the candidate process's watchers saw (its audit hook, integrity snapshot, op
witness, launch recorder and job-directory scan), reported in every reply of that process.

Apart from worker/evaluation_state.py so worker/harness_client.py can judge an error reply with it
too: a forbidden call that ended the run is cheating, not a crash."""

from __future__ import annotations

from typing import Any

from triton_referee.sandbox.harness.messages import Observations, RunReply, TimedRoundReply

from . import rules
from .models import Violation


def watch_violations(reply: Observations, phase: str) -> list[Violation]:
    """Violations from what the candidate process's watchers saw during one phase (and, in a reply
    of calls, what its op and launch recorders counted)."""
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for event in reply.audit_events:
        wire = event.to_wire()
        by_rule.setdefault(rules.rule_of_event(wire), []).append(wire)
    calls = reply if isinstance(reply, (RunReply, TimedRoundReply)) else None
    copies = (calls.device_to_host or 0) if calls is not None else 0
    checks = [
        ("torch_fallback", calls.compute_ops if calls is not None and calls.work is None else None, "ops"),  # else: judge_work
        ("torch_fallback", reply.hidden_compute, "hidden_ops"),  # ops the dispatch mode never saw: never proportionate
        ("tampering", reply.tampering[:20], "changed"),
        *((rule, found[:20], "events") for rule, found in sorted(by_rule.items())),
        ("native_code", reply.native_files, "files"),  # none reported where the operator allows native code
        ("background_thread", reply.threads_left_running, "threads_left_running"),
        ("side_stream", calls.side_stream_launches if calls is not None else None, "launches"),
        ("device_to_host_transfer", copies + reply.host_memory_launches, "copies"),
    ]
    return [rules.violation(rule, {"phase": phase, key: value}) for rule, value, key in checks if value]
