"""GPU tests: run on a CUDA host with `bench/gpu_session.sh` (they are deselected elsewhere by the
`gpu` marker, never skipped to get green)."""

from __future__ import annotations

from pathlib import Path

import pytest

from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.gpu


def _check(problem: str, candidate: str = "candidate.py"):
    return evaluate(
        Problem(source=(EXAMPLES / problem / "reference.py").read_text()),
        Submission(source=(EXAMPLES / problem / candidate).read_text()),
        EvalConfig(device="cuda"),
    )


@pytest.mark.parametrize("problem", ["relu", "softmax", "matmul", "linear_gelu"])
def test_honest_examples_are_correct_and_timed(problem: str) -> None:
    result = _check(problem)
    assert result.verdict == Verdict.correct, result.feedback
    assert result.environment.interpreter is False
    perf = result.performance
    assert perf.meaningful and perf.method == "cuda_events+l2_flush"
    assert perf.candidate_ms is not None and perf.candidate_ms.n >= 20
    assert perf.speedup is not None and perf.speedup > 0
    assert perf.speedup_ci95 is not None and perf.speedup_ci95[0] <= perf.speedup <= perf.speedup_ci95[1]
    assert result.reward == pytest.approx(perf.speedup)


def test_compile_error_is_reported_as_such_on_gpu() -> None:
    result = _check("relu", "candidate_compile_error.py")
    assert result.verdict == Verdict.compile_error
    assert "slope" in result.feedback


def test_harness_processes_get_one_hardware_queue_fresh_and_pooled() -> None:
    """CUDA_DEVICE_MAX_CONNECTIONS=1 (worker/process.py) reaches both a fresh harness process and a
    warm-pool spare, which made its context before it was assigned (under the zygote's environment)."""
    from triton_referee.worker.pool import WarmPool

    problem = Problem(source=(EXAMPLES / "relu" / "reference.py").read_text())
    candidate = (
        "import os\nprint('connections:', os.environ.get('CUDA_DEVICE_MAX_CONNECTIONS'), "
        "open('/proc/self/environ', 'rb').read().count(b'CUDA_DEVICE_MAX_CONNECTIONS=1'))\n"
        + (EXAMPLES / "relu" / "candidate.py").read_text()
    )
    fresh = evaluate(problem, Submission(source=candidate), EvalConfig(device="cuda"))
    with WarmPool("cuda", spares=2) as pool:
        pooled = evaluate(problem, Submission(source=candidate), EvalConfig(device="cuda"), pool=pool.client)
    for result in (fresh, pooled):
        assert result.verdict == Verdict.correct, result.feedback
        # /proc/self/environ is what the process was started with: for a spare, the zygote's environment
        assert "connections: 1 1" in result.output.get("stdout", ""), result.output


STOPS_THE_RECORDER = """
import sys
import torch
import torch.nn as nn
import triton
import triton.language as tl


@triton.jit
def affine_relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(out_ptr + offs, tl.maximum(tl.load(x_ptr + offs, mask=mask), 0.0) * 2 + 1, mask=mask)


class ModelNew(nn.Module):
    calls = 0

    def forward(self, x):
        ModelNew.calls += 1
        if ModelNew.calls == STOP_AT:  # into the timed rounds: stop the native recorder, keep working
            for name, module in list(sys.modules.items()):
                recorder = getattr(module, "_active", None)
                if name.endswith("native") and recorder is not None and hasattr(recorder, "stop"):
                    recorder.stop()
        out = torch.empty_like(x)
        n = x.numel()
        affine_relu_kernel[(triton.cdiv(n, 1024),)](x, out, n, BLOCK=1024)
        return out
"""


@pytest.mark.parametrize("stop_at", [10**9, 150], ids=["honest", "stops-the-recorder"])
def test_a_candidate_that_stops_the_native_recorder_gets_no_speed_credit(stop_at: int) -> None:
    """Once the recorder has said hello, records that stop adding up leave only the candidate's own
    CUDA events, which are a claim: the result is judged on correctness and the speed is not
    credited (worker/timed_rounds.py). The honest neighbour (the same kernel, never stopping the
    recorder) is timed from the native records."""
    problem = Problem(source=(Path(__file__).resolve().parents[1] / "exploits" / "problem.py").read_text())
    source = STOPS_THE_RECORDER.replace("STOP_AT", str(stop_at))
    result = evaluate(problem, Submission(source=source), EvalConfig(device="cuda"))
    perf = result.performance
    if stop_at > 10**6:
        assert result.verdict == Verdict.correct, result.feedback
        assert perf.meaningful and perf.timing_evidence == "native_recorder", (perf.timing_evidence, perf.note)
        return
    # Caught in-process (defence in depth) or judged without speed: never a credited speedup.
    assert result.verdict in (Verdict.correct, Verdict.cheating), result.feedback
    if result.verdict == Verdict.correct:
        assert not perf.meaningful and perf.speedup is None, (perf.timing_evidence, perf.note)
        assert perf.note and "native records unusable" in perf.note
        assert result.reward <= 1.0


def test_the_cli_check_judges_an_example_in_its_locked_down_processes() -> None:
    """`referee check` as a user runs it: a fresh CLI process whose harness processes lock themselves
    down (the backend `auto` picks) before Triton looks for libcuda (harness/__main__.py)."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "triton_referee.service.cli",
            "check",
            "--json",
            str(EXAMPLES / "relu" / "reference.py"),
            str(EXAMPLES / "relu" / "candidate.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=EXAMPLES.parent,
    )
    document = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and document["verdict"] == "correct", (document.get("error"), done.stderr[-2000:])
    assert document["environment"]["confinement"], document["environment"]
