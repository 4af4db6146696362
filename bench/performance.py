"""Issue 6's benchmark, end to end through the HTTP API of an embedded Referee, in one run:

- latency: single submissions of small problems, one at a time (`?wait=`), compile included;
- throughput: one batch of >= 100 submissions over >= 10 problems, sustained evaluations/minute;
- stability: the same honest kernel evaluated 5 times on each of three large problems, the
  coefficient of variation of its speedup;
- agreement: Referee's kernel medians against `triton.testing.do_bench` on the same kernels;
- per-stage overhead (from each result's `timings_ms`), and a baseline measured in the same run:
  Referee with the warm pool and the reference cache off (a fresh process per evaluation).

Every submission carries a nonce, so none is answered from the result cache.

    python3 -m bench.performance --out DIR            # on the GPU host (bench/gpu_session.sh)
    python3 -m bench.performance --out DIR --latency 4 --batch 8 --stability 0   # a smoke run (CPU too)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.lib import ROOT, card_name, describe_machine, percentile, slug, write_result
from bench.problems import BenchProblem, large_problems, small_problems
from triton_referee.service.server import background_server
from triton_referee.service.settings import Settings


class Bench:
    def __init__(self, url: str, options: dict[str, Any]) -> None:
        self.client = httpx.Client(base_url=url, timeout=900)
        self.options = options

    def single(self, problem: BenchProblem, options: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
        started = time.monotonic()
        response = self.client.post(
            "/v1/evaluations",
            params={"wait": 600},
            json={**problem.submission(uuid.uuid4().hex), **self.options, **(options or {})},
        )
        response.raise_for_status()
        result = response.json()
        if "verdict" not in result:
            raise RuntimeError(f"no result within the wait: {result}")
        return time.monotonic() - started, result

    def batch(self, problems: list[BenchProblem], count: int) -> tuple[float, list[dict[str, Any]]]:
        items = [{**problems[i % len(problems)].submission(uuid.uuid4().hex), **self.options} for i in range(count)]
        started = time.monotonic()
        response = self.client.post("/v1/batches", json={"items": items, "name": "throughput"})
        response.raise_for_status()
        batch_id = response.json()["id"]
        while True:
            view = self.client.get(f"/v1/batches/{batch_id}", params={"results": False}).json()
            if view["status"] == "completed":
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        results = [item["result"] for item in self.client.get(f"/v1/batches/{batch_id}").json()["items"]]
        return elapsed, results


def stage_overhead(results: list[dict[str, Any]]) -> dict[str, float]:
    """Median milliseconds per stage and per harness step over the results."""
    stages: dict[str, list[float]] = {}
    for result in results:
        timings = result.get("timings_ms") or {}
        for key, value in timings.items():
            if isinstance(value, (int, float)):
                stages.setdefault(key, []).append(float(value))
        for key, value in (timings.get("steps") or {}).items():
            stages.setdefault(f"step:{key}", []).append(float(value))
        performance = result.get("performance") or {}
        lock = performance.get("lock_wait_ms")
        if lock is not None:
            stages.setdefault("timing_lock_wait", []).append(float(lock))
        for side in ("candidate", "reference"):  # how many timed calls the stopping rule took
            reps = (performance.get(f"{side}_ms") or {}).get("n")
            if reps is not None:
                stages.setdefault(f"timed_calls:{side}", []).append(float(reps))
        seeded = (result.get("environment") or {}).get("launchers_seeded")
        if seeded is not None:
            stages.setdefault("launchers_seeded", []).append(float(seeded))
    return {key: round(statistics.median(values), 2) for key, values in sorted(stages.items())}


def verdicts(results: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.get("verdict", "missing")] = counts.get(result.get("verdict", "missing"), 0) + 1
    return counts


# The stability runs' options for the large problems: one correctness trial, and two timing sets
# (one input set each; 256 MB inputs do not fit in L2 anyway). bench/cv_under_load.py uses them too.
STABILITY_OPTIONS: dict[str, Any] = {"trials": 1, "timing_sets": 2}


def stability_run(seconds: float, result: dict[str, Any]) -> dict[str, Any]:
    """One stability evaluation's figures, from its result document."""
    perf = result.get("performance") or {}
    return {
        "seconds": round(seconds, 2),
        "verdict": result.get("verdict"),
        "speedup": perf.get("speedup"),
        "candidate_ms": (perf.get("candidate_ms") or {}).get("median"),
        "candidate_n": (perf.get("candidate_ms") or {}).get("n"),
        "reference_ms": (perf.get("reference_ms") or {}).get("median"),
        "reference_cached": perf.get("reference_cached"),
        "reference_outputs_cached": perf.get("reference_outputs_cached"),
        "speedup_ci95": perf.get("speedup_ci95"),
    }


