"""The judge's side of the conversation with the harness processes (worker/harness_client.py), with
live processes: a real reference answers the typed methods; the hostile replies are written by a
process that speaks the channel's real framing with the real key (a stand-in for a candidate whose
code took over its harness, and for a reference that breaks its type, since an honest harness never
sends them). The full engine against such a candidate: tests/evidence/forged_reply_types.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.harness.test_messages import honest_run_reply, mutated_run_reply
from triton_referee.sandbox.harness.messages import ReferenceSetup
from triton_referee.sandbox.harness.protocol import KEY_BYTES, Channel
from triton_referee.sandbox.launch import HARNESS_PARENT
from triton_referee.worker.harness_client import CandidateClient, Exchange, ReferenceClient, Stop
from triton_referee.worker.models import Verdict
from triton_referee.worker.process import HarnessProcess, _FreshChild


def test_the_judge_talks_to_a_real_reference_with_typed_methods(tmp_path: Path, tiny_reference: str) -> None:
    """A real reference process answers the typed requests with replies that decode strictly."""
    exchange = Exchange(deadline=time.monotonic() + 120, timeout_s=120)
    reference = ReferenceClient(HarnessProcess("reference", tmp_path / "reference", "cpu"), exchange)
    reference.process.start()
    try:
        judged = reference.judge("cpu")
        assert judged.environment.device == "cpu" and judged.environment.interpreter is True
        setup, fds = reference.setup(
            ReferenceSetup(
                path=str(tmp_path / "reference" / "problem.py"), source=tiny_reference, device="cpu", init_seed=5, input_sets=[{}]
            )
        )
        for fd in fds:
            os.close(fd)
        assert setup.valid_sets == [0] and setup.environment == judged.environment
        reference.timing_inputs_in_background([11])
        timing, timing_fds = reference.timing_inputs([99])  # the background command's reply, not a new one
        for fd in timing_fds:
            os.close(fd)
        assert len(timing.inputs) == 1 and "reference.background_timing_inputs" in exchange.steps
        assert "reference.timing_inputs" not in exchange.steps
    finally:
        reference.process.close()


# A harness stand-in that speaks the real framing with the real key and answers every command with
# the reply given on its command line (what a candidate that took over its harness can send).
FORGER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from harness.protocol import Channel, read_key
args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
reply = json.loads(args["--reply"])
channel = Channel(int(args["--read-fd"]), int(args["--write-fd"]), read_key(int(args["--key-fd"])), is_parent=False)
while True:
    header, _ = channel.recv()
    channel.send({**reply, "cmd": header["cmd"]})
"""


class ForgingProcess(HarnessProcess):
    """A HarnessProcess whose child is the forger above (started as the judge starts a harness)."""

    def __init__(self, workdir: Path, reply: dict[str, Any], role: str = "candidate") -> None:
        super().__init__(role, workdir, "cpu")
        self.forged_reply = reply

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        key_r, key_w = os.pipe()
        argv = [
            sys.executable,
            "-c",
            FORGER,
            str(HARNESS_PARENT),
            "--read-fd",
            str(to_child_r),
            "--write-fd",
            str(to_parent_w),
            "--key-fd",
            str(key_r),
            "--reply",
            json.dumps(self.forged_reply),
        ]
        child = subprocess.Popen(argv, pass_fds=(to_child_r, to_parent_w, key_r), start_new_session=True)
        for fd in (to_child_r, to_parent_w, key_r):
            os.close(fd)
        key = os.urandom(KEY_BYTES)
        os.write(key_w, key)
        os.close(key_w)
        self.process = _FreshChild(child)
        for fd in (to_child_w, to_parent_r):
            os.set_blocking(fd, False)
        self.channel = Channel(to_parent_r, to_child_w, key, is_parent=True)
        self._fds = (to_child_w, to_parent_r)


@pytest.mark.parametrize("trusted", [False, True], ids=["candidate", "reference"])
def test_a_malformed_reply_from_a_live_process_is_a_verdict_not_a_crash(tmp_path: Path, trusted: bool) -> None:
    forged = mutated_run_reply(lambda h: h.update(launches="plenty"))
    exchange = Exchange(deadline=time.monotonic() + 60, timeout_s=60)
    process = ForgingProcess(tmp_path / "forger", forged, "reference" if trusted else "candidate")
    process.start()
    try:
        if trusted:
            with pytest.raises(Stop) as stopped:
                ReferenceClient(process, exchange).refresh([1])  # the reference must answer {"ok": true} only
            assert stopped.value.verdict == Verdict.infrastructure_error and not stopped.value.violations
            assert "malformed reply to 'refresh'" in stopped.value.error["message"]
        else:
            with pytest.raises(Stop) as stopped:
                CandidateClient(process, exchange).run("trial0", {"t": "list", "items": []}, [])
            assert stopped.value.verdict == Verdict.cheating and stopped.value.error is None
            (violation,) = stopped.value.violations
            assert violation.rule == "protocol_violation"
            assert violation.evidence == {
                "command": "run",
                "problem": "wrong_type",
                "at": "launches",
                "detail": "expected an integer, got str",
            }
    finally:
        process.kill()


def test_an_honest_reply_from_a_live_process_is_accepted(tmp_path: Path) -> None:
    """The forger's channel, with the honest reply: decoded, typed, no verdict."""
    exchange = Exchange(deadline=time.monotonic() + 60, timeout_s=60)
    process = ForgingProcess(tmp_path / "forger", honest_run_reply())
    process.start()
    try:
        reply, fds = CandidateClient(process, exchange).run("trial0", {"t": "list", "items": []}, [])
        assert fds == [] and reply.launches == 1 and reply.audit_events[0].event == "open"
        assert "candidate.run" in exchange.steps
    finally:
        process.kill()


def test_an_error_reply_of_the_candidate_is_its_failure_verdict(tmp_path: Path) -> None:
    error = {"ok": False, "error": {"kind": "compile_error", "message": "no", "type": "CompilationError", "traceback": ""}}
    process = ForgingProcess(tmp_path / "forger", error)
    process.start()
    try:
        with pytest.raises(Stop) as stopped:
            CandidateClient(process, Exchange(deadline=time.monotonic() + 60, timeout_s=60)).profile()
        assert stopped.value.verdict == Verdict.compile_error and stopped.value.error == error["error"]
    finally:
        process.kill()
