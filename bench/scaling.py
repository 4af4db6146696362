"""Throughput on one host with several GPUs (issue 9): one embedded Referee per GPU, each pinned
with CUDA_VISIBLE_DEVICES and keeping its own warm pool and timing lock, and a client spreading
one batch of unique small submissions over them. Measured with 1 GPU, then with all of them.

    python3 bench/scaling.py --out DIR [--gpus 2] [--submissions 40] [--workers 4]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.performance import card_name  # noqa: E402
from bench.problems import small_problems  # noqa: E402
from bench.stack import free_port  # noqa: E402


def start_server(gpu: int, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu), "REFEREE_EMBEDDED_WORKERS": str(workers),
           "REFEREE_AUTH": "off", "REFEREE_REFERENCE_CACHE_DIR": f"/tmp/referee-scaling-cache-{gpu}"}
    command = [sys.executable, "-c", "from service.cli import main; main()", "serve", "--embedded", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the server for GPU {gpu} did not start (see {log})")


def run_batch(urls: list[str], count: int) -> dict[str, Any]:
    """`count` unique submissions, round-robin over the servers, each awaited (?wait)."""
    problems = small_problems()

    def one(index: int) -> str:
        url = urls[index % len(urls)]
        body = problems[index % len(problems)].submission(uuid.uuid4().hex)
        response = httpx.post(f"{url}/v1/evaluations", params={"wait": 600}, json=body, timeout=900)
        response.raise_for_status()
        return response.json().get("verdict", "missing")

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8 * len(urls)) as pool:
        verdicts = list(pool.map(one, range(count)))
    elapsed = time.monotonic() - started
    return {"gpus": len(urls), "submissions": count, "seconds": round(elapsed, 2),
            "evaluations_per_minute": round(count / elapsed * 60, 1),
            "verdicts": {v: verdicts.count(v) for v in set(verdicts)}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--submissions", type=int, default=40)
    parser.add_argument("--workers", type=int, default=4, help="evaluations at once per GPU")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    card = card_name()
    report: dict[str, Any] = {"card": card, "gpus": args.gpus, "date": datetime.date.today().isoformat(),
                              "workers_per_gpu": args.workers, "runs": []}
    path = args.out / f"scaling-{card.lower().replace(' ', '-')}-x{args.gpus}-{report['date']}.json"
    servers = []
    try:
        for gpu in range(args.gpus):
            servers.append(start_server(gpu, args.workers, args.out / f"scaling-server-gpu{gpu}.log"))
        urls = [url for _, url in servers]
        for url in urls:  # one evaluation each first: the first per server also warms the host's caches
            run_batch([url], 1)
        for used in (1, args.gpus):
            report["runs"].append(run_batch(urls[:used], args.submissions))
            print(json.dumps(report["runs"][-1]), flush=True)
            path.write_text(json.dumps(report, indent=1) + "\n")
        one, many = report["runs"][0], report["runs"][-1]
        report["scaling"] = round(many["evaluations_per_minute"] / one["evaluations_per_minute"], 2)
        path.write_text(json.dumps(report, indent=1) + "\n")
        print(json.dumps({k: v for k, v in report.items() if k != "runs"}), flush=True)
    finally:
        for process, _ in servers:
            process.terminate()
        for process, _ in servers:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