def cv_percent(values: list[float]) -> float | None:
    """Coefficient of variation (population), in percent; None for fewer than two values."""
    return round(statistics.pstdev(values) / statistics.mean(values) * 100, 3) if len(values) >= 2 else None


def stability_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": runs,
        "speedup_cv_percent": cv_percent([r["speedup"] for r in runs if r["speedup"]]),
        "candidate_ms_cv_percent": cv_percent([r["candidate_ms"] for r in runs if r["candidate_ms"]]),
    }


def run_mode(
    *,
    warm: bool,
    workers: int,
    latency_n: int,
    batch_n: int,
    stability_n: int,
    large: list[BenchProblem],
    options: dict[str, Any],
    save: Any,
    into: dict[str, Any],
    key: str,
) -> dict[str, Any]:
    """One configuration's phases; the partial results are saved after each phase."""
    os.environ["REFEREE_REFERENCE_CACHE"] = "on" if warm else "off"
    os.environ["REFEREE_REFERENCE_CACHE_DIR"] = tempfile.mkdtemp(prefix="referee-bench-cache-")
    settings = Settings(redis_url=None, auth="off", embedded_workers=workers, warm_pool=warm)
    small = small_problems()
    out: dict[str, Any] = {"warm_pool": warm, "reference_cache": warm, "embedded_workers": workers}
    into[key] = out
    started = time.monotonic()
    with background_server(settings) as url:
        out["server_start_s"] = round(time.monotonic() - started, 2)
        bench = Bench(url, options)
        warmup_s, _ = bench.single(small[0])  # the first evaluation also warms the host's caches
        out["first_evaluation_s"] = round(warmup_s, 3)
        if warm:
            # A problem's first evaluation fills its caches (reference timing and data, launchers);
            # RL groups then send many candidates for it. Both are reported: cold once per problem,
            # then the steady state, where every submission is still a new candidate (compile included).
            cold = [bench.single(problem) for problem in small[1:]]
            out["cold_latency"] = {
                "n": len(cold),
                "p50_s": round(percentile([c[0] for c in cold], 50), 3),
                "p95_s": round(percentile([c[0] for c in cold], 95), 3),
                "verdicts": verdicts([c[1] for c in cold]),
                "overhead_ms": stage_overhead([c[1] for c in cold]),
            }
            print(f"  cold (first of each problem): p50 {out['cold_latency']['p50_s']} s", flush=True)
        latencies, single_results = [], []
        for i in range(latency_n):
            seconds, result = bench.single(small[i % len(small)])
            latencies.append(seconds)
            single_results.append(result)
            print(f"  latency {small[i % len(small)].name}: {seconds:.2f} s {result['verdict']}", flush=True)
        out["latency"] = {
            "n": latency_n,
            "p50_s": round(percentile(latencies, 50), 3),
            "p95_s": round(percentile(latencies, 95), 3),
            "all_s": [round(x, 3) for x in latencies],
            "verdicts": verdicts(single_results),
            "overhead_ms": stage_overhead(single_results),
        }
        save()
        if batch_n:
            elapsed, batch_results = bench.batch(small, batch_n)
            out["throughput"] = {
                "submissions": batch_n,
                "problems": min(batch_n, len(small)),
                "seconds": round(elapsed, 2),
                "evaluations_per_minute": round(batch_n / elapsed * 60, 1),
                "verdicts": verdicts(batch_results),
                "overhead_ms": stage_overhead(batch_results),
            }
            print(f"  throughput: {batch_n} in {elapsed:.1f} s", flush=True)
            save()
        if stability_n:
            out["stability"] = {}
            for problem in large:
                runs = []
                for _ in range(stability_n):
                    seconds, result = bench.single(problem, STABILITY_OPTIONS)
                    runs.append(stability_run(seconds, result))
                    print(f"  stability {problem.name}: {runs[-1]}", flush=True)
                out["stability"][problem.name] = stability_summary(runs)
                save()
    return out


