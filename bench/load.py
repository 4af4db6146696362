"""Load: N submissions through the HTTP API (uvicorn, real Redis, several `referee worker`s), every
one processed exactly once.

What the items are (see RELIABILITY.md): `--real` of them are full evaluations of the tiny y = 2x
problem (two harness processes, Triton's interpreter, verdict `correct`); the rest are distinct
candidates without a `@triton.jit` kernel, which the worker's engine rejects statically (verdict
`invalid_submission`, no harness process). Every item is one POST /v1/evaluations, one RQ job, one
work horse, one stored result: only the harness run is skipped for the static ones.

"Run once" is read from RQ's own worker logs: one "Worker W: QUEUE: evaluation ID (ID)" line per
dequeue (per attempt) and one "Job OK (ID)" per success, for every id.

    python -m bench.load [--submissions 2000] [--real 20] [--workers 3] [--out bench/results/X.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.lib import describe_machine, percentile, write_result
from bench.problems import static_reject, tiny
from triton_referee.service.stack import ApiServer, RedisServer, Worker, executions, live_workers, wait_for

FAST = {"trials": 1, "timing_sets": 1, "max_timing_seconds": 0.05}
REFERENCE, CANDIDATE = tiny().reference, tiny().candidate


def items(submissions: int, real: int, tag: str) -> list[dict[str, Any]]:
    """Distinct bodies (none deduplicated); the real ones spread evenly through the stream."""
    step = max(1, submissions // max(1, real))
    bodies = []
    for i in range(submissions):
        if real and i % step == 0 and i // step < real:
            bodies.append({"reference": REFERENCE, "candidate": CANDIDATE + f"\n# {tag} {i}\n", **FAST})
        else:
            bodies.append({"reference": REFERENCE, "candidate": static_reject(f"{tag} {i}")})
    return bodies


def run_load(
    workdir: Path, submissions: int, real: int, workers: int, concurrency: int = 16, deadline_s: float = 1800
) -> dict[str, Any]:
    """Start Redis, the API and the workers; submit; wait for every result; return the figures."""
    key = "load-" + uuid.uuid4().hex
    queue = "load-" + uuid.uuid4().hex[:8]
    redis_server = RedisServer(workdir / "redis", aof=True).start()
    env = {
        "REFEREE_API_KEYS": key,
        "REFEREE_QUEUE_NAME": queue,
        "REFEREE_MAX_QUEUED_PER_KEY": str(submissions + 10),
        "REFEREE_MAINTENANCE_INTERVAL_S": "1",
    }
    api = ApiServer(redis_server.url, workdir / "api.log", env=env).start()
    pool = [Worker(redis_server.url, queue, workdir / f"worker-{n}.log").start() for n in range(workers)]
    try:
        wait_for(lambda: live_workers(redis_server.url, queue) >= workers, 120, f"{workers} workers")
        pids = [w.process.pid for w in pool if w.process is not None]
        bodies = items(submissions, real, uuid.uuid4().hex)
        latencies: list[float] = [0.0] * len(bodies)
        ids: list[str] = [""] * len(bodies)
        http = httpx.Client(
            base_url=api.url, headers={"X-API-Key": key}, timeout=60, limits=httpx.Limits(max_connections=concurrency)
        )

        def submit(index: int) -> None:
            started = time.perf_counter()
            response = http.post("/v1/evaluations", json=bodies[index])
            latencies[index] = time.perf_counter() - started
            assert response.status_code == 202, response.text
            ids[index] = response.json()["id"]

        started = time.monotonic()
        with ThreadPoolExecutor(concurrency) as threads:
            list(threads.map(submit, range(len(bodies))))
        submit_s = time.monotonic() - started
        assert len(set(ids)) == len(ids), "two submissions got one id"

        # Collect every result (the API reads them in pages of its own choosing: GET one by one here).
        results: dict[str, dict[str, Any]] = {}

        def poll() -> bool:
            for evaluation_id in [i for i in ids if i not in results]:
                view = http.get(f"/v1/evaluations/{evaluation_id}").json()
                if "verdict" in view:
                    results[evaluation_id] = view
            return len(results) == len(ids)

        wait_for(poll, deadline_s, "every result", interval=2.0)
        drained_s = time.monotonic() - started
        http.close()
        worker_alive = [w.process is not None and w.process.poll() is None for w in pool]
        # The service collects RQ's job once its result is stored; give the logs a moment to flush.
        time.sleep(1.0)
        dequeued, finished = executions(w.text() for w in pool)
        connection = redis.Redis.from_url(redis_server.url)
        stored = sum(connection.exists(f"referee:result:{i}") for i in ids)
        pending = connection.scard("referee:pending")
        connection.close()
    finally:
        for w in pool:
            w.stop()
        api.stop()
        redis_server.kill()
    verdicts: dict[str, int] = {}
    for result in results.values():
        verdicts[result["verdict"]] = verdicts.get(result["verdict"], 0) + 1
    expected = {"correct": real, "invalid_submission": submissions - real} if real else {"invalid_submission": submissions}
    return {
        "submissions": submissions,
        "real_evaluations": real,
        "static_rejections": submissions - real,
        "workers": workers,
        "concurrency": concurrency,
        "accepted": len(ids),
        "results": len(results),
        "stored_results": stored,
        "left_pending": pending,
        "verdicts": verdicts,
        "verdicts_as_expected": verdicts == expected,
        "dequeued_once": sum(dequeued[i] == 1 for i in ids),
        "dequeued_more_than_once": sum(dequeued[i] > 1 for i in ids),
        "never_dequeued": sum(dequeued[i] == 0 for i in ids),
        "finished_ok_once": sum(finished[i] == 1 for i in ids),
        "workers_alive_at_end": sum(worker_alive),
        "worker_pids": pids,
        "enqueue_latency_ms": {
            "p50": round(percentile(latencies, 50) * 1e3, 2),
            "p99": round(percentile(latencies, 99) * 1e3, 2),
            "max": round(max(latencies) * 1e3, 2),
        },
        "submit_s": round(submit_s, 2),
        "all_results_s": round(drained_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--submissions", type=int, default=2000)
    parser.add_argument("--real", type=int, default=20)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="referee-load-") as folder:
        figures = run_load(Path(folder), args.submissions, args.real, args.workers, args.concurrency)
    report = {"benchmark": "load", "machine": describe_machine(), "date": time.strftime("%Y-%m-%d"), **figures}
    print(json.dumps(report, indent=1))
    if args.out:
        write_result(args.out, report)


if __name__ == "__main__":
    main()
