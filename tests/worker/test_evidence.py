"""The judge owns the evidence (docs/evidence.md), on the CPU with Triton's interpreter, in processes
forked by the warm pool (the production path):

- every file in tests/evidence/ names on its first line what must happen to it: `# expect: RULE`
  (verdict `cheating` with that rule) or `# expect: accepted` (the honest neighbour of a cheat);
- nothing the candidate's process says (its reply headers, its statistics) changes a verdict or a
  timing figure;
- the reference is timed while the candidate's processes are stopped;
- a candidate holding its shared inputs reaches nothing else: no expected output, no other input set.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import TINY_REFERENCE
from triton_referee.sandbox.harness import shm, tensors
from triton_referee.sandbox.harness.messages import Compare, InputsCheck, ReferenceSetup, TrialInputs
from triton_referee.sandbox.harness.reference import ReferenceRole
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, EvaluationResult, Problem, Submission, Verdict

TESTS = Path(__file__).resolve().parents[1]  # the corpora are data folders of tests/
PROBLEM = Problem(source=(TESTS / "exploits" / "problem.py").read_text())
CASES = sorted((TESTS / "evidence").glob("*.py"))
_RESULTS: dict[Path, EvaluationResult] = {}


def _expected(path: Path) -> str:
    match = re.match(r"# expect: (\S+)", path.read_text())
    assert match, f"{path.name} must start with '# expect: RULE' or '# expect: accepted'"
    return match.group(1)


# Cases that reach frames through a traceback (`exc.__traceback__.tb_frame`, then `f_back`): the audit
# hook refuses that in process (forbidden_call, docs/anticheat.md), so the judge-side evidence they
# show is judged as the operator's REFEREE_UNSAFE_NO_AUDIT_HOOK switch runs them, without the hook.
THROUGH_TRACEBACKS = {"honest_traceback", "replay_through_traceback"}


def _evaluate(path: Path, pool: Any) -> EvaluationResult:
    if path not in _RESULTS:
        _RESULTS[path] = evaluate(
            PROBLEM,
            Submission(source=path.read_text()),
            EvalConfig(device="cpu", trials=2, timeout_s=90),
            pool=pool,
            audit_hook=path.stem not in THROUGH_TRACEBACKS,
        )
    return _RESULTS[path]


@pytest.mark.parametrize("name", sorted(THROUGH_TRACEBACKS))
def test_frames_reached_through_a_traceback_are_refused_in_process(name: str, warm_pool: Any) -> None:
    """With the audit hook (production) reading `tb_frame` is refused: a candidate cannot tell what a
    walk up from its own traceback is for, and it reaches the harness's frames; honest code formats
    tracebacks with the traceback module (tests/honest/traceback_formatting.py, accepted)."""
    result = evaluate(
        PROBLEM,
        Submission(source=(TESTS / "evidence" / f"{name}.py").read_text()),
        EvalConfig(device="cpu", trials=2, timeout_s=90),
        pool=warm_pool,
    )
    assert result.verdict == Verdict.cheating, result.feedback
    assert "forbidden_call" in [v.rule for v in result.anti_cheat.violations]


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_each_case_gets_its_named_outcome(path: Path, warm_pool: Any) -> None:
    result = _evaluate(path, warm_pool)
    rules = [v.rule for v in result.anti_cheat.violations]
    expected = _expected(path)
    if expected == "accepted":
        assert result.verdict == Verdict.correct, (result.verdict, rules, result.error, result.feedback)
        assert result.performance.timed_calls_checked > 0
        return
    assert result.verdict == Verdict.cheating and expected in rules, (result.verdict, rules, result.error, result.feedback)
    assert result.reward < 0


def test_forged_reply_headers_change_no_verdict_and_no_timing(warm_pool: Any) -> None:
    """The forger rewrote every reply its process sent: tiny per-call samples, statistics of 1 ns,
    no findings. The verdict comes from what the reference read, and the times from the engine's
    clock (on the CPU) and its own statistics."""
    result = _evaluate(TESTS / "evidence" / "forged_reply_headers.py", warm_pool)
    assert result.verdict == Verdict.cheating
    assert result.performance.timing_evidence == "judge_host_clock"
    honest = _evaluate(TESTS / "evidence" / "honest_call_clock.py", warm_pool)
    assert honest.performance.candidate_ms is not None and honest.performance.candidate_ms.median > 0.01
    assert honest.performance.speedup is None  # the interpreter: never a speed figure on the CPU


def test_the_reference_is_timed_while_the_candidate_is_stopped(warm_pool: Any) -> None:
    """Threads are refused on the CPU (busy_thread.py), but a signal handler on an interval timer
    runs whenever the candidate's process is idle, as when the reference is timed. Its process is
    stopped (SIGSTOP) before the reference is timed and before each timed round is checked: the
    kernel reported every member stopped."""
    result = _evaluate(TESTS / "evidence" / "busy_timer_signal.py", warm_pool)
    states = result.performance.candidate_state_while_reference_timed
    assert result.performance.reference_timed_alone is True
    assert states and set(states.values()) <= {"T", "t"}, states
    assert result.performance.candidate_stopped_while_checked is True


def test_a_fresh_process_candidate_is_stopped_too(tiny_reference: str, honest_tiny_candidate: str) -> None:
    result = evaluate(
        Problem(source=tiny_reference), Submission(source=honest_tiny_candidate), EvalConfig(device="cpu", trials=1)
    )
    assert result.verdict == Verdict.correct, result.feedback
    states = result.performance.candidate_state_while_reference_timed
    assert result.performance.reference_timed_alone is True and states and set(states.values()) <= {"T", "t"}, states


def test_a_candidate_maps_only_its_own_inputs(warm_pool: Any) -> None:
    """What the candidate process has mapped of shared memory, printed by it on every call: input
    buffers only (expected outputs are never in shared memory it is given)."""
    result = _evaluate(TESTS / "evidence" / "lists_shared_memory.py", warm_pool)
    assert result.verdict == Verdict.correct, result.feedback
    seen = [
        ast.literal_eval(line.removeprefix("SHARED "))
        for line in result.output["stdout"].splitlines()
        if line.startswith("SHARED ")
    ]
    assert seen and all(seen), result.output
    names = {name.split("memfd:")[1].split()[0] for mappings in seen for name in mappings}
    assert names == {"referee-inputs"}, names


def test_a_shared_input_reaches_no_expected_output_and_no_other_input_set(tmp_path: Path) -> None:
    """At the data plane: the memory behind the descriptors a trial hands the candidate holds that
    trial's inputs and nothing else (not its expected outputs, not another trial's inputs), and a
    candidate writing to it changes the reference's view (so mutation is seen) but never its pristine copy."""
    source = tmp_path / "problem.py"
    source.write_text(TINY_REFERENCE)
    role = ReferenceRole()
    _, setup_fds = role.cmd_setup(
        ReferenceSetup(path=str(source), source=TINY_REFERENCE, device="cpu", init_seed=1, input_sets=[{}]), []
    )
    for fd in setup_fds:
        os.close(fd)
    replies = {
        label: role.cmd_inputs(TrialInputs(trial=label, set_index=0, seed=seed), [])
        for label, seed in (("trial0", 11), ("trial1", 12))
    }
    secrets = {label: (role.trials[label][0][0], role.trials[label][2]) for label in replies}  # pristine input, expected
    (fd,) = replies["trial0"][1]
    whole = os.pread(fd, shm.size(fd), 0)  # everything the descriptor reaches
    x0, expected0 = secrets["trial0"]
    x1, expected1 = secrets["trial1"]
    assert whole[: x0.numel() * 4] == x0.numpy().tobytes() and set(whole[x0.numel() * 4 :]) <= {0}
    for other in (expected0, x1, expected1):
        needle = other.numpy().tobytes()[:64]
        assert needle not in whole
    # The candidate's view: writes reach the reference's shared copy, never its pristine one.
    attached = tensors.Attached(torch.device("cpu"))
    (x,) = attached.attach(replies["trial0"][0].inputs, [fd], writable=True)
    assert torch.equal(x, x0)
    x.zero_()
    compared, _ = role.cmd_compare(Compare(trial="trial0", outputs=None), [])
    assert compared.report.inputs == InputsCheck(unchanged=False, changed_inputs=[0])
    assert not torch.equal(x0, torch.zeros_like(x0))
    for _, descriptors in replies.values():
        for descriptor in descriptors:
            os.close(descriptor)


