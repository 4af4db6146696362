"""Accepted submissions per second of the HTTP API: uvicorn (`referee serve`) on a real Redis, no
workers (jobs only pile up in the queue), distinct submissions so none is deduplicated.

The load generator is a bare asyncio HTTP/1.1 client on keep-alive connections, in this process,
on the same machine as the API and Redis: all three share the CPUs, as they would on a small host.

    python -m bench.api_throughput [--requests 4000] [--connections 32] [--batch 100] [--processes 2] [--out bench/results/X.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.lib import describe_machine, percentile, write_result
from bench.problems import static_reject, tiny
from triton_referee.service.stack import ApiServer, RedisServer

KEY = "bench-" + uuid.uuid4().hex
REFERENCE = tiny().reference


def request_bytes(port: int, path: str, body: dict[str, Any]) -> bytes:
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def drive(port: int, requests: list[bytes], connections: int) -> tuple[float, list[float], dict[int, int]]:
    """Send every request over `connections` keep-alive connections; wall time, latencies, status counts."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for item in requests:
        queue.put_nowait(item)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while not queue.empty():
                item = queue.get_nowait()
                started = time.perf_counter()
                writer.write(item)
                status, _ = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(connections)))
    return time.perf_counter() - started, latencies, statuses


def run(requests: int, connections: int, batch: int, workdir: Path, processes: int = 1) -> dict[str, Any]:
    redis_server = RedisServer(workdir / "redis").start()
    api = ApiServer(
        redis_server.url,
        workdir / "api.log",
        env={"REFEREE_API_KEYS": KEY, "REFEREE_MAX_QUEUED_PER_KEY": "100000000", "REFEREE_QUEUE_NAME": "bench"},
        processes=processes,
    ).start()
    port = api.port
    tag = uuid.uuid4().hex
    try:

        def singles(n: int, label: str) -> list[bytes]:
            return [
                request_bytes(port, "/v1/evaluations", {"reference": REFERENCE, "candidate": static_reject(f"{tag} {label} {i}")})
                for i in range(n)
            ]

        asyncio.run(drive(port, singles(300, "warm"), connections))  # warm the server (imports, pools)
        wall, latencies, statuses = asyncio.run(drive(port, singles(requests, "single"), connections))
        single = {
            "requests": requests,
            "connections": connections,
            "wall_s": round(wall, 3),
            "statuses": statuses,
            "accepted_per_s": round(statuses.get(202, 0) / wall, 1),
            "latency_ms": {"p50": round(percentile(latencies, 50) * 1e3, 2), "p99": round(percentile(latencies, 99) * 1e3, 2)},
        }
        batches = [
            request_bytes(
                port,
                "/v1/batches",
                {"items": [{"reference": REFERENCE, "candidate": static_reject(f"{tag} batch {b} {i}")} for i in range(batch)]},
            )
            for b in range(max(1, requests // batch))
        ]
        wall, latencies, statuses = asyncio.run(drive(port, batches, min(connections, 4)))
        batched = {
            "batches": len(batches),
            "items_per_batch": batch,
            "connections": min(connections, 4),
            "wall_s": round(wall, 3),
            "statuses": statuses,
            "accepted_per_s": round(statuses.get(202, 0) * batch / wall, 1),
            "latency_ms": {"p50": round(percentile(latencies, 50) * 1e3, 2), "p99": round(percentile(latencies, 99) * 1e3, 2)},
        }
    finally:
        api.stop()
        redis_server.kill()
    return {"single_requests": single, "batches": batched}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--processes", type=int, default=1, help="API processes (referee serve --processes)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="referee-bench-") as folder:
        figures = run(args.requests, args.connections, args.batch, Path(folder), args.processes)
    report = {
        "benchmark": "api_throughput",
        "machine": describe_machine(),
        "api_processes": args.processes,
        "date": time.strftime("%Y-%m-%d"),
        **figures,
    }
    print(json.dumps(report, indent=1))
    if args.out:
        write_result(args.out, report)


if __name__ == "__main__":
    main()
