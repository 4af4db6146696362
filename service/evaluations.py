"""Submitting evaluations and batches, and turning job outcomes into final results.

Every accepted evaluation ends with exactly one stored result: the worker's document, or an
`infrastructure_error` document when its job failed, timed out, was abandoned by a dead worker
with no retries left, or vanished from the queue. Results are collected when read and by the
periodic sweep (`maintain`), whichever comes first; the first one stored wins.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from triton_referee.worker.evaluate import plan_problem
from triton_referee.worker.models import EvalConfig, EvaluationJob, Problem, Submission, Verdict
from triton_referee.worker.static_checks import ProblemSourceError
from triton_referee.worker.unjudged import unjudged_result

from .exceptions import BadRequest, NotFound, QueueFull, TooLarge, Unavailable, Unprocessable
from .metrics import Metrics
from .queue import JobQueue, Outcome
from .schemas import BatchRequest, EvaluationRequest, ProblemRequest
from .settings import Settings
from .store import PENDING, Store

# A record exists a moment before its job is enqueued; only after this long is a missing job lost.
ENQUEUE_GRACE_S = 60.0


@dataclass
class Prepared:
    """A validated request, ready to enqueue once it has an id (`job`)."""

    digest: str  # dedup key: problem, candidate and options (a seed of None is part of it, its random salt is not)
    problem: Problem
    submission: Submission
    config: EvalConfig
    timeout_s: float
    name: str | None

    def job(self, evaluation_id: str) -> EvaluationJob:
        return EvaluationJob(id=evaluation_id, problem=self.problem, submission=self.submission, config=self.config)


@dataclass
class Admitted:
    id: str
    deduplicated: bool
    created_at: float | None = None  # set when this request created the job (it is queued now)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def _planned(source: str, input_sets_json: str) -> tuple[dict[str, int], ...]:
    """plan_problem, remembered: an RL group sends many candidates for one reference, and parsing it
    was a tenth of the API's CPU per submission. (Failures are not cached; they raise every time.)"""
    return tuple(plan_problem(source, json.loads(input_sets_json)))


