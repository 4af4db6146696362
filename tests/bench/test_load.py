"""The load run of bench/load.py, smaller: every submission through HTTP, Redis and several real
workers is processed, none lost and none dequeued twice (read from RQ's worker logs)."""

from __future__ import annotations

from pathlib import Path

from bench.load import run_load


def test_two_hundred_submissions_each_processed_exactly_once(tmp_path: Path, redis_binary: str) -> None:
    figures = run_load(tmp_path, submissions=200, real=2, workers=2, concurrency=8, deadline_s=300)
    assert figures["accepted"] == figures["results"] == figures["stored_results"] == 200, figures
    assert figures["verdicts"] == {"correct": 2, "invalid_submission": 198}, figures
    assert figures["dequeued_once"] == figures["finished_ok_once"] == 200 and figures["left_pending"] == 0, figures
    assert figures["workers_alive_at_end"] == 2, figures
