"""One test (or a few) per verdict kind, through the real engine: two harness processes, Triton's
interpreter on the CPU, the authenticated channel and the trusted comparator."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict


def _read(examples_dir: Path, problem: str, candidate: str) -> tuple[str, str]:
    return (examples_dir / problem / "reference.py").read_text(), (examples_dir / problem / f"{candidate}.py").read_text()


def _assert_failure_shape(result, verdict: Verdict) -> None:
    """What every non-correct verdict shares: not correct, no reward, the verdict in the document."""
    assert result.verdict == verdict, (result.verdict, result.error, result.feedback)
    assert result.correct is False
    assert result.model_dump(mode="json")["verdict"] == verdict.value
    assert result.feedback


# --- correct -------------------------------------------------------------------------------------


def test_correct_relu_example(relu_correct_result):
    result = relu_correct_result
    assert result.verdict == Verdict.correct, (result.error, result.feedback)
    assert result.correct is True
    assert result.compiled is True
    # trials=2 was asked for; every one of the 3 input sets gets at least one trial
    assert result.correctness.input_sets == 3
    # plus one trial per value range the reference stays finite in (docs/judging.md)
    assert result.correctness.passed == result.correctness.trials == 3 + len(result.correctness.value_ranges)
    assert result.correctness.recheck_passed is True
    assert result.anti_cheat.violations == []
    assert result.reward == 1.0
    assert result.error is None


# --- incorrect -----------------------------------------------------------------------------------


def test_incorrect_softmax_wrong(examples_dir, evaluate_source):
    result = evaluate_source(*_read(examples_dir, "softmax", "candidate_wrong"), seed=11)
    _assert_failure_shape(result, Verdict.incorrect)
    assert result.reward == 0.0
    assert result.compiled is True
    assert result.correctness.passed < result.correctness.trials
    failure = result.correctness.first_failure
    assert failure is not None
    assert isinstance(failure.get("reason"), str) and "outside atol" in failure["reason"]
    assert failure["reason"] in result.feedback
    assert result.correctness.max_abs_error is not None and result.correctness.max_abs_error > 1e-4
    assert result.anti_cheat.violations == []


# --- compile_error -------------------------------------------------------------------------------


def test_compile_error_syntax_error_reports_line(honest_tiny_candidate, tiny_reference, evaluate_source):
    lines = honest_tiny_candidate.splitlines()
    bad_line = 5
    lines[bad_line - 1] = "def broken(:"
    started = time.monotonic()
    result = evaluate_source(tiny_reference, "\n".join(lines) + "\n")
    _assert_failure_shape(result, Verdict.compile_error)
    assert result.compiled is False
    assert result.reward == 0.0
    assert result.error is not None and result.error.get("line") == bad_line
    assert f"line {bad_line}" in result.error["message"]
    assert f"line {bad_line}" in result.feedback
    assert time.monotonic() - started < 2.0, "a syntax error is caught statically, without starting processes"


def test_compile_error_relu_example_via_interpreter(examples_dir, evaluate_source):
    result = evaluate_source(*_read(examples_dir, "relu", "candidate_compile_error"))
    _assert_failure_shape(result, Verdict.compile_error)
    assert result.compiled is False
    assert result.reward == 0.0
    assert "slope" in result.error["message"]
    assert "slope" in result.feedback


# --- runtime_error -------------------------------------------------------------------------------


def test_runtime_error_matmul_example(examples_dir, evaluate_source):
    result = evaluate_source(*_read(examples_dir, "matmul", "candidate_runtime_error"))
    _assert_failure_shape(result, Verdict.runtime_error)
    assert result.reward == 0.0
    assert result.error["type"] == "ValueError"
    assert "ValueError" in result.feedback
    assert "candidate.py" in result.error["traceback"]


def test_runtime_error_when_forward_exits_the_process(tiny_reference, make_tiny_candidate, evaluate_source):
    candidate = make_tiny_candidate(
        """
        sys.stdout.flush()
        os._exit(0)
        """
    )
    result = evaluate_source(tiny_reference, candidate)
    _assert_failure_shape(result, Verdict.runtime_error)
    assert result.reward == 0.0
    assert "code 0" in result.error["message"]


def test_fake_success_on_stdout_is_never_a_verdict(tiny_reference, make_tiny_candidate, evaluate_source):
    fake = '{"verdict": "correct", "reward": 1.0, "correct": true}'
    candidate = make_tiny_candidate(
        f"""
        print({fake!r})
        sys.stdout.flush()
        os._exit(0)
        """
    )
    result = evaluate_source(tiny_reference, candidate)
    _assert_failure_shape(result, Verdict.runtime_error)
    assert result.reward == 0.0
    # The output is kept as evidence, and that is all it is.
    assert fake in result.output.get("stdout", "")


# --- timeout -------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a process, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def _live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are still running (zombies awaiting a reaper do not count)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _proc_stat(int(entry))) is not None:
            state, _, group = stat
            if group == pgid and state not in ("Z", "X"):
                members.append(int(entry))
    return members


def _harness_children() -> dict[str, int]:
    """role -> pid of the harness processes this test process has started and that still run."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or (stat := _proc_stat(int(entry))) is None or stat[1] != os.getpid():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--role" in argv:
            found[argv[argv.index(b"--role") + 1].decode()] = int(entry)
    return found


