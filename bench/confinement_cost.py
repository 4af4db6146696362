"""What the kernel confinement (sandbox/harness/lockdown.py) costs per evaluation on the warm-pool path.

For each namespace backend that works here, two warm pools run side by side: one with each child
locking itself down (landlock and seccomp, the default) and one without (REFEREE_LOCKDOWN=off, the
pool as it was before). They evaluate the tiny y = 2x problem (bench/problems.py, two trials)
on the device in turn, one evaluation each per pair, so the load of a shared machine falls on both
alike; p50/p95 of the whole evaluation and of its start stage (taking two children from the pool)
and the paired differences are recorded. Also
timed: `lockdown.apply` itself in a forked child of a process with torch imported (what each spare
pays, ahead of demand).

    python -m bench.confinement_cost [--device cpu] [--runs 60] [--backends unshare,bwrap] [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Literal

from bench.lib import ROOT, describe_machine, spread, write_result
from bench.problems import tiny
from triton_referee.sandbox.harness import lockdown
from triton_referee.sandbox.isolation import Limits
from triton_referee.sandbox.selection import select_isolation
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.pool import WarmPool

REFERENCE, CANDIDATE = tiny().reference, tiny().candidate


def apply_cost(samples: int = 20) -> dict[str, Any]:
    """Milliseconds a freshly forked child (torch imported in the parent, as in the zygote) spends in
    lockdown.apply with the zygote's resolved rules, measured inside the child."""
    import torch  # noqa: F401  the parent's state, as a spare inherits it

    support = lockdown.probe()
    rules = lockdown.resolve(lockdown.default_policy(0))  # as the zygote does once
    times = []
    for _ in range(samples):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            own = os.open("/tmp", os.O_PATH | os.O_DIRECTORY)
            started = time.perf_counter()
            lockdown.apply(lockdown.Policy(read_write=[own], rules=rules), support)
            os.write(write_end, str(time.perf_counter() - started).encode())
            os._exit(0)
        os.close(write_end)
        times.append(float(os.read(read_end, 64)))
        os.close(read_end)
        os.waitpid(pid, 0)
    return {"layers": support.layers(), "apply_ms": spread([t * 1e3 for t in times])}


def start_pool(backend: str, device: str, lockdown_on: bool) -> WarmPool:
    lockdown = "on" if lockdown_on else "off"  # as REFEREE_LOCKDOWN in a worker's settings
    pool = WarmPool(device, isolation=select_isolation(backend, Limits(memory_bytes=4 << 30), lockdown=lockdown), spares=2)
    pool.start()
    return pool


def one(pool: WarmPool, device: Literal["cuda", "cpu"]) -> tuple[float, float, list[str]]:
    config = EvalConfig(device=device, trials=2, timeout_s=120)
    started = time.perf_counter()
    result = evaluate(Problem(source=REFERENCE), Submission(source=CANDIDATE), config, pool=pool.client)
    elapsed = (time.perf_counter() - started) * 1e3
    if result.verdict != Verdict.correct:
        raise SystemExit(f"{result.verdict} {result.error}")
    return elapsed, result.timings_ms.start, result.environment.confinement


def measure(backend: str, device: Literal["cuda", "cpu"], runs: int) -> dict[str, Any]:
    """Both pools run at once; evaluations alternate between them (off, on, on, off, ...), so the
    load of a shared machine falls on both alike. The paired differences are the cost."""
    pools = {"off": start_pool(backend, device, False), "on": start_pool(backend, device, True)}
    samples: dict[str, dict[str, list[float]]] = {mode: {"total_ms": [], "start_ms": []} for mode in pools}
    layers: dict[str, list[str]] = {}
    differences: list[float] = []
    try:
        for pool in pools.values():  # warm-up: fills the caches of each
            one(pool, device)
        for index in range(runs):
            pair: dict[str, float] = {}
            for mode in ("off", "on") if index % 2 == 0 else ("on", "off"):
                total, start, layers[mode] = one(pools[mode], device)
                samples[mode]["total_ms"].append(total)
                samples[mode]["start_ms"].append(start)
                pair[mode] = total
                time.sleep(0.2)  # the pool refills its spares between submissions, as between real jobs
            differences.append(pair["on"] - pair["off"])
    finally:
        for pool in pools.values():
            pool.stop()
    entry: dict[str, Any] = {
        mode: {
            "evaluation_ms": spread(s["total_ms"]),
            "start_ms": spread(s["start_ms"]),
            "runs": len(s["total_ms"]),
            "confinement": layers[mode],
        }
        for mode, s in samples.items()
    }
    entry["p50_change_percent"] = round(100 * (entry["on"]["evaluation_ms"]["p50"] / entry["off"]["evaluation_ms"]["p50"] - 1), 1)
    entry["paired_difference_ms"] = {
        "median": round(statistics.median(differences), 1),
        "mean": round(statistics.fmean(differences), 1),
        "stdev": round(statistics.stdev(differences), 1) if len(differences) > 1 else None,
    }
    return entry


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=60, help="pairs of evaluations (one per pool)")
    parser.add_argument("--backends", default="unshare,bwrap")
    parser.add_argument("--label", default="")
    parser.add_argument("--note", default="", help="what the machine is and what else ran on it")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    report: dict[str, Any] = {
        "machine": {**describe_machine(), "device": args.device, "note": args.note},
        "date": datetime.date.today().isoformat(),
        "what": "the tiny y = 2x problem through a warm pool, with and without each child's lockdown (landlock + seccomp)",
        "lockdown_apply": apply_cost(),
        "backends": {},
    }
    for backend in args.backends.split(","):
        try:
            select_isolation(backend)
        except RuntimeError as exc:
            report["backends"][backend] = {"skipped": str(exc)}
            continue
        entry = measure(backend, args.device, args.runs)
        report["backends"][backend] = entry
        print(backend, json.dumps(entry), flush=True)
    name = f"confinement-cost-{args.device}-{os.cpu_count()}cores{args.label}-{report['date']}.json"
    path = write_result(Path(args.out) / name, report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
