"""One test (or a few) per verdict kind, through the real engine: two harness processes, Triton's
interpreter on the CPU, the authenticated channel and the trusted comparator."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import pytest

from sandbox.evaluate import evaluate
from sandbox.models import EvalConfig, Problem, Submission, Verdict


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
    assert result.correctness.passed == result.correctness.trials == 2
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


def _live_members(pgid: int) -> list[int]:
    """Processes of group `pgid` that are still running (zombies awaiting a reaper do not count)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        state, process_group = fields[0], int(fields[2])
        if process_group == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return members


def test_timeout_kills_the_whole_process_group(tiny_reference, make_tiny_candidate, tmp_path):
    pid_file = tmp_path / "pids.txt"
    candidate = make_tiny_candidate(
        """
        while True:
            pass
        """,
        prelude=f"""
        import subprocess

        _sleeper = subprocess.Popen(["sleep", "300"])
        with open({str(pid_file)!r}, "w") as _f:
            _f.write(f"{{os.getpid()}} {{os.getpgid(0)}} {{_sleeper.pid}}")
        """,
    )
    timeout_s = 15.0
    started = time.monotonic()
    result = evaluate(Problem(source=tiny_reference), Submission(source=candidate),
                      EvalConfig(device="cpu", trials=2, timeout_s=timeout_s))
    elapsed = time.monotonic() - started
    _assert_failure_shape(result, Verdict.timeout)
    assert result.reward == 0.0
    assert elapsed < timeout_s + 10, f"the evaluation took {elapsed:.1f} s for a {timeout_s:g} s limit"
    assert elapsed >= timeout_s - 1, "the candidate should have been given its whole time budget"
    assert "Timed out" in result.feedback

    harness_pid, pgid, sleeper_pid = (int(v) for v in pid_file.read_text().split())
    assert pgid == harness_pid, "the candidate harness should lead its own process group"
    assert pgid != os.getpgid(0)
    deadline = time.monotonic() + 5
    while _live_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _live_members(pgid) == [], "processes of the candidate's group survived the timeout"
    assert sleeper_pid not in _live_members(pgid)


# --- invalid_submission --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "source", "message"),
    [
        ("no ModelNew", "import triton\n\n@triton.jit\ndef k(x):\n    pass\n\nclass Model:\n    pass\n", "ModelNew"),
        ("no jit", "import torch\n\nclass ModelNew(torch.nn.Module):\n    def forward(self, x):\n        return x.relu()\n",
         "triton.jit"),
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
    result = evaluate(Problem(source=tiny_reference), Submission(source=honest_tiny_candidate),
                      EvalConfig(device="cpu", trials=2), python="/nonexistent/python")
    _assert_failure_shape(result, Verdict.infrastructure_error)
    assert result.reward == 0.0, "an infrastructure failure must not be penalised as cheating"
    assert result.status in ("completed", "failed")
    assert "/nonexistent/python" in result.error["message"]
    assert "not your fault" in result.feedback


def test_infrastructure_error_harness_python_without_torch(tiny_reference, honest_tiny_candidate, python_without_torch):
    result = evaluate(Problem(source=tiny_reference), Submission(source=honest_tiny_candidate),
                      EvalConfig(device="cpu", trials=2, timeout_s=60), python=python_without_torch)
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
        result = evaluate(Problem(source=tiny_reference), Submission(source=honest_tiny_candidate),
                          EvalConfig(device="cpu", trials=2), python="/nonexistent/python")
        assert result.verdict == Verdict.infrastructure_error
    leaked = _open_fds() - before
    assert leaked == set(), f"{len(leaked)} file descriptors leaked by 3 failed harness starts"


def test_completed_evaluation_leaks_no_file_descriptors(tiny_reference, honest_tiny_candidate):
    before = _open_fds()
    result = evaluate(Problem(source=tiny_reference), Submission(source=honest_tiny_candidate),
                      EvalConfig(device="cpu", trials=1))
    assert result.verdict == Verdict.correct, (result.error, result.feedback)
    assert _open_fds() - before == set()
