"""GPU data plane (docs/evidence.md): inputs shared by CUDA IPC from allocations of their own, the
candidate's outputs read where it left them, timed rounds checked, host memory independent of
tensor size. Run on a CUDA host with `bench/gpu_session.sh evidence` (deselected elsewhere by the
`gpu` marker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.worker.test_evidence import THROUGH_TRACEBACKS
from triton_referee.sandbox.harness import tensors
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EVIDENCE = ROOT / "tests" / "evidence"
PROBLEM = Problem(source=(ROOT / "tests" / "exploits" / "problem.py").read_text())
pytestmark = pytest.mark.gpu

# The candidate's side, in another process (a handle cannot be opened by the process that made it):
# open set A by its handle, report what it can reach and read.
_OPENER = """
import json, sys, torch
from triton_referee.sandbox.harness import tensors
request = json.loads(sys.stdin.read())
device = torch.device("cuda", 0)
torch.empty(1, device=device)
attached = tensors.Attached(device)
(x,) = attached.attach(request["description"], [], writable=True)
size, whole = attached.opened.open(request["description"]["items"][0]["ipc"])  # the same block, opened once
data = whole.cpu()
print(json.dumps({"size": size, "x_sum": float(x.double().sum()), "whole": data.numpy().tobytes().hex()}))
x.fill_(7.0)  # a write the reference must see through its own mapping
torch.cuda.synchronize()
"""


def test_a_shared_input_reaches_only_its_own_block() -> None:
    device = torch.device("cuda", 0)
    torch.manual_seed(0)
    set_a, set_b = [torch.randn(4096, device=device)], [torch.randn(4096, device=device)]
    expected_a = torch.relu(set_a[0])  # private: the caching allocator's, never exported
    shared_a, shared_b = tensors.SharedValue(set_a, device), tensors.SharedValue(set_b, device)
    child = subprocess.run(
        [sys.executable, "-c", _OPENER],
        input=json.dumps({"description": shared_a.description}),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.returncode == 0, child.stderr
    seen = json.loads(child.stdout.strip().splitlines()[-1])
    whole = bytes.fromhex(seen["whole"])
    assert seen["size"] == shared_a.block.nbytes  # the block of its own, nothing around it
    assert whole[: 4096 * 4] == set_a[0].cpu().numpy().tobytes() and set(whole[4096 * 4 :]) <= {0}
    for other in (expected_a, set_b[0]):
        assert other.cpu().numpy().tobytes()[:64] not in whole
    assert torch.equal(shared_a.views[0], torch.full_like(set_a[0], 7.0))  # the candidate's write is seen
    assert not torch.equal(set_a[0], shared_a.views[0])  # the pristine copy is not shared
    shared_a.release()
    shared_b.release()


# A candidate that keeps its mapping of set A open after the reference let A go: it must never see
# what the reference allocates afterwards (here a recognisable pattern filling new memory).
_KEEPER = """
import json, sys, time, torch
from triton_referee.sandbox.harness import tensors
request = json.loads(sys.stdin.readline())
device = torch.device("cuda", 0)
torch.empty(1, device=device)
attached = tensors.Attached(device)
(x,) = attached.attach(request["description"], [], writable=True)
size, whole = attached.opened.open(request["description"]["items"][0]["ipc"])
print("opened", flush=True)
sys.stdin.readline()  # the reference has freed A and filled new memory
data = whole.cpu()
print(json.dumps({"pattern_seen": bool((data.view(torch.float32) == 1234.5).any()), "nonzero": int((data != 0).sum())}), flush=True)
"""


def test_a_kept_mapping_sees_nothing_the_reference_allocates_later() -> None:
    device = torch.device("cuda", 0)
    shared = tensors.SharedValue([torch.randn(1 << 20, device=device)], device)
    child = subprocess.Popen(
        [sys.executable, "-c", _KEEPER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(json.dumps({"description": shared.description}) + "\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "opened"
    shared.release()
    torch.cuda.empty_cache()
    later = [torch.full((1 << 22,), 1234.5, device=device) for _ in range(8)]  # 128 MiB of the pattern
    torch.cuda.synchronize()
    child.stdin.write("go\n")
    child.stdin.flush()
    seen = json.loads(child.stdout.readline())
    child.wait(timeout=60)
    assert seen == {"pattern_seen": False, "nonzero": 0}, seen
    del later


def _evaluate(path: Path, config: EvalConfig | None = None):
    # As on the CPU (tests/worker/test_evidence.py): the audit hook refuses `tb_frame`, so the cases
    # that walk up from a traceback show their judge-side evidence without the hook.
    return evaluate(
        PROBLEM,
        Submission(source=path.read_text()),
        config or EvalConfig(device="cuda"),
        audit_hook=path.stem not in THROUGH_TRACEBACKS,
    )


@pytest.mark.parametrize("name", ["replay_within_ms", "replay_by_identity", "replay_through_traceback", "forged_reply_headers"])
def test_replays_are_caught_in_checked_rounds_on_the_gpu(name: str) -> None:
    result = _evaluate(EVIDENCE / f"{name}.py")
    rules = {v.rule for v in result.anti_cheat.violations}
    assert result.verdict == Verdict.cheating and "timed_output_mismatch" in rules, (result.verdict, rules, result.feedback)


@pytest.mark.parametrize("name", ["honest_call_clock", "honest_reused_buffer", "honest_traceback"])
def test_their_honest_neighbours_are_correct_and_timed(name: str) -> None:
    result = _evaluate(EVIDENCE / f"{name}.py")
    perf = result.performance
    assert result.verdict == Verdict.correct, result.feedback
    assert perf.speedup is not None and perf.timed_calls_checked >= perf.timed_rounds > 1
    assert perf.reference_timed_alone is True and perf.candidate_stopped_while_checked is True
    assert perf.timing_evidence in ("native_recorder", "harness_cuda_events (advisory)")


def _relu_problem(rows: int, cols: int) -> str:
    return (
        f"import torch\nimport torch.nn as nn\n\n\nclass Model(nn.Module):\n    def forward(self, x):\n"
        f"        return torch.relu(x)\n\n\ndef get_inputs():\n    return [torch.randn({rows}, {cols})]\n\n\n"
        f"def get_init_inputs():\n    return []\n"
    )


def _peak_rss_while(run) -> tuple[object, dict[str, int]]:
    """Run `run()` while sampling the resident memory of every harness process (by role)."""
    peaks: dict[str, int] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                    status = Path(f"/proc/{entry}/status").read_text()
                except OSError:
                    continue
                if b"--role" not in argv:
                    continue
                role = argv[argv.index(b"--role") + 1].decode()
                rss = sum(
                    int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith(("RssAnon:", "RssShmem:"))
                )
                peaks[role] = max(peaks.get(role, 0), rss)
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    try:
        result = run()
    finally:
        done.set()
        watcher.join()
    return result, peaks


def test_host_memory_does_not_grow_with_tensor_size() -> None:
    """ReLU at 16 MiB and at 4 GiB of input: the harness processes' resident memory differs by less
    than 256 MiB (tensors stay on the device; nothing is copied to the host)."""
    candidate = (EXAMPLES / "relu" / "candidate.py").read_text()
    peaks = {}
    for label, (rows, cols) in {"small": (64, 65536), "large": (16384, 65536)}.items():
        result, peaks[label] = _peak_rss_while(
            lambda rows=rows, cols=cols: evaluate(
                Problem(source=_relu_problem(rows, cols)), Submission(source=candidate), EvalConfig(device="cuda", input_sets=[])
            )
        )
        assert result.verdict == Verdict.correct, (label, result.feedback, result.error)
    print("peak resident bytes by role:", peaks)
    for role in ("reference", "candidate"):
        assert peaks["large"][role] - peaks["small"][role] < 256 << 20, peaks