class Evaluations:
    def __init__(self, settings: Settings, store: Store, queue: JobQueue, metrics: Metrics) -> None:
        self.settings = settings
        self.store = store
        self.queue = queue
        self.metrics = metrics

    # -- submission -----------------------------------------------------------------------------

    def _check_size(self, text: str, what: str) -> None:
        size = len(text.encode())
        if size > self.settings.max_source_bytes:
            raise TooLarge(f"{what} is {size} bytes; the limit is {self.settings.max_source_bytes} bytes", reason="source_size")

    def _validate_problem(self, source: str, input_sets: list[dict[str, int]] | None, what: str) -> list[dict[str, int]]:
        """The engine's own static problem checks, so an unusable reference is a 422 now, not a result later."""
        try:
            return [dict(s) for s in _planned(source, _canonical(input_sets))]
        except ProblemSourceError as exc:
            raise Unprocessable(f"{what}: {exc}", reason="problem_source") from exc

    def prepare(self, owner: str, request: EvaluationRequest, where: str = "") -> Prepared:
        self._check_size(request.candidate, f"{where}the candidate")
        if request.problem_id is not None:
            problem = self.store.problem(owner, request.problem_id)
            if problem is None:
                raise NotFound(
                    f"{where}problem {request.problem_id} is not registered (POST /v1/problems)", reason="unknown_problem"
                )
            source, problem_name = problem["source"], problem["name"]
        else:
            assert request.reference is not None
            self._check_size(request.reference, f"{where}the reference")
            source, problem_name = request.reference, "problem"
        self._validate_problem(source, request.input_sets, f"{where}the reference is not a usable problem")
        config = request.config()
        digest = _sha256(
            _canonical(
                {"problem": _sha256(source), "candidate": _sha256(request.candidate), "config": config.model_dump(mode="json")}
            )
        )
        submission = Submission(source=request.candidate, name=request.name or "candidate")
        timeout = request.timeout_s + self.settings.job_timeout_margin_s
        return Prepared(digest, Problem(source=source, name=problem_name), submission, config, timeout, request.name)

    def admit(self, owner: str, items: list[Prepared]) -> list[Admitted]:
        """Dedup, apply the per-key queued limit (all or nothing), record and enqueue.

        Three Redis round trips for any number of items (records and dedup claims; the limit and
        the pending index; the jobs): this is the API's hot path."""
        now = time.time()
        unique: dict[str, Prepared] = {}  # digest -> the first item with it in this request
        for item in items:
            unique.setdefault(item.digest, item)
        records: list[dict[str, Any]] = [
            {
                "id": uuid.uuid4().hex,
                "owner": owner,
                "created_at": now,
                "name": item.name,
                "digest": digest,
                "reward_preset": item.config.reward.preset,
            }
            for digest, item in unique.items()
        ]
        previous = self.store.put_evaluations_and_claim(owner, records, list(unique))
        resolved: dict[str, tuple[str, bool]] = {}  # digest -> (id, deduplicated)
        fresh: list[tuple[str, Prepared]] = []
        unused: list[str] = []
        for record, (digest, item), existing in zip(records, unique.items(), previous, strict=True):
            if existing is not None and not self._reusable(existing):
                self.store.replace_dedup(owner, digest, record["id"])
                existing = None
            if existing is None:
                fresh.append((record["id"], item))
            else:
                unused.append(record["id"])
            resolved[digest] = (existing or record["id"], existing is not None)
        if unused:
            self.store.delete_evaluations(unused)
        admitted: list[Admitted] = []
        seen: set[str] = set()
        for item in items:
            evaluation_id, deduplicated = resolved[item.digest]
            repeat = item.digest in seen or deduplicated
            admitted.append(Admitted(evaluation_id, repeat, None if repeat else now))
            seen.add(item.digest)
        new_ids = [new_id for new_id, _ in fresh]

        def undo() -> None:
            for new_id, item in fresh:
                self.store.release_dedup(owner, item.digest, new_id)
            self.store.delete_evaluations(new_ids)

        if new_ids and not self.store.reserve(owner, new_ids, self.settings.max_queued_per_key):
            undo()
            raise QueueFull(
                f"this API key already has {len(self.store.active(owner))} evaluations queued or running; "
                f"the limit is {self.settings.max_queued_per_key} (this request adds {len(new_ids)}): "
                "wait for results, then submit again",
                reason="queued_per_key",
                headers={"Retry-After": "10"},
            )
        try:
            self.queue.enqueue([(item.job(new_id), item.timeout_s) for new_id, item in fresh])
        except Exception as exc:
            self.store.release(owner, new_ids)
            undo()
            raise Unavailable(f"the queue is unavailable: {type(exc).__name__}: {exc}", reason="queue_unavailable") from exc
        self.metrics.submitted.labels("new").inc(len(new_ids))
        self.metrics.submitted.labels("deduplicated").inc(len(items) - len(new_ids))
        return admitted

    def _reusable(self, evaluation_id: str) -> bool:
        """An earlier identical job is reused unless it is gone or ended in an infrastructure error."""
        if self.store.evaluation(evaluation_id) is None:
            return False
        result = self.store.result(evaluation_id)
        return result is None or result.get("verdict") != "infrastructure_error"

    def idempotent(self, owner: str, kind: str, key: str | None, body: str) -> str | None:
        """The id an earlier request with this Idempotency-Key created, if any (422 if its body differed)."""
        if key is None:
            return None
        if not 1 <= len(key) <= 255:
            raise BadRequest("Idempotency-Key must be 1 to 255 characters", reason="idempotency_key")
        prior = self.store.idempotent(owner, kind, key)
        if prior is None:
            return None
        if prior["body"] != _sha256(body):
            raise Unprocessable(
                "this Idempotency-Key was used with a different request body; use a new key", reason="idempotency_key"
            )
        self.metrics.submitted.labels("idempotent_replay").inc()
        return prior["id"]

    def remember_idempotent(self, owner: str, kind: str, key: str | None, body: str, target_id: str) -> str:
        if key is None:
            return target_id
        prior = self.store.claim_idempotent(owner, kind, key, _sha256(body), target_id)
        return prior["id"] if prior is not None and prior["body"] == _sha256(body) else target_id

    def submit(self, owner: str, request: EvaluationRequest) -> Admitted:
        return self.admit(owner, [self.prepare(owner, request)])[0]

    def submit_batch(self, owner: str, request: BatchRequest) -> dict[str, Any]:
        if len(request.items) > self.settings.max_batch_items:
            raise TooLarge(
                f"the batch has {len(request.items)} items; the limit is {self.settings.max_batch_items}", reason="batch_size"
            )
        prepared = [self.prepare(owner, item, f"item {index}: ") for index, item in enumerate(request.items)]
        admitted = self.admit(owner, prepared)
        batch = {
            "id": uuid.uuid4().hex,
            "owner": owner,
            "name": request.name,
            "created_at": time.time(),
            "items": [a.id for a in admitted],
            "deduplicated": [a.deduplicated for a in admitted],
        }
        self.store.put_batch(batch)
        return batch

    # -- problems -------------------------------------------------------------------------------

    def register_problem(self, owner: str, request: ProblemRequest) -> tuple[dict[str, Any], bool]:
        self._check_size(request.source, "the problem source")
        input_sets = self._validate_problem(request.source, None, "the source is not a usable problem")
        problem_id = _sha256(request.source)
        existing = self.store.problem(owner, problem_id)
        if existing is not None:
            return existing, False
        problem = {
            "id": problem_id,
            "name": request.name,
            "input_sets": input_sets,
            "created_at": time.time(),
            "source": request.source,
        }
        self.store.put_problem(owner, problem)
        return problem, True

    # -- reading and collecting results ---------------------------------------------------------

    def view(self, owner: str, evaluation_id: str) -> dict[str, Any] | None:
        """The result document, or a status document; None if there is no such evaluation for `owner`."""
        record = self.store.evaluation(evaluation_id)
        if record is None or record["owner"] != owner:
            return None
        return self.collect([record])[evaluation_id]

    def collect(self, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Final results for `records` where there are (collecting finished jobs now), else status documents."""
        views: dict[str, dict[str, Any]] = {}
        results = self.store.results([r["id"] for r in records])
        waiting = []
        for record, result in zip(records, results, strict=True):
            if result is not None:
                views[record["id"]] = result
            else:
                waiting.append(record)
        if not waiting:
            return views
        outcomes = self.queue.outcomes([r["id"] for r in waiting])
        for record in waiting:
            outcome = outcomes[record["id"]]
            if outcome.state == "missing" and time.time() - record["created_at"] < ENQUEUE_GRACE_S:
                outcome = Outcome("queued")  # recorded a moment ago, being enqueued now
            if outcome.state in ("queued", "started"):
                views[record["id"]] = {
                    "id": record["id"],
                    "status": outcome.state,
                    "created_at": record["created_at"],
                    "name": record.get("name"),
                }
            else:
                views[record["id"]] = self._finalize(record, outcome)
        return views

    def _finalize(self, record: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
        evaluation_id = record["id"]
        if outcome.state == "missing":
            # Another replica may have stored the result and dropped the job since we looked.
            stored = self.store.result(evaluation_id)
            if stored is not None:
                return stored
        if outcome.state == "finished" and isinstance(outcome.document, dict):
            document = outcome.document
        else:
            why = outcome.error if outcome.state == "failed" else "the job was lost from the queue (expired or deleted)"
            if outcome.state == "finished":
                why = "the worker returned no result document"
            document = unjudged_result(
                evaluation_id,
                Verdict.infrastructure_error,
                f"the evaluation could not be completed: {why}"[:4000],
                reward_preset=record.get("reward_preset", "tritonrl"),
            ).model_dump(mode="json")
        document["id"] = evaluation_id
        if outcome.enqueued_at and outcome.started_at and isinstance(document.get("timings_ms"), dict):
            document["timings_ms"]["queued"] = max(0.0, (outcome.started_at - outcome.enqueued_at) * 1e3)
        if self.store.save_result(evaluation_id, record["owner"], document):
            self.metrics.observe_result(document)
        else:
            document = self.store.result(evaluation_id) or document
        self.queue.forget([evaluation_id])
        return document

    def batch_view(
        self, owner: str, batch_id: str, *, results: bool = True, only: set[int] | None = None
    ) -> dict[str, Any] | None:
        batch = self.store.batch(batch_id)
        if batch is None or batch["owner"] != owner:
            return None
        ids = batch["items"]
        wanted = sorted({ids[i] for i in only} if only is not None else set(ids))
        records = [r for r in self.store.evaluations(wanted) if r is not None]
        views = self.collect(records)
        for lost in set(wanted) - set(views):  # the record expired with the result TTL
            views[lost] = unjudged_result(
                lost, Verdict.infrastructure_error, "the evaluation's record and result have expired (REFEREE_RESULT_TTL_S)"
            ).model_dump(mode="json")
        items = []
        for index, evaluation_id in enumerate(ids):
            if only is not None and index not in only:
                continue
            view = views[evaluation_id]
            done = "verdict" in view
            items.append(
                {
                    "index": index,
                    "id": evaluation_id,
                    "status": "completed" if done else view["status"],
                    "deduplicated": batch["deduplicated"][index],
                    "result": view if done else None,
                }
            )
        completed = [item for item in items if item["status"] == "completed"]
        summary = {
            "id": batch["id"],
            "name": batch.get("name"),
            "total": len(ids),
            "created_at": batch["created_at"],
            "status": "completed" if len(completed) == len(items) and only is None else "running",
            "completed": len(completed),
            "verdicts": dict(Counter(item["result"]["verdict"] for item in completed)),
        }
        if results:
            summary["items"] = items
        return summary

    # -- maintenance ----------------------------------------------------------------------------

    def maintain(self) -> None:
        """Sweep: let RQ retry or fail jobs of dead workers, then collect every finished or failed job."""
        self.queue.maintain(self.settings.maintenance_interval_s)
        pending = self.store.pending()
        for start in range(0, len(pending), 500):
            chunk = pending[start : start + 500]
            records = self.store.evaluations(chunk)
            gone = [i for i, r in zip(chunk, records, strict=True) if r is None]
            if gone:
                self.store.kv.set_remove(PENDING, gone)
            self.collect([r for r in records if r is not None])
