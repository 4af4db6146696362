"""Where evaluations wait and run: RQ on Redis, or a queue and worker threads inside the API process.

Both report each job as an `Outcome`; the service turns finished and failed outcomes into final
results (service/evaluations.py). Neither writes the service's records.
"""

from __future__ import annotations

import queue as stdlib_queue
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import redis
from rq import Queue, Retry, Worker
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.results import Result
from rq.serializers import JSONSerializer
from tenacity import Retrying, stop_after_attempt

from triton_referee.worker.jobs import run_evaluation
from triton_referee.worker.models import EvaluationJob

JOB_FUNCTION = "triton_referee.worker.jobs.run_evaluation"

State = Literal["queued", "started", "finished", "failed", "missing"]


@dataclass
class Outcome:
    state: State
    document: dict[str, Any] | None = None  # the job's return value, when finished
    error: str | None = None  # why it failed, when failed
    enqueued_at: float | None = None  # epoch seconds
    started_at: float | None = None


@dataclass
class WorkerInfo:
    name: str
    state: str
    last_heartbeat: float | None
    current_job: str | None


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


class RQQueue:
    """Jobs in an RQ queue: JSON-serialised, with a timeout, retries, and RQ's registries."""

    def __init__(self, connection: redis.Redis, name: str, *, retries: int, result_ttl: int, worker_stale_s: float) -> None:
        self.connection = connection
        self.queue = Queue(name, connection=connection, serializer=JSONSerializer)
        self.retries = retries
        self.result_ttl = result_ttl
        self.worker_stale_s = worker_stale_s

    def enqueue(self, jobs: list[tuple[EvaluationJob, float]]) -> None:
        """Enqueue (job, timeout seconds) pairs in one round trip; RQ stores each job's JSON form."""
        self.queue.enqueue_many(
            [
                Queue.prepare_data(
                    JOB_FUNCTION,
                    args=(job.model_dump(mode="json"),),
                    job_id=job.id,
                    timeout=int(timeout) + 1,
                    result_ttl=self.result_ttl,
                    failure_ttl=self.result_ttl,
                    ttl=self.result_ttl,
                    retry=Retry(max=self.retries) if self.retries else None,
                    description=f"evaluation {job.id}",
                )
                for job, timeout in jobs
            ]
        )

    def outcomes(self, ids: list[str]) -> dict[str, Outcome]:
        found: dict[str, Outcome] = {}
        for job_id, job in zip(ids, Job.fetch_many(ids, connection=self.connection, serializer=JSONSerializer), strict=True):
            found[job_id] = self._outcome(job) if job is not None else Outcome("missing")
        return found

    def _outcome(self, job: Job) -> Outcome:
        status = job.get_status(refresh=False)
        times: dict[str, Any] = {"enqueued_at": _epoch(job.enqueued_at), "started_at": _epoch(job.started_at)}
        if status == JobStatus.FINISHED:
            return Outcome("finished", document=job.return_value(), **times)
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            latest = job.latest_result()
            reason = (latest.exc_string or "").strip() if latest is not None else ""
            return Outcome("failed", error=reason or f"the job ended as {status.value}", **times)
        if status == JobStatus.STARTED:
            return Outcome("started", **times)
        return Outcome("queued", **times)

    def forget(self, ids: list[str]) -> None:
        """Drop jobs whose outcome the service has recorded."""
        for job in Job.fetch_many(ids, connection=self.connection, serializer=JSONSerializer):
            if job is None:
                continue
            try:
                job.delete()
            except Exception:
                # RQ cannot delete a job whose abandoned execution record is already gone; let it expire.
                for key in (job.key, job.execution_registry.key, Result.get_key(job.id)):
                    self.connection.expire(key, 3600)

    def maintain(self, interval_s: float) -> None:
        """Retry or fail jobs whose worker stopped heart-beating (a dead worker, machine or horse).

        Workers run the same sweep only every few minutes; the API runs it often, one replica at a
        time, so a job is never left 'started' for longer than the heartbeat grace plus this interval.
        """
        lock = f"referee:maintenance:{self.queue.name}"
        if self.connection.set(lock, "1", nx=True, px=max(100, int(interval_s * 900))):
            StartedJobRegistry(queue=self.queue).cleanup()

    def depth(self) -> int:
        return self.queue.count

    def workers(self) -> list[WorkerInfo]:
        now = time.time()
        live = []
        for worker in Worker.all(queue=self.queue):
            beat = _epoch(worker.last_heartbeat)
            if beat is not None and now - beat > self.worker_stale_s:
                continue
            live.append(WorkerInfo(worker.name, str(worker.get_state()), beat, worker.get_current_job_id()))
        return live

    def ping(self) -> bool:
        return bool(self.connection.ping())

    def close(self) -> None:
        self.connection.close()


