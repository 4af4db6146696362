"""bench/scaling.py's Redis mode end to end on the CPU: a real redis-server, the API (`referee serve`)
and two `referee worker --gpu I` processes, fed by the benchmark's own closed-loop client.

No GPU is faked beyond what the CPU interpreter mode already does: `--gpu 0` and `--gpu 1` only set
CUDA_VISIBLE_DEVICES, which the CPU build of torch ignores, and both workers evaluate the tiny
problem with Triton's interpreter on the CPU. What this checks is the plumbing the GPU run relies
on: every submission gets exactly one result, each job is dequeued and finished exactly once
(RQ's worker logs), and both workers take jobs (RQ's counters agree with the logs)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.scaling import Options, run_scaling

SUBMISSIONS = 6


def test_redis_scaling_run_spreads_over_two_workers_each_job_once(tmp_path: Path, redis_binary: str) -> None:
    options = Options(
        out=tmp_path,
        queue="redis",
        problems="tiny",
        submissions=SUBMISSIONS,
        warmup=2,
        concurrency=1,
        redis_server=redis_binary,
        phase_timeout_s=120,
    )
    report = run_scaling(options, gpus=2, phases=[2])
    assert json.loads(Path(report["path"]).read_text())["phases"] == report["phases"]
    [phase] = report["phases"]
    assert phase["gpus"] == 2 and phase["warmup"]["verdicts"] == {"correct": 2}, phase
    assert phase["verdicts"] == {"correct": SUBMISSIONS} and phase["results"] == SUBMISSIONS and phase["unfinished"] == 0, phase
    assert phase["unique_ids"] == SUBMISSIONS, phase
    assert phase["dequeued_exactly_once"] == phase["finished_ok_exactly_once"] == SUBMISSIONS, phase
    assert phase["dequeued_more_than_once"] == 0, phase
    per_gpu = {gpu: counts["succeeded"] for gpu, counts in phase["jobs_per_gpu"].items()}
    assert set(per_gpu) == {"0", "1"} and sum(per_gpu.values()) == SUBMISSIONS and min(per_gpu.values()) >= 1, phase
    assert phase["dequeued_per_gpu"] == per_gpu, phase
    assert all(counts["failed"] == 0 for counts in phase["jobs_per_gpu"].values()), phase
    assert phase["evaluations_per_minute"] > 0 and phase["latency_s"]["p50"] > 0, phase
    # Where the time went, per harness step, and what the host's processes did meanwhile.
    assert phase["stage_ms_p50"]["candidate.setup"] > 0 and phase["stage_ms_p50"]["reference.compare"] > 0, phase
    assert phase["processes"]["samples"] > 0 and phase["processes"]["running_mean"] > 0, phase