def test_outputs_must_be_sealed_shared_memory() -> None:
    """The reference maps a candidate's outputs only from a memfd sealed against writes (so they
    cannot change while compared), and only within the memory it names."""
    value = torch.arange(16, dtype=torch.float32)
    description, (sealed,) = tensors.export_outputs(value, torch.device("cpu"))
    attached = tensors.Attached(torch.device("cpu"))
    assert torch.equal(attached.attach(description, [sealed], sealed=True), value)
    unsealed = shm.create(64)
    with pytest.raises(tensors.EncodeError):
        attached.attach(description, [unsealed], sealed=True)
    with pytest.raises(tensors.EncodeError):
        attached.attach({**description, "shape": [64]}, [sealed], sealed=True)  # past its end
    read_end, write_end = os.pipe()
    with pytest.raises(tensors.EncodeError):
        attached.attach(description, [read_end], sealed=True)
    for fd in (sealed, unsealed, read_end, write_end):
        os.close(fd)


def test_a_candidate_over_its_memory_budget_is_told_the_budget_and_its_use(tiny_reference: str, make_tiny_candidate: Any) -> None:
    """The harness holds no copy of a tensor beyond its inputs, so a candidate killed for memory held
    it itself: the verdict is the candidate's (runtime_error), and the error names the budget and
    what was held, and whose process it was."""
    from triton_referee.sandbox.isolation import Limits, ProcessIsolation

    budget = 1 << 30
    hog = make_tiny_candidate(
        """
        held = torch.ones(3 << 27)  # 1.5 GiB
        time.sleep(3)
        return launch_relu(x.contiguous(), torch.empty_like(x)) + 0 * held[0]
        """,
        prelude="\nimport time\n",
    )
    result = evaluate(
        Problem(source=tiny_reference),
        Submission(source=hog),
        EvalConfig(device="cpu", trials=1),
        isolation=ProcessIsolation(limits=Limits(memory_bytes=budget)),
    )
    assert result.verdict == Verdict.runtime_error, (result.verdict, result.error)
    memory = result.error["memory_budget"]
    assert memory["budget_bytes"] == budget and memory["used_bytes"] > budget and memory["whose"] == "candidate", memory
    assert "1024 MiB" in result.error["message"]