class EmbeddedQueue:
    """Jobs in a thread-safe queue, run by worker threads of this process (no Redis)."""

    def __init__(self, workers: int, *, retries: int) -> None:
        self.retries = retries
        self._jobs: stdlib_queue.Queue[tuple[str, dict[str, Any]] | None] = stdlib_queue.Queue()
        self._lock = threading.Lock()
        self._outcomes: dict[str, Outcome] = {}
        self._busy: dict[str, str] = {}
        self._threads = [threading.Thread(target=self._work, name=f"referee-embedded-{n}", daemon=True) for n in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            if not thread.is_alive() and thread.ident is None:
                thread.start()

    def enqueue(self, jobs: list[tuple[EvaluationJob, float]]) -> None:
        """Queue the jobs' JSON form, as RQ would: the job function validates what it is given."""
        now = time.time()
        with self._lock:
            for job, _ in jobs:
                self._outcomes[job.id] = Outcome("queued", enqueued_at=now)
        for job, _ in jobs:
            self._jobs.put((job.id, job.model_dump(mode="json")))

    def _work(self) -> None:
        name = threading.current_thread().name
        while (item := self._jobs.get()) is not None:
            job_id, job = item
            with self._lock:
                outcome = self._outcomes.get(job_id) or Outcome("queued", enqueued_at=time.time())
                outcome.state, outcome.started_at = "started", time.time()
                self._outcomes[job_id] = outcome
                self._busy[name] = job_id
            # As RQ's Retry: `retries` more attempts, at once. The engine enforces the evaluation's own
            # timeout, so no attempt can hang forever.
            retrying = Retrying(stop=stop_after_attempt(self.retries + 1), reraise=True)
            try:
                document = retrying(run_evaluation, job)
                outcome = Outcome("finished", document=document, enqueued_at=outcome.enqueued_at, started_at=outcome.started_at)
            except Exception as exc:
                attempts = retrying.statistics.get("attempt_number", 1)
                outcome = Outcome(
                    "failed",
                    error=f"{type(exc).__name__}: {exc} (attempt {attempts})",
                    enqueued_at=outcome.enqueued_at,
                    started_at=outcome.started_at,
                )
            with self._lock:
                self._outcomes[job_id] = outcome
                self._busy.pop(name, None)

    def outcomes(self, ids: list[str]) -> dict[str, Outcome]:
        with self._lock:
            return {job_id: self._outcomes.get(job_id, Outcome("missing")) for job_id in ids}

    def forget(self, ids: list[str]) -> None:
        with self._lock:
            for job_id in ids:
                if (outcome := self._outcomes.get(job_id)) is not None and outcome.state in ("finished", "failed"):
                    del self._outcomes[job_id]

    def maintain(self, interval_s: float) -> None:
        """Nothing to sweep: a job dies only with this process, which loses the memory store too."""

    def depth(self) -> int:
        return self._jobs.qsize()

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            busy = dict(self._busy)
        now = time.time()
        return [
            WorkerInfo(t.name, "busy" if t.name in busy else "idle", now, busy.get(t.name)) for t in self._threads if t.is_alive()
        ]

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)


JobQueue = RQQueue | EmbeddedQueue
