"""Throughput on one host with several GPUs (issue 9): the same batch of unique small submissions
with 1 GPU, then 2 (then 4 and all of them, when present), in evaluations per minute.

Queues (`--queue`):

- `redis` (the default; the production layout): a redis-server (`--redis-server`, default the
  carried `.redis/redis-server`, else one on PATH) on a free loopback port, one API (`referee serve`,
  auth off) and one `referee worker --gpu I --concurrency K` per GPU, all on one queue.
- `embedded`: one embedded Referee per GPU (CUDA_VISIBLE_DEVICES=I, K worker threads), the client
  sending each of its connections to one of them.

Every configuration is a **fresh stack** (Redis, API and workers; or the embedded servers) with its
own reference-timing cache and timing-lock folder, started before the clock runs. It is warmed
first (every problem at least once, so the per-problem reference timing is cached, and at least
two evaluations per worker slot); then `--submissions` unique submissions (a nonce each) over the
problems, round-robin, go through a closed loop that keeps `--in-flight` per GPU outstanding
(default K + 1: every worker slot busy and one waiting, so the queue never runs dry while a client
turns around). Each is one `POST /v1/evaluations?wait=`.

Reported per configuration: the whole batch's rate (first submission to last result) and the
**sustained** rate (the middle 80% of completions, without the start and the drain at the end),
latency p50/p95 end to end and the engine's own time, verdicts, jobs per GPU (RQ's counters of
each GPU's workers, and from their logs: every batch id dequeued and finished exactly once), the
host's CPU use and, with nvidia-smi, each GPU's utilisation. The scaling ratio is the sustained
rate of N GPUs over that of one (the whole-batch ratio is given too).

    python3 -m bench.scaling --out DIR                       # every GPU; phases 1, 2, 4, all
    python3 -m bench.scaling --out DIR --phases 1,2 --submissions 120 --concurrency 4
    python3 -m bench.scaling --out DIR --gpus 2 --problems tiny --submissions 6   # CPU smoke run
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.lib import ROOT, card_name, describe_machine, percentile, slug, spread, write_result
from bench.problems import small_problems, tiny
from bench.procstates import ProcessStates
from triton_referee.service.stack import RedisServer, ServiceStack, executions, free_port, wait_for

Body = dict[str, Any]


# --- what is submitted ---------------------------------------------------------------------------


def problem_set(name: str) -> tuple[list[str], Callable[[int, str], Body]]:
    """The problems' names and a body maker (index, nonce) -> request, round-robin over them.

    `small`: the fourteen small problems of bench/performance.py with default options (GPU runs).
    `tiny`: bench/problems.py's y = 2x with the fastest options, for CPU smoke runs."""
    if name == "small":
        problems = small_problems()
        return [p.name for p in problems], lambda i, nonce: problems[i % len(problems)].submission(nonce)
    if name == "tiny":
        problem = tiny()
        fast = {"trials": 1, "timing_sets": 1, "max_timing_seconds": 0.05}
        return ["tiny_double"], lambda i, nonce: {
            "reference": problem.reference,
            "candidate": f"{problem.candidate}\n# bench submission {nonce}\n",
            "name": "tiny_double",
            **fast,
        }
    raise ValueError(f"unknown problem set {name!r} (small or tiny)")


# --- the client ----------------------------------------------------------------------------------


@dataclass
class Record:
    index: int
    server: int
    submitted: float
    done: float = 0.0
    id: str | None = None
    verdict: str | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)