def agreement(large: list[BenchProblem], stability: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Referee's median kernel times (median over the stability runs) against do_bench's."""
    problems_file = out_dir / "dobench-problems-input.json"
    problems_file.write_text(json.dumps([{"name": p.name, "reference": p.reference, "candidate": p.candidate} for p in large]))
    result_file = out_dir / "dobench-problems.json"
    subprocess.run(
        [sys.executable, "-m", "bench.dobench_problems", str(problems_file.resolve()), str(result_file.resolve())],
        cwd=ROOT,
        check=True,
        timeout=600,
    )
    problems_file.unlink()
    dobench = json.loads(result_file.read_text())["rows"]
    rows = {}
    for name, measured in dobench.items():
        runs = stability.get(name, {}).get("runs", [])
        referee = {
            key: statistics.median([r[key] for r in runs if r[key]])
            for key in ("candidate_ms", "reference_ms")
            if any(r[key] for r in runs)
        }
        rows[name] = {
            "do_bench_ms": measured,
            "referee_ms": referee,
            "difference_percent": {key: round((referee[key] / measured[key] - 1) * 100, 2) for key in referee},
        }
    return rows


def summarize(report: dict[str, Any]) -> None:
    """The headline keys, from whatever phases have run so far."""
    warm, base = report.get("referee") or {}, report.get("baseline") or {}
    if "latency" in warm:
        report["p50_latency_s"] = warm["latency"]["p50_s"]
        report["p95_latency_s"] = warm["latency"]["p95_s"]
        report["per_stage_overhead_ms"] = warm["latency"]["overhead_ms"]
    if "cold_latency" in warm:
        report["cold_p50_latency_s"] = warm["cold_latency"]["p50_s"]
    if "throughput" in warm:
        report["evaluations_per_minute"] = warm["throughput"]["evaluations_per_minute"]
    cvs = [v["speedup_cv_percent"] for v in warm.get("stability", {}).values() if v["speedup_cv_percent"] is not None]
    if cvs:
        report["max_speedup_cv_percent"] = max(cvs)
    if "latency" in base and "latency" in warm:
        report["baseline_p50_latency_s"] = base["latency"]["p50_s"]
        report.setdefault("ratio_to_baseline", {})["p50_latency"] = round(base["latency"]["p50_s"] / warm["latency"]["p50_s"], 2)
    if "throughput" in base and "throughput" in warm:
        report["baseline_evaluations_per_minute"] = base["throughput"]["evaluations_per_minute"]
        report.setdefault("ratio_to_baseline", {})["evaluations_per_minute"] = round(
            warm["throughput"]["evaluations_per_minute"] / base["throughput"]["evaluations_per_minute"], 2
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=4, help="evaluations at once (embedded workers)")
    parser.add_argument("--latency", type=int, default=20, help="single submissions timed one by one")
    parser.add_argument("--batch", type=int, default=100, help="submissions in the throughput batch")
    parser.add_argument("--stability", type=int, default=5, help="evaluations of each large problem (0: skip)")
    parser.add_argument("--baseline-latency", type=int, default=6)
    parser.add_argument("--baseline-batch", type=int, default=24)
    parser.add_argument("--label", default="", help="suffix of the results file name")
    parser.add_argument("--isolation", default=None, help="REFEREE_ISOLATION for the embedded workers (default: auto)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.isolation:
        os.environ["REFEREE_ISOLATION"] = args.isolation
    card = card_name()
    on_gpu = not card.startswith("cpu-")
    large = large_problems() if on_gpu else []
    report: dict[str, Any] = {
        "card": card,
        "date": datetime.date.today().isoformat(),
        "host": describe_machine(),
        "isolation": os.environ.get("REFEREE_ISOLATION") or "auto",
        "method": "embedded HTTP API, warm pool, per-GPU timing lock, default evaluation options (small problems: 3 input "
        "sets, 5 trials, rechecks, profile); every submission unique (nonce); latency after each problem's "
        "first evaluation (cold_latency) filled its caches. Large problems: trials=1, "
        "timing_sets=2 (one input set; 256 MB inputs do not fit in L2 anyway)",
    }
    path = args.out / f"{slug(card)}-{report['date']}{args.label}.json"

    def save() -> None:
        summarize(report)
        write_result(path, report)

    print("Referee with the warm pool and caches", flush=True)
    report["referee"] = run_mode(
        warm=True,
        workers=args.workers,
        latency_n=args.latency,
        batch_n=args.batch,
        stability_n=args.stability,
        large=large,
        options={},
        save=save,
        into=report,
        key="referee",
    )
    save()
    if args.baseline_latency or args.baseline_batch:
        print("baseline: fresh processes, no reference cache", flush=True)
        report["baseline"] = run_mode(
            warm=False,
            workers=args.workers,
            latency_n=args.baseline_latency,
            batch_n=args.baseline_batch,
            stability_n=0,
            large=large,
            options={},
            save=save,
            into=report,
            key="baseline",
        )
        save()
    if on_gpu and args.stability:
        report["agreement_with_do_bench"] = agreement(large, report["referee"]["stability"], args.out)
        save()
    print(json.dumps({k: v for k, v in report.items() if k not in ("referee", "baseline")}, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