def test_the_references_memory_is_never_blamed_on_the_candidate(honest_tiny_candidate: str) -> None:
    """A reference over the budget is the judge's own failure: infrastructure_error, with the number."""
    from triton_referee.sandbox.isolation import Limits, ProcessIsolation

    hungry = TINY_REFERENCE.replace(
        "return torch.relu(x)",
        "held = torch.ones(3 << 27)\n        import time; time.sleep(3)\n        return torch.relu(x) + 0 * held[0]",
    )
    assert hungry != TINY_REFERENCE
    result = evaluate(
        Problem(source=hungry),
        Submission(source=honest_tiny_candidate),
        EvalConfig(device="cpu", trials=1),
        isolation=ProcessIsolation(limits=Limits(memory_bytes=1 << 30)),
    )
    assert result.verdict == Verdict.infrastructure_error, (result.verdict, result.error)
    memory = result.error["memory_budget"]
    assert memory["whose"] == "reference" and memory["used_bytes"] > memory["budget_bytes"] == 1 << 30


@pytest.mark.parametrize("backend", ["unshare", "bwrap"])
def test_the_data_plane_and_the_stop_work_in_namespaces(backend: str, tiny_reference: str, honest_tiny_candidate: str) -> None:
    """Shared memory crosses into new pid/ipc/mount namespaces (descriptors, not names), and the
    engine stops a namespaced candidate's processes, warm pool or fresh (docker: tests/security)."""
    from triton_referee.sandbox.isolation import BwrapIsolation, UnshareIsolation
    from triton_referee.worker.pool import WarmPool

    isolation = UnshareIsolation() if backend == "unshare" else BwrapIsolation()
    problem, candidate, config = (
        Problem(source=tiny_reference),
        Submission(source=honest_tiny_candidate),
        EvalConfig(device="cpu", trials=1),
    )
    with WarmPool("cpu", isolation=isolation, spares=1) as pool:
        pooled = evaluate(problem, candidate, config, pool=pool.client)
    fresh = evaluate(problem, candidate, config, isolation=isolation)
    for result in (pooled, fresh):
        states = result.performance.candidate_state_while_reference_timed
        assert result.verdict == Verdict.correct, (result.error, result.feedback)
        assert result.performance.reference_timed_alone is True and states and set(states.values()) <= {"T", "t"}, states
        assert result.performance.candidate_stopped_while_checked is True


def test_a_strided_description_stays_inside_the_memory_it_names() -> None:
    """What the reference checks in a description the candidate sends (by IPC handle on the GPU:
    here the same check on host bytes, since no GPU is needed to check the arithmetic)."""
    from triton_referee.sandbox.harness.tensors import _view

    memory = torch.arange(64, dtype=torch.uint8)
    good = {"t": "tensor", "dtype": "float32", "shape": [2, 3], "offset": 8, "strides": [4, 1], "ipc": "x"}
    view = _view(good, memory)
    assert view.shape == (2, 3) and view.stride() == (4, 1)
    assert torch.equal(view.reshape(-1).view(torch.uint8)[:4], memory[8:12])
    for change in (
        {"offset": 60},
        {"offset": 6},
        {"strides": [-4, 1]},
        {"strides": [4]},
        {"shape": [2, -3]},
        {"strides": [100, 1]},
        {"shape": [4, 4], "strides": [4, 1], "offset": 4},
    ):
        with pytest.raises(tensors.EncodeError):
            _view({**good, **change}, memory)


def test_a_large_problem_gets_fewer_trials_and_one_timing_set(
    monkeypatch: pytest.MonkeyPatch, tiny_reference: str, honest_tiny_candidate: str
) -> None:
    """The size threshold lowered to the tiny problem's (4 kB of input, 4 kB of output): by default
    3 trials instead of 5 (still every input set) and one timing set; what a request asks for is kept."""
    import triton_referee.worker.evaluation_state as state

    monkeypatch.setattr(state, "LARGE_TRIAL_BYTES", 1000)
    problem, candidate = Problem(source=tiny_reference), Submission(source=honest_tiny_candidate)
    large = evaluate(problem, candidate, EvalConfig(device="cpu"))
    assert large.verdict == Verdict.correct, large.feedback
    ranges = len(large.correctness.value_ranges)  # one more trial per adversarial value range (judging.md)
    assert large.correctness.trials == 3 + ranges and large.performance.timed_calls_checked == 2  # 2 rounds x 1 set
    asked = evaluate(problem, candidate, EvalConfig(device="cpu", trials=4, timing_sets=2))  # asked for: kept
    assert asked.correctness.trials == 4 + ranges and asked.performance.timed_calls_checked == 4