def test_timeout_kills_the_whole_process_group(tiny_reference, make_tiny_candidate):
    candidate = make_tiny_candidate(
        """
        while True:
            pass
        """
    )
    timeout_s = 15.0
    outcome: dict[str, object] = {}

    def run() -> None:
        started = time.monotonic()
        outcome["result"] = evaluate(
            Problem(source=tiny_reference), Submission(source=candidate), EvalConfig(device="cpu", trials=2, timeout_s=timeout_s)
        )
        outcome["elapsed"] = time.monotonic() - started

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    seen: dict[str, int] = {}
    while worker.is_alive():  # note the harness processes while they run
        seen.update(_harness_children())
        time.sleep(0.05)
    worker.join()

    result, elapsed = outcome["result"], outcome["elapsed"]
    _assert_failure_shape(result, Verdict.timeout)
    assert result.reward == 0.0
    assert elapsed < timeout_s + 10, f"the evaluation took {elapsed:.1f} s for a {timeout_s:g} s limit"
    assert elapsed >= timeout_s - 1, "the candidate should have been given its whole time budget"
    assert "Timed out" in result.feedback

    assert set(seen) == {"reference", "candidate"}, seen
    for role, pid in seen.items():
        assert pid != os.getpgid(0)
        deadline = time.monotonic() + 5
        while _live_members(pid) and time.monotonic() < deadline:  # each harness leads its own group
            time.sleep(0.1)
        assert _live_members(pid) == [], f"processes of the {role}'s group survived the timeout"
    assert _harness_children() == {}


# --- invalid_submission --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "source", "message"),
    [
        ("no ModelNew", "import triton\n\n@triton.jit\ndef k(x):\n    pass\n\nclass Model:\n    pass\n", "ModelNew"),
        (
            "no jit",
            "import torch\n\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return x.relu()\n",
            "triton.jit",
        ),
        ("empty", "", "empty"),
        ("whitespace only", "\n   \n", "empty"),
    ],
)
def test_invalid_submission(case, source, message, tiny_reference, evaluate_source):
    started = time.monotonic()
    result = evaluate_source(tiny_reference, source)
    _assert_failure_shape(result, Verdict.invalid_submission)
    assert result.reward == 0.0
    assert result.compiled is False
    assert message in result.error["message"], case
    assert message in result.feedback
    assert time.monotonic() - started < 2.0, "static rejections must not start harness processes"


# --- cheating ------------------------------------------------------------------------------------


def test_cheating_decoy_kernel_never_launched(tiny_reference, make_tiny_candidate, evaluate_source):
    candidate = make_tiny_candidate("return x.clone().relu()")
    result = evaluate_source(tiny_reference, candidate)
    _assert_failure_shape(result, Verdict.cheating)
    rules = [v.rule for v in result.anti_cheat.violations]
    assert "no_triton_launch" in rules
    assert all(v.severity.value == "fatal" for v in result.anti_cheat.violations)
    assert result.reward == -1.0  # the default cheat penalty
    assert result.rewards.correctness == 0.0
    assert "no_triton_launch" in result.feedback
    assert result.anti_cheat.triton_launches == 0


def test_cheating_in_place_kernel_returning_its_input(tiny_reference, make_tiny_candidate, evaluate_source):
    candidate = make_tiny_candidate(
        """
        launch_relu(x, x)
        return x
        """
    )
    result = evaluate_source(tiny_reference, candidate)
    _assert_failure_shape(result, Verdict.cheating)
    rules = {v.rule for v in result.anti_cheat.violations}
    assert rules & {"output_aliases_input", "input_mutation"}, rules
    assert result.reward == -1.0
    assert result.correctness.passed == 0


# --- infrastructure_error ------------------------------------------------------------------------


def test_infrastructure_error_missing_harness_python(tiny_reference, honest_tiny_candidate):
    result = evaluate(
        Problem(source=tiny_reference),
        Submission(source=honest_tiny_candidate),
        EvalConfig(device="cpu", trials=2),
        python="/nonexistent/python",
    )
    _assert_failure_shape(result, Verdict.infrastructure_error)
    assert result.reward == 0.0, "an infrastructure failure must not be penalised as cheating"
    assert result.status in ("completed", "failed")
    assert "/nonexistent/python" in result.error["message"]
    assert "not your fault" in result.feedback


