"""Speedup stability on one GPU while the host's other GPUs are busy (issue 9).

The same honest kernel is evaluated `--runs` times (5), one at a time, on GPU 0 for each of the
three large problems of bench/performance.py's stability phase (bench.problems.large_problems:
ReLU on 64 M fp32, softmax 8192x4096, matmul 2048^3; with its options, STABILITY_OPTIONS) — first
with the other GPUs idle, then while they run a throughput load of small problems — and the
coefficient of variation of the speedup is reported both ways, with the shift of the mean.

Layout: one redis-server, two independent services on it (Redis databases 0 and 1, each with its
own queue and `referee serve`): the probe, `referee worker --gpu 0`, and the load, one
`referee worker --gpu I --concurrency K` for each other GPU, fed by bench/scaling.py's closed-loop
client (K + 1 in flight per GPU, unique submissions). Both are started, and ready, before anything
is measured. Problem by problem (cheapest first, so a run cut short still has whole pairs): the
idle runs; then the load is started, and once it has completed as many evaluations as the loaded
GPUs have worker slots, the loaded runs; then the load is stopped (its evaluations in flight
finish) before the next problem. Each problem's first idle run times the reference; every later
run uses the cached reference timing, as in production and in bench/performance.py. The results
file is written after every problem.

    python3 -m bench.cv_under_load --out DIR [--runs 5] [--problems relu_64M,softmax_8192x4096,matmul_2048]
    python3 -m bench.cv_under_load --out DIR --gpus 2 --smoke --runs 2   # CPU dry run of the plumbing (no speedups)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from bench.lib import card_name, describe_machine, slug, write_result
from bench.performance import STABILITY_OPTIONS, stability_run, stability_summary
from bench.problems import BenchProblem, large_problems, tiny
from bench.scaling import Record, drive, gpu_count, host_use, problem_set, redis_binary
from triton_referee.service.stack import RedisServer, ServiceStack, wait_for


def probe_problems(smoke: bool, names: str) -> tuple[list[BenchProblem], dict[str, Any]]:
    """The large problems (by name, default all) and their options; in a smoke run the tiny problem."""
    if smoke:
        # two "problems", so the smoke run also stops the load and starts it again
        return (
            [BenchProblem(f"tiny_double_{n}", tiny().reference, tiny().candidate) for n in (1, 2)],
            {"trials": 1, "timing_sets": 1, "max_timing_seconds": 0.05},
        )
    problems = large_problems()
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        unknown = set(wanted) - {p.name for p in problems}
        if unknown:
            raise SystemExit(f"unknown problems {sorted(unknown)}; choose from {[p.name for p in problems]}")
        return [next(p for p in problems if p.name == name) for name in wanted], dict(STABILITY_OPTIONS)
    cheapest_first = ["matmul_2048", "softmax_8192x4096", "relu_64M"]  # ~4, ~12 and ~23 s an evaluation on an H100
    return sorted(problems, key=lambda p: cheapest_first.index(p.name) if p.name in cheapest_first else -1), dict(
        STABILITY_OPTIONS
    )


def evaluate_once(http: httpx.Client, problem: BenchProblem, options: dict[str, Any]) -> dict[str, Any]:
    started = time.monotonic()
    response = http.post("/v1/evaluations", params={"wait": 600}, json={**problem.submission(uuid.uuid4().hex), **options})
    response.raise_for_status()
    result = response.json()
    while "verdict" not in result and time.monotonic() - started < 1200:
        result = http.get(f"/v1/evaluations/{result['id']}", params={"wait": 600}).json()
    run = stability_run(time.monotonic() - started, result)
    run["engine_s"] = round((result.get("timings_ms") or {}).get("total", 0) / 1e3, 2)
    run["lock_wait_ms"] = (result.get("performance") or {}).get("lock_wait_ms")
    return run


class Load:
    """The closed-loop throughput load on the other GPUs, started and stopped around each loaded phase."""

    def __init__(self, url: str, make: Any, in_flight: int) -> None:
        self.url, self.make, self.in_flight = url, make, in_flight
        self.records: list[Record] = []
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.offset = 0

    def start(self, warm: int) -> float:
        """Start it; return once `warm` of its evaluations have completed (the seconds that took)."""
        started = time.monotonic()
        self.stop_event = threading.Event()
        first, self.offset = self.offset, self.offset + 1_000_000  # fresh nonces each time
        self.thread = threading.Thread(
            target=drive,
            daemon=True,
            kwargs={
                "urls": [self.url],
                "make": lambda i: self.make(first + i),
                "in_flight": self.in_flight,
                "stop": self.stop_event,
                "deadline_s": 3600,
                "records": self.records,
            },
        )
        self.thread.start()
        wait_for(
            lambda: sum(1 for r in list(self.records) if r.done > started and r.result.get("verdict")) >= warm,
            300,
            f"{warm} load evaluations",
            interval=0.5,
        )
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop submitting and wait for the evaluations in flight."""
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=300)
            self.thread = None

    def done_between(self, start: float, end: float) -> list[Record]:
        return [r for r in list(self.records) if r.done and start <= r.done <= end]


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out = stability_summary(runs)
    speedups = [r["speedup"] for r in runs if r["speedup"]]
    candidate = [r["candidate_ms"] for r in runs if r["candidate_ms"]]
    out["mean_speedup"] = round(statistics.mean(speedups), 5) if speedups else None
    out["mean_candidate_ms"] = round(statistics.mean(candidate), 6) if candidate else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs to use, at least 2 (default: every GPU nvidia-smi lists)")
    parser.add_argument("--runs", type=int, default=5, help="evaluations of each problem, idle and loaded")
    parser.add_argument("--problems", default="", help="comma-separated subset of the large problems (default: all three)")
    parser.add_argument("--concurrency", type=int, default=4, help="referee worker --concurrency, probe and load workers")
    parser.add_argument(
        "--in-flight", type=int, default=0, help="load submissions outstanding per loaded GPU (default: concurrency + 1)"
    )
    parser.add_argument(
        "--load-warmup",
        type=int,
        default=-1,
        help="load evaluations completed, each time the load starts, "
        "before the loaded runs (default: one per loaded worker slot)",
    )
    parser.add_argument("--redis-server", default=None, help="redis-server binary (default: .redis/redis-server, then PATH)")
    parser.add_argument("--isolation", default=None, help="REFEREE_ISOLATION for the workers (default: auto)")
    parser.add_argument("--smoke", action="store_true", help="the tiny problem on the CPU interpreter, to try the plumbing")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stacks on the way out
    detected = gpu_count()
    gpus = args.gpus or detected
    if gpus < 2:
        raise SystemExit(f"needs at least 2 GPUs (nvidia-smi lists {detected}; --gpus N for a --smoke run on the CPU)")
    if detected and gpus > detected:
        raise SystemExit(f"--gpus {gpus} but nvidia-smi lists {detected}")
    problems, options = probe_problems(args.smoke, args.problems)
    _, load_body = problem_set("tiny" if args.smoke else "small")
    binary = redis_binary(args.redis_server)
    args.out.mkdir(parents=True, exist_ok=True)
    load_gpus = list(range(1, gpus))
    in_flight = len(load_gpus) * (args.in_flight or args.concurrency + 1)
    load_warmup = args.load_warmup if args.load_warmup >= 0 else len(load_gpus) * args.concurrency
    card = card_name()
    report: dict[str, Any] = {
        "card": card,
        "gpus": gpus,
        "date": datetime.date.today().isoformat(),
        "host": describe_machine(),
        "isolation": args.isolation or os.environ.get("REFEREE_ISOLATION") or "auto",
        "method": (
            "the same honest kernel evaluated --runs times, one at a time, on GPU 0 (its own referee worker, "
            f"--concurrency {args.concurrency}) for each problem, with bench/performance.py's stability options; first with "
            "the other GPUs idle, then while each other GPU's worker runs a closed-loop throughput load of unique small "
            "submissions. The reference is timed in each problem's first idle run and cached after (as in production)."
        ),
        "probe_gpu": 0,
        "load_gpus": load_gpus,
        "runs_per_problem": args.runs,
        "options": options,
        "load": {
            "problems": "tiny" if args.smoke else "small",
            "in_flight": in_flight,
            "workers_per_gpu": args.concurrency,
            "warmup_evaluations": load_warmup,
        },
        "order": [p.name for p in problems],
        "problems": {},
    }
    path = args.out / f"cv-under-load-{slug(card)}-x{gpus}-{report['date']}.json"

    def save() -> None:
        write_result(path, report)

    scratch = Path(tempfile.mkdtemp(prefix="referee-cv-load-"))
    logs = args.out / "cv-under-load-logs"
    redis_server = RedisServer(scratch / "redis", binary=binary)
    stacks: list[ServiceStack] = []
    load: Load | None = None
    try:
        redis_server.start()
        base_url = redis_server.url.rsplit("/", 1)[0]
        for name, db, stack_gpus in (("probe", 0, [0]), ("load", 1, load_gpus)):
            env = {
                "REFEREE_REFERENCE_CACHE_DIR": str(scratch / f"{name}-reference-cache"),
                "REFEREE_LOCK_DIR": str(scratch / "locks"),
            }
            if args.isolation:
                env["REFEREE_ISOLATION"] = args.isolation
            stacks.append(ServiceStack(f"{base_url}/{db}", stack_gpus, args.concurrency, logs / name, env=env))
        started = time.monotonic()
        errors: list[BaseException] = []

        def start(stack: ServiceStack) -> None:
            try:
                stack.start()
            except BaseException as exc:
                errors.append(exc)

        starters = [threading.Thread(target=start, args=(stack,)) for stack in stacks]
        for thread in starters:
            thread.start()
        for thread in starters:
            thread.join()
        if errors:
            raise errors[0]
        probe_stack, load_stack = stacks
        report["stacks_start_s"] = round(time.monotonic() - started, 2)
        print(f"probe on GPU 0 and load on GPUs {load_gpus} up in {report['stacks_start_s']} s", flush=True)
        tag = uuid.uuid4().hex[:12]
        load = Load(load_stack.url, lambda i: load_body(i, f"load-{tag}-{i}"), in_flight)
        http = httpx.Client(base_url=probe_stack.url, timeout=1300)

        def runs_of(problem: BenchProblem, label: str) -> dict[str, Any]:
            runs = []
            for _ in range(args.runs):
                runs.append(evaluate_once(http, problem, options))
                print(f"  {label} {problem.name}: {runs[-1]}", flush=True)
            return summary(runs)

        for problem in problems:
            entry: dict[str, Any] = report["problems"].setdefault(problem.name, {})
            print(f"{problem.name}: idle (the other GPUs run nothing)", flush=True)
            with host_use(entry.setdefault("idle_host", {})):
                entry["idle"] = runs_of(problem, "idle")
            save()
            warm_s = load.start(load_warmup)
            print(f"{problem.name}: loaded (load warm in {warm_s:.1f} s)", flush=True)
            during = entry.setdefault("load", {"warmup_s": round(warm_s, 2)})
            loaded_from = time.monotonic()
            with host_use(during):
                entry["loaded"] = runs_of(problem, "loaded")
            loaded_until = time.monotonic()
            load.stop()
            finished = load.done_between(loaded_from, loaded_until)
            during.update(
                {
                    "seconds": round(loaded_until - loaded_from, 2),
                    "evaluations": len(finished),
                    "evaluations_per_minute": round(len(finished) / max(loaded_until - loaded_from, 1e-9) * 60, 1),
                    "verdicts": dict(Counter(r.verdict for r in finished)),
                }
            )
            for key in ("mean_speedup", "mean_candidate_ms"):
                if entry["idle"].get(key) and entry["loaded"].get(key):
                    entry[f"{key.removeprefix('mean_')}_shift_percent"] = round(
                        (entry["loaded"][key] / entry["idle"][key] - 1) * 100, 3
                    )
            for label in ("idle", "loaded"):
                cvs = [
                    e[label]["speedup_cv_percent"]
                    for e in report["problems"].values()
                    if e.get(label) and e[label]["speedup_cv_percent"] is not None
                ]
                report.setdefault("max_speedup_cv_percent", {})[label] = max(cvs) if cvs else None
            report["load"]["total_evaluations"] = sum(1 for r in load.records if r.done)
            report["load"]["total_verdicts"] = dict(Counter(r.verdict for r in load.records if r.done))
            report["load"]["jobs_per_gpu"] = load_stack.job_counts()
            report["probe_jobs_per_gpu"] = probe_stack.job_counts()
            save()
        print(
            json.dumps(
                {
                    name: {label: entry.get(label, {}).get("speedup_cv_percent") for label in ("idle", "loaded")}
                    for name, entry in report["problems"].items()
                }
            ),
            flush=True,
        )
        print(json.dumps({k: report.get(k) for k in ("max_speedup_cv_percent", "load", "probe_jobs_per_gpu")}), flush=True)
        print(f"wrote {path}", flush=True)
    finally:
        if load is not None:
            load.stop()
        for stack in stacks:
            stack.stop()
        redis_server.kill(signal.SIGTERM)
        shutil.rmtree(scratch, ignore_errors=True)
    verdicts = {
        r["verdict"]
        for e in report["problems"].values()
        for p in e.values()
        if isinstance(p, dict) and "runs" in p
        for r in p["runs"]
    }
    if verdicts != {"correct"}:
        print(f"verdicts of the probe runs: {sorted(map(str, verdicts))}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
