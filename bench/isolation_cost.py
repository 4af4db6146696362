"""What each isolation backend costs per evaluation, on this machine.

For every backend that works here (pooled container, fresh container, bwrap, unshare, process):
- `sandbox_start_s`: a trivial program (`python -I -S -c pass`) started through the backend's
  command line: the cost of the confinement alone;
- `harness_start_s`: a harness process started with the backend and asked to exit (its Python,
  the harness package, the round trip over the channel);
- `evaluation_s`: one whole evaluation of the tiny y = 2x problem (bench/problems.py) on the
  CPU (Triton's interpreter), two trials: what `referee check` spends, less its own start-up.
Medians of `--repeat` runs after one warm-up (which also fills the docker pool).

    python -m bench.isolation_cost [--repeat 5] [--docker-image TAG] [--out bench/results]
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
from pathlib import Path
from typing import Any

from bench.lib import ROOT, describe_machine, write_result
from bench.problems import tiny
from triton_referee.sandbox.isolation import Isolation
from triton_referee.sandbox.launch import HARNESS_PARENT, child_environment
from triton_referee.sandbox.selection import select_isolation
from triton_referee.worker.evaluate import evaluate, jobs_root
from triton_referee.worker.models import EvalConfig, Problem, Submission
from triton_referee.worker.process import HarnessProcess

REFERENCE, CANDIDATE = tiny().reference, tiny().candidate


def sandbox_start(isolation: Isolation) -> float:
    job = Path(tempfile.mkdtemp(prefix="referee-", dir=jobs_root()))
    workdir = job / "candidate"
    workdir.mkdir()
    pipes = [os.pipe() for _ in range(3)]
    fds = [pipes[0][0], pipes[1][1], pipes[2][0]]
    argv = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        "pass",
        str(HARNESS_PARENT),
        "--role",
        "candidate",
        "--read-fd",
        str(fds[0]),
        "--write-fd",
        str(fds[1]),
        "--key-fd",
        str(fds[2]),
    ]
    started = time.perf_counter()
    try:
        command = isolation.command(argv, workdir, "cpu")
        subprocess.run(
            command,
            cwd=workdir,
            env=child_environment(workdir, "candidate", "cpu"),
            pass_fds=fds,
            check=True,
            capture_output=True,
            timeout=120,
        )
        return time.perf_counter() - started
    finally:
        release = getattr(isolation, "release", None)
        if release is not None:
            release(workdir)
        for r, w in pipes:
            os.close(r)
            os.close(w)
        subprocess.run(["rm", "-rf", str(job)], check=False)


def harness_start(isolation: Isolation) -> float:
    job = Path(tempfile.mkdtemp(prefix="referee-", dir=jobs_root()))
    process = HarnessProcess("candidate", job / "candidate", "cpu", isolation=isolation)
    started = time.perf_counter()
    try:
        process.start()
        # Any command is a round trip; an unknown one is answered at once, after the role's imports.
        process.request({"cmd": "ping"}, deadline=time.monotonic() + 120)
        return time.perf_counter() - started
    finally:
        process.close()
        subprocess.run(["rm", "-rf", str(job)], check=False)


def evaluation(isolation: Isolation) -> float:
    started = time.perf_counter()
    result = evaluate(
        Problem(source=REFERENCE), Submission(source=CANDIDATE), EvalConfig(device="cpu", trials=2), isolation=isolation
    )
    elapsed = time.perf_counter() - started
    if result.verdict.value != "correct":
        raise RuntimeError(f"{isolation.name}: {result.verdict.value}: {result.error}")
    return elapsed


def measure(isolation: Isolation, repeat: int) -> dict[str, Any]:
    row: dict[str, Any] = {"backend": isolation.name}
    for name, fn in (("sandbox_start_s", sandbox_start), ("harness_start_s", harness_start), ("evaluation_s", evaluation)):
        fn(isolation)  # warm-up: page cache, docker pool
        runs = [fn(isolation) for _ in range(repeat)]
        row[name] = round(statistics.median(runs), 3)
        row[name[:-2] + "_runs_s"] = [round(r, 3) for r in runs]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--docker-image", help="sandbox image for the docker rows (tests/security/images.py builds one)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    backends: list[Isolation] = []
    notes: list[str] = []
    if args.docker_image:
        from triton_referee.sandbox.docker_backend import DockerIsolation

        state = Path(tempfile.mkdtemp(prefix="referee-bench-docker-"))
        backends += [
            DockerIsolation(image=args.docker_image, state_dir=state / "pool"),
            DockerIsolation(image=args.docker_image, state_dir=state / "strict", strict=True),
        ]
    else:
        notes.append("docker rows skipped: no --docker-image")
    for name in ("bwrap", "unshare", "process"):
        try:
            backends.append(select_isolation(name))
        except RuntimeError as exc:
            notes.append(f"{name} skipped: {exc}")
    rows = []
    for isolation in backends:
        print(f"measuring {isolation.name} ...", file=sys.stderr, flush=True)
        rows.append(measure(isolation, args.repeat))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if hasattr(isolation, "shutdown"):
            isolation.shutdown()
    base = next((r for r in rows if r["backend"] == "process"), None)
    if base is not None:
        for row in rows:
            row["evaluation_overhead_s"] = round(row["evaluation_s"] - base["evaluation_s"], 3)
    host = f"cpu-{os.cpu_count()}cores"
    document = {
        "host": {"kind": host, **describe_machine(), "root": os.geteuid() == 0},
        "problem": "bench/problems.py's tiny (y = 2x, n=256), device cpu (Triton interpreter), trials 2",
        "repeat": args.repeat,
        "rows": rows,
        "notes": notes,
    }
    path = write_result(args.out / f"isolation-cost-{host}-{datetime.date.today().isoformat()}.json", document)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