def drive(
    urls: list[str],
    make: Callable[[int], Body | None],
    in_flight: int,
    stop: threading.Event | None = None,
    deadline_s: float = 900,
    wait_s: int = 600,
    records: list[Record] | None = None,
) -> list[Record]:
    """Keep `in_flight` submissions outstanding (a closed loop: each connection submits the next as soon
    as its previous one has its result) until `make` returns None or `stop` is set; connection j
    talks to urls[j % len(urls)]. A submission whose `?wait=` runs out is awaited with GET.
    `records`, when given, is filled as submissions go (for a caller watching from another thread)."""
    counter = itertools.count()
    lock = threading.Lock()
    records = [] if records is None else records
    stop = stop or threading.Event()
    deadline = time.monotonic() + deadline_s

    def connection(j: int) -> None:
        server = j % len(urls)
        with httpx.Client(base_url=urls[server], timeout=wait_s + 60) as http:
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    index = next(counter)
                    body = make(index)
                    if body is None:
                        return
                    record = Record(index, server, time.monotonic())
                    records.append(record)
                try:
                    response = http.post("/v1/evaluations", params={"wait": wait_s}, json=body)
                    response.raise_for_status()
                    view = response.json()
                    record.id = view.get("id")
                    while "verdict" not in view and time.monotonic() < deadline:
                        view = http.get(f"/v1/evaluations/{record.id}", params={"wait": wait_s}).json()
                    record.verdict = view.get("verdict", "no result before the deadline")
                    record.result = view
                except (httpx.HTTPError, ValueError) as exc:
                    record.error = f"{type(exc).__name__}: {exc}"[:300]
                    record.verdict = "client_error"
                record.done = time.monotonic()

    threads = [threading.Thread(target=connection, args=(j,), name=f"client-{j}", daemon=True) for j in range(in_flight)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(records, key=lambda r: r.index)


def rates(records: list[Record], started: float) -> dict[str, Any]:
    """Whole-batch and sustained (middle 80% of completions) evaluations per minute; only submissions
    that got a result count."""
    done = sorted(r.done for r in records if r.done and r.result.get("verdict"))
    if not done:
        return {"seconds": 0.0, "evaluations_per_minute": 0.0, "sustained_evaluations_per_minute": None}
    whole_s = done[-1] - started
    low, high = int(len(done) * 0.1), max(int(len(done) * 0.1), int(len(done) * 0.9) - 1)
    window_s = done[high] - done[low]
    return {
        "seconds": round(whole_s, 2),
        "evaluations_per_minute": round(len(done) / whole_s * 60, 1),
        "sustained_window": [low, high],
        "sustained_seconds": round(window_s, 2),
        "sustained_evaluations_per_minute": round((high - low) / window_s * 60, 1) if window_s > 0 and high > low else None,
        "completions_per_10s": [sum(1 for t in done if int((t - started) // 10) == b) for b in range(int(whole_s // 10) + 1)],
    }


def summarize(records: list[Record]) -> dict[str, Any]:
    """Verdicts, latency end to end, and the engine's own times, from the client's records."""
    latency = [r.done - r.submitted for r in records if r.done]
    engine = [(r.result.get("timings_ms") or {}).get("total", 0) / 1e3 for r in records if r.result.get("timings_ms")]
    queued = [(r.result.get("timings_ms") or {}).get("queued", 0) / 1e3 for r in records if r.result.get("timings_ms")]
    lock_ms = [(r.result.get("performance") or {}).get("lock_wait_ms") for r in records]
    lock = [x / 1e3 for x in lock_ms if x is not None]

    stages: dict[str, list[float]] = {}
    for r in records:
        timings = r.result.get("timings_ms") or {}
        for name, ms in [("start", timings.get("start")), *(timings.get("steps") or {}).items()]:
            if ms is not None:
                stages.setdefault(name, []).append(ms)
    errors = [r.error for r in records if r.error]
    return {
        "results": sum(1 for r in records if r.result.get("verdict")),
        "verdicts": dict(Counter(r.verdict or "none" for r in records)),
        "latency_s": spread(latency),
        "engine_s": spread(engine),
        "queued_s": spread(queued),
        "timing_lock_wait_s": spread(lock),
        "stage_ms_p50": {name: round(percentile(values, 50), 1) for name, values in sorted(stages.items())},
        "isolation": dict(Counter((r.result.get("environment") or {}).get("isolation", "?") for r in records if r.result)),
        "devices": dict(Counter((r.result.get("environment") or {}).get("device", "?") for r in records if r.result)),
        **({"client_errors": errors[:5], "client_error_count": len(errors)} if errors else {}),
    }


# --- what the host does meanwhile ----------------------------------------------------------------


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat (0, 0 where there is none)."""
    try:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    return sum(fields) - idle, sum(fields)


@contextmanager
def host_use(into: dict[str, Any], interval_s: float = 2.0) -> Iterator[None]:
    """Record the host's CPU use (percent of all cores) and, with nvidia-smi, each GPU's mean utilisation."""
    busy0, total0 = cpu_times()
    samples: dict[str, list[float]] = {}
    stop = threading.Event()
    smi = shutil.which("nvidia-smi")

    def sample(smi: str) -> None:
        while not stop.wait(interval_s):
            try:
                out = subprocess.run(
                    [smi, "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                ).stdout
            except (OSError, subprocess.SubprocessError):
                return
            for line in out.splitlines():
                parts = [p.strip() for p in line.split(",")]
                if len(parts) == 2 and parts[1].replace(".", "").isdigit():
                    samples.setdefault(parts[0], []).append(float(parts[1]))

    sampler = threading.Thread(target=sample, args=(smi,), daemon=True) if smi else None
    if sampler:
        sampler.start()
    states = ProcessStates(interval_s=0.25)
    try:
        with states:
            yield
    finally:
        into["processes"] = states.summary()
        stop.set()
        if sampler:
            sampler.join(timeout=15)
        busy1, total1 = cpu_times()
        if total1 > total0:
            into["host_cpu_busy_percent"] = round((busy1 - busy0) / (total1 - total0) * 100, 1)
        into["load_average_1m"] = round(os.getloadavg()[0], 2)
        if samples:
            into["gpu_utilization_percent"] = {gpu: round(statistics.mean(v), 1) for gpu, v in sorted(samples.items())}


# --- the stacks ----------------------------------------------------------------------------------


def gpu_count() -> int:
    """GPUs nvidia-smi lists (0 without it)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def redis_binary(given: str | None) -> str:
    """The redis-server to run: --redis-server, else the carried .redis/redis-server, else PATH's; it must run here."""
    candidates = [given] if given else [str(ROOT / ".redis" / "redis-server"), shutil.which("redis-server")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            try:
                version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=10, check=True).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                raise SystemExit(f"{candidate} does not run here: {exc}") from None
            print(f"redis-server: {candidate}: {version.strip()}", flush=True)
            return candidate
    raise SystemExit(
        "no redis-server: pass --redis-server PATH, carry .redis/redis-server (bash bench/build_redis.sh) or put one on PATH"
    )


class RedisStack:
    """A redis-server, the API and one worker per GPU (service.stack.ServiceStack), in `folder`."""

    def __init__(self, gpus: list[int], concurrency: int, folder: Path, binary: str, env: dict[str, str]) -> None:
        self.folder = folder
        self.redis = RedisServer(Path(tempfile.mkdtemp(prefix="referee-scaling-redis-")), binary=binary)
        self.service: ServiceStack | None = None
        self.gpus, self.concurrency, self.env = gpus, concurrency, env

    def start(self) -> list[str]:
        self.redis.start()
        self.service = ServiceStack(self.redis.url, self.gpus, self.concurrency, self.folder, env=self.env).start()
        return [self.service.url]

    def job_counts(self) -> dict[str, dict[str, int]]:
        assert self.service is not None
        return self.service.job_counts()

    def per_gpu_of(self, ids: list[str]) -> dict[str, Any]:
        """From the workers' logs: how many of `ids` each GPU dequeued, and whether each ran exactly once."""
        assert self.service is not None
        logs = self.service.worker_logs()
        wanted = set(ids)
        per_gpu = {str(gpu): sum(1 for i in executions([text])[0] if i in wanted) for gpu, text in logs.items()}
        dequeued, finished = executions(logs.values())
        return {
            "dequeued_per_gpu": per_gpu,
            "dequeued_exactly_once": sum(dequeued[i] == 1 for i in wanted),
            "finished_ok_exactly_once": sum(finished[i] == 1 for i in wanted),
            "dequeued_more_than_once": sum(dequeued[i] > 1 for i in wanted),
        }

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
        self.redis.kill(signal.SIGTERM)
        shutil.rmtree(self.redis.folder, ignore_errors=True)


class EmbeddedStack:
    """One embedded Referee per GPU (`referee serve --embedded`, CUDA_VISIBLE_DEVICES=I, K threads)."""

    def __init__(self, gpus: list[int], concurrency: int, folder: Path, env: dict[str, str]) -> None:
        self.gpus, self.concurrency, self.folder, self.env = gpus, concurrency, folder, env
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> list[str]:
        self.folder.mkdir(parents=True, exist_ok=True)
        urls = []
        for gpu in self.gpus:
            port = free_port()
            env = {
                **os.environ,
                **self.env,
                "CUDA_VISIBLE_DEVICES": str(gpu),
                "REFEREE_EMBEDDED_WORKERS": str(self.concurrency),
                "REFEREE_AUTH": "off",
            }
            log = self.folder / f"embedded-gpu{gpu}.log"
            with log.open("ab") as out:
                self.processes.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "triton_referee.service.cli",
                            "serve",
                            "--embedded",
                            "--port",
                            str(port),
                            "--log-level",
                            "warning",
                        ],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                        start_new_session=True,
                    )
                )
            urls.append(f"http://127.0.0.1:{port}")
        for process, url, gpu in zip(self.processes, urls, self.gpus, strict=True):

            def ready(process: subprocess.Popen[bytes] = process, url: str = url, gpu: int = gpu) -> bool:
                if process.poll() is not None:
                    raise RuntimeError(f"the embedded server for GPU {gpu} exited (see {self.folder})")
                try:
                    return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(ready, 300, f"the embedded server for GPU {gpu}", interval=0.5)
        return urls

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# --- one configuration ---------------------------------------------------------------------------


@dataclass
class Options:
    out: Path
    queue: str = "redis"
    problems: str = "small"
    submissions: int = 120
    warmup: int = -1  # -1: every problem once, and at least two per worker slot
    concurrency: int = 4
    in_flight: int = 0  # per GPU; 0: concurrency + 1
    redis_server: str | None = None
    isolation: str | None = None
    phase_timeout_s: float = 600
    label: str = ""  # appended to the results file's name


def run_phase(gpus: int, options: Options, binary: str | None, log_folder: Path) -> dict[str, Any]:
    """A fresh stack on GPUs 0..gpus-1: warm it, then the measured batch."""
    names, body = problem_set(options.problems)
    in_flight = gpus * (options.in_flight or options.concurrency + 1)
    warmup = options.warmup if options.warmup >= 0 else max(len(names), 2 * gpus * options.concurrency)
    scratch = Path(tempfile.mkdtemp(prefix=f"referee-scaling-x{gpus}-"))
    env = {"REFEREE_REFERENCE_CACHE_DIR": str(scratch / "reference-cache"), "REFEREE_LOCK_DIR": str(scratch / "locks")}
    if options.isolation:
        env["REFEREE_ISOLATION"] = options.isolation
    phase: dict[str, Any] = {
        "gpus": gpus,
        "queue": options.queue,
        "workers_per_gpu": options.concurrency,
        "in_flight": in_flight,
        "warmup_submissions": warmup,
        "submissions": options.submissions,
    }
    folder = log_folder / f"x{gpus}"
    stack: RedisStack | EmbeddedStack = (
        RedisStack(list(range(gpus)), options.concurrency, folder, binary or "", env)
        if options.queue == "redis"
        else EmbeddedStack(list(range(gpus)), options.concurrency, folder, env)
    )
    tag = uuid.uuid4().hex[:12]
    try:
        started = time.monotonic()
        urls = stack.start()
        phase["stack_start_s"] = round(time.monotonic() - started, 2)
        print(f"[x{gpus}] stack up in {phase['stack_start_s']} s; warming with {warmup} submissions", flush=True)
        started = time.monotonic()
        warm = drive(
            urls, lambda i: body(i, f"warm-{tag}-{i}") if i < warmup else None, in_flight, deadline_s=options.phase_timeout_s
        )
        phase["warmup"] = {"seconds": round(time.monotonic() - started, 2), "verdicts": dict(Counter(r.verdict for r in warm))}
        before = stack.job_counts() if isinstance(stack, RedisStack) else {}
        print(
            f"[x{gpus}] warm in {phase['warmup']['seconds']} s {phase['warmup']['verdicts']}; "
            f"batch of {options.submissions}, {in_flight} in flight",
            flush=True,
        )
        started = time.monotonic()
        with host_use(phase):
            records = drive(
                urls,
                lambda i: body(i, f"{tag}-{i}") if i < options.submissions else None,
                in_flight,
                deadline_s=options.phase_timeout_s,
            )
        phase.update(rates(records, started))
        phase.update(summarize(records))
        phase["unfinished"] = options.submissions - phase["results"]
        ids = [r.id for r in records if r.id]
        phase["unique_ids"] = len(set(ids))
        if isinstance(stack, RedisStack):
            time.sleep(1.0)  # RQ logs "Job OK" after the result is stored: let the logs catch up
            after = stack.job_counts()
            phase["jobs_per_gpu"] = {
                gpu: {key: value - before.get(gpu, {}).get(key, 0) for key, value in counts.items() if key != "rq_workers"}
                for gpu, counts in after.items()
            }
            phase.update(stack.per_gpu_of(ids))
        else:
            phase["jobs_per_gpu"] = {
                str(gpu): {"succeeded": sum(1 for r in records if r.server == gpu and r.result.get("verdict"))}
                for gpu in range(gpus)
            }
        print(
            f"[x{gpus}] {json.dumps({k: phase.get(k) for k in ('evaluations_per_minute', 'sustained_evaluations_per_minute', 'verdicts', 'jobs_per_gpu', 'latency_s', 'host_cpu_busy_percent', 'gpu_utilization_percent')})}",
            flush=True,
        )
    finally:
        stack.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return phase


def default_phases(gpus: int) -> list[int]:
    return sorted({n for n in (1, 2, 4) if n <= gpus} | {gpus})


def run_scaling(options: Options, gpus: int, phases: list[int]) -> dict[str, Any]:
    """Every phase in turn, the report saved after each; returns the report."""
    options.out.mkdir(parents=True, exist_ok=True)
    binary = redis_binary(options.redis_server) if options.queue == "redis" else None
    card = card_name()
    names, _ = problem_set(options.problems)
    report: dict[str, Any] = {
        "card": card,
        "gpus": gpus,
        "date": datetime.date.today().isoformat(),
        "queue": options.queue,
        "host": {**describe_machine(), "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None},
        "isolation": options.isolation or os.environ.get("REFEREE_ISOLATION") or "auto",
        "workers_per_gpu": options.concurrency,
        "problems": names,
        "submissions_per_phase": options.submissions,
        "method": (
            "each configuration a fresh stack ("
            + (
                "redis-server, one API, one `referee worker --gpu I --concurrency K` per GPU"
                if options.queue == "redis"
                else "one embedded server per GPU"
            )
            + ") on GPUs 0..N-1 with its own reference cache; "
            "warmed first (every problem once, at least two per worker slot); then unique submissions (nonce) round-robin "
            "over the problems, default options, through a closed loop keeping N x in_flight outstanding, each one "
            "POST ?wait=. Sustained rate: the middle 80% of completions; scaling: sustained rate over the 1-GPU one."
        ),
        "phases": [],
    }
    suffix = ("" if options.queue == "redis" else f"-{options.queue}") + options.label
    path = options.out / f"scaling-{slug(card)}-x{max(phases)}-{report['date']}{suffix}.json"
    log_folder = options.out / "scaling-logs"

    def save() -> None:
        write_result(path, report)

    for n in phases:
        report["phases"].append(run_phase(n, options, binary, log_folder))
        base = report["phases"][0]
        if base["gpus"] == 1:
            report["evaluations_per_minute"] = {str(p["gpus"]): p["evaluations_per_minute"] for p in report["phases"]}
            report["sustained_evaluations_per_minute"] = {
                str(p["gpus"]): p["sustained_evaluations_per_minute"] for p in report["phases"]
            }
            report["scaling"] = {
                str(p["gpus"]): round(p["sustained_evaluations_per_minute"] / base["sustained_evaluations_per_minute"], 2)
                for p in report["phases"][1:]
                if p["sustained_evaluations_per_minute"] and base["sustained_evaluations_per_minute"]
            }
            report["scaling_whole_batch"] = {
                str(p["gpus"]): round(p["evaluations_per_minute"] / base["evaluations_per_minute"], 2)
                for p in report["phases"][1:]
                if base["evaluations_per_minute"]
            }
        save()
    print(json.dumps({k: v for k, v in report.items() if k not in ("phases", "method")}), flush=True)
    print(f"wrote {path}", flush=True)
    report["path"] = str(path)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--queue", choices=("redis", "embedded"), default="redis")
    parser.add_argument(
        "--gpus",
        type=int,
        default=0,
        help="GPUs to use (default: every GPU nvidia-smi lists; on a host without one, N CPU-interpreter workers)",
    )
    parser.add_argument(
        "--phases", default="", help="GPU counts to measure, e.g. 1,2 (default: 1, 2, 4 and --gpus, up to --gpus)"
    )
    parser.add_argument("--submissions", type=int, default=120, help="measured submissions per phase")
    parser.add_argument(
        "--warmup",
        type=int,
        default=-1,
        help="warm-up submissions per phase (default: every problem once, at least two per worker slot)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="evaluations at once per GPU (referee worker --concurrency)")
    parser.add_argument(
        "--in-flight", type=int, default=0, help="client submissions outstanding per GPU (default: concurrency + 1)"
    )
    parser.add_argument("--problems", choices=("small", "tiny"), default="small", help="tiny: a CPU smoke run")
    parser.add_argument("--redis-server", default=None, help="redis-server binary (default: .redis/redis-server, then PATH)")
    parser.add_argument("--isolation", default=None, help="REFEREE_ISOLATION for the workers (default: auto)")
    parser.add_argument("--phase-timeout", type=float, default=600, help="seconds a phase's warm-up or batch may take")
    parser.add_argument("--label", default="", help="appended to the results file's name, e.g. -c8")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stacks on the way out
    detected = gpu_count()
    gpus = args.gpus or detected
    if not gpus:
        raise SystemExit("no GPU found (nvidia-smi -L): pass --gpus N for a smoke run with N CPU-interpreter workers")
    if detected and gpus > detected:
        raise SystemExit(f"--gpus {gpus} but nvidia-smi lists {detected}")
    phases = sorted({int(x) for x in args.phases.split(",") if x.strip()}) if args.phases else default_phases(gpus)
    if not phases or phases[0] < 1 or phases[-1] > gpus:
        raise SystemExit(f"--phases must be GPU counts between 1 and {gpus}")
    options = Options(
        out=args.out,
        queue=args.queue,
        problems=args.problems,
        submissions=args.submissions,
        warmup=args.warmup,
        concurrency=args.concurrency,
        in_flight=args.in_flight,
        redis_server=args.redis_server,
        isolation=args.isolation,
        phase_timeout_s=args.phase_timeout,
        label=args.label,
    )
    report = run_scaling(options, gpus, phases)
    failed = [p["gpus"] for p in report["phases"] if p["unfinished"] or set(p["verdicts"]) - {"correct"}]
    if failed:
        print(f"phases with unfinished or not-correct submissions: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
