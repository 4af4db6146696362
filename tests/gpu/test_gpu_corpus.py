"""The whole anti-cheat corpus on a GPU: the CPU corpus (tests/exploits, tests/honest) plus the
GPU-only classes in tests/gpu/exploits and tests/gpu/honest (side streams, device-to-host copies),
in harness processes forked by a real warm pool (the production path; test_gpu_engine.py covers
fresh processes). Writes a table of every outcome to $REFEREE_RESULTS_DIR when set."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.worker.test_corpus import EXPLOITS, HONEST, PROBLEM, cpu_only, expected_rule
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Submission, Verdict
from triton_referee.worker.pool import PoolClient, WarmPool

GPU = Path(__file__).parent
# The CPU files that write or read the output through .numpy() are CPU classes (`# device: cpu`).
ALL_EXPLOITS = [p for p in EXPLOITS if not cpu_only(p)] + sorted((GPU / "exploits").glob("*.py"))
ALL_HONEST = [p for p in HONEST if not cpu_only(p)] + sorted((GPU / "honest").glob("*.py"))
# On a GPU the op witness (torch's profiler) is off: the native recorder holds CUPTI. Compute hidden
# from the dispatch mode is then caught by the recorder's share of GPU time in the submission's kernels.
GPU_RULES = {"torch_fallback": {"torch_fallback", "low_triton_time_fraction"}}
pytestmark = pytest.mark.gpu
ROWS: list[dict[str, object]] = []


@pytest.fixture(scope="module")
def gpu_pool() -> Iterator[PoolClient]:
    with WarmPool("cuda", spares=2, warm_target="auto") as pool:
        yield pool.client


def check(path: Path, pool: PoolClient):
    result = evaluate(PROBLEM, Submission(source=path.read_text()), EvalConfig(device="cuda", trials=2, timeout_s=120), pool=pool)
    ROWS.append(
        {
            "file": str(path.relative_to(GPU.parent)),
            "expected": expected_rule(path),
            "verdict": result.verdict.value,
            "rules": [v.rule for v in result.anti_cheat.violations],
            "triton_time_fraction": result.performance.triton_time_fraction,
            "speedup": result.performance.speedup,
            "wall_ms": result.timings_ms.total,
        }
    )
    return result


@pytest.fixture(scope="module", autouse=True)
def results_table():
    yield
    directory = os.environ.get("REFEREE_RESULTS_DIR")
    if directory:
        Path(directory, "gpu-corpus.json").write_text(json.dumps(ROWS, indent=1) + "\n")


@pytest.mark.parametrize("path", ALL_EXPLOITS, ids=lambda p: p.stem)
def test_exploit_is_rejected_on_gpu(path: Path, gpu_pool: PoolClient) -> None:
    expected = expected_rule(path)
    result = check(path, gpu_pool)
    rules = [v.rule for v in result.anti_cheat.violations]
    assert not result.correct, (result.verdict, rules)
    if expected.startswith("verdict="):
        assert result.verdict.value == expected.removeprefix("verdict="), (result.verdict, rules, result.feedback)
    else:
        accepted = GPU_RULES.get(expected, {expected})
        assert result.verdict == Verdict.cheating and accepted & set(rules), (result.verdict, rules, result.feedback)


@pytest.mark.parametrize("path", ALL_HONEST, ids=lambda p: p.stem)
def test_honest_kernel_is_accepted_on_gpu(path: Path, gpu_pool: PoolClient) -> None:
    result = check(path, gpu_pool)
    assert result.anti_cheat.violations == [], result.anti_cheat.violations
    assert result.verdict == Verdict.correct, result.feedback
    assert result.performance.meaningful and result.performance.triton_time_fraction is not None
    assert result.performance.triton_time_fraction >= 0.5