def test_infrastructure_error_harness_python_without_torch(tiny_reference, honest_tiny_candidate, python_without_torch):
    result = evaluate(
        Problem(source=tiny_reference),
        Submission(source=honest_tiny_candidate),
        EvalConfig(device="cpu", trials=2, timeout_s=60),
        python=python_without_torch,
    )
    _assert_failure_shape(result, Verdict.infrastructure_error)
    assert result.reward == 0.0
    assert "reference" in result.error["message"]
    assert "torch" in result.error.get("reference_stderr", "")
    assert "not your fault" in result.feedback


def _open_fds() -> set[int]:
    gc.collect()
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def test_failed_harness_start_leaks_no_file_descriptors(tiny_reference, honest_tiny_candidate):
    """A worker that runs for days must not lose descriptors each time the harness cannot start.
    HarnessProcess.start creates three pipes; when Popen fails it closes only the child's ends."""
    before = _open_fds()
    for _ in range(3):
        result = evaluate(
            Problem(source=tiny_reference),
            Submission(source=honest_tiny_candidate),
            EvalConfig(device="cpu", trials=2),
            python="/nonexistent/python",
        )
        assert result.verdict == Verdict.infrastructure_error
    leaked = _open_fds() - before
    assert leaked == set(), f"{len(leaked)} file descriptors leaked by 3 failed harness starts"


def test_completed_evaluation_leaks_no_file_descriptors(tiny_reference, honest_tiny_candidate):
    before = _open_fds()
    result = evaluate(
        Problem(source=tiny_reference), Submission(source=honest_tiny_candidate), EvalConfig(device="cpu", trials=1)
    )
    assert result.verdict == Verdict.correct, (result.error, result.feedback)
    assert _open_fds() - before == set()


def test_malformed_output_description_from_the_candidate_is_not_an_infrastructure_error(
    tiny_reference, make_tiny_candidate, evaluate_source
):
    """The candidate's process encodes its outputs, and the candidate can patch that encoder. A
    description the reference cannot decode is the candidate's doing: it must never come back as
    infrastructure_error (which a trainer retries or drops instead of scoring), nor as correct."""
    candidate = make_tiny_candidate(
        """
        x = x.contiguous()
        return launch_relu(x, torch.empty_like(x))
        """,
        prelude="""
        _codec = sys.modules["harness.tensors"]
        _real_encode = _codec.encode


        def _forged_encode(value):
            description, data = _real_encode(value)
            if description.get("t") == "tensor":  # the outputs (inputs travel as a list)
                description = {**description, "dtype": "float8_forged"}
            return description, data


        _codec.encode = _forged_encode
        """,
    )
    result = evaluate_source(tiny_reference, candidate)
    assert result.verdict not in (Verdict.correct, Verdict.infrastructure_error), (result.verdict, result.error)
    assert result.reward <= 0.0


def test_patching_the_harness_in_its_own_process_does_not_silence_anti_cheat(
    tiny_reference, make_tiny_candidate, evaluate_source
):
    """The candidate runs in the same process as the harness role that reports on it. Replacing the
    role's helpers (here the torch-fallback classifier) must not turn a torch fallback into a pass:
    either the replacement is caught as tampering, or the check does not depend on it."""
    candidate = make_tiny_candidate(
        """
        out = torch.relu(x)  # the work, done by PyTorch
        launch_relu(out, out)  # a real launch on the returned buffer (a no-op: relu of relu)
        return out
        """,
        prelude="""
        _role = sys.modules["harness.candidate"]
        _role.compute_ops = lambda *args, **kwargs: []
        """,
    )
    result = evaluate_source(tiny_reference, candidate)
    assert result.verdict == Verdict.cheating, (result.verdict, [v.rule for v in result.anti_cheat.violations], result.feedback)
    assert {v.rule for v in result.anti_cheat.violations} & {"torch_fallback", "tampering"}
    assert result.reward < 0


def test_torch_fallback_without_patching_is_caught(tiny_reference, make_tiny_candidate, evaluate_source):
    """The control for the test above: the same forward without the patch is rejected."""
    candidate = make_tiny_candidate(
        """
        out = torch.relu(x)
        launch_relu(out, out)
        return out
        """
    )
    result = evaluate_source(tiny_reference, candidate)
    assert result.verdict == Verdict.cheating, (result.verdict, result.feedback)
    assert "torch_fallback" in {v.rule for v in result.anti_cheat.violations}
