"""Prometheus metrics of one API process (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STAGE_BUCKETS = (0.005, 0.05, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600, 1800)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submitted = Counter("referee_evaluations_submitted", "evaluations accepted, by how", ["how"], registry=r)
        self.rejected = Counter("referee_requests_rejected", "requests refused by a limit or auth", ["reason"], registry=r)
        self.verdicts = Counter("referee_verdicts", "final results by verdict", ["verdict"], registry=r)
        self.stage_seconds = Histogram(
            "referee_stage_seconds",
            "time per evaluation stage (queued, static, reference, candidate, total)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.http_seconds = Histogram(
            "referee_http_request_seconds", "HTTP request latency", ["method", "route", "status"], registry=r
        )
        self.queue_depth = Gauge("referee_queue_depth", "jobs waiting in the queue", registry=r)
        self.pending = Gauge("referee_evaluations_pending", "evaluations queued or running (not final)", registry=r)
        self.workers = Gauge("referee_workers", "live workers by state", ["state"], registry=r)
        self.worker_busy = Gauge("referee_worker_busy", "1 while the worker (one per GPU) runs a job", ["worker"], registry=r)

    def observe_result(self, document: dict[str, Any]) -> None:
        self.verdicts.labels(document.get("verdict", "unknown")).inc()
        for stage, ms in (document.get("timings_ms") or {}).items():
            if isinstance(ms, (int, float)) and ms > 0:
                self.stage_seconds.labels(stage).observe(ms / 1e3)

    def render(self) -> bytes:
        return generate_latest(self.registry)
