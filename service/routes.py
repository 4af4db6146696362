"""The HTTP routes. Store and queue calls block, so they run in the thread pool; waiting is async."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from triton_referee.worker.models import EvaluationResult

from .auth import require_owner
from .evaluations import Evaluations
from .exceptions import NotFound
from .schemas import (
    Batch,
    BatchRequest,
    ErrorBody,
    EvaluationRequest,
    EvaluationStatus,
    Health,
    Problem,
    ProblemRequest,
    Readiness,
    WorkerState,
)

router = APIRouter()
Owner = Annotated[str, Depends(require_owner)]
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", description="same key and body -> the same job, once")]
POLL_S = 0.2

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "a body that is not JSON text in UTF-8, or (evaluations, batches) an Idempotency-Key that is not 1 to 255 characters",
    },
    401: {"model": ErrorBody, "description": "missing or unknown API key"},
    404: {"model": ErrorBody, "description": "no such resource for this API key"},
    413: {"model": ErrorBody, "description": "a source, the batch or the body is over its limit"},
    422: {"description": "invalid request, an unusable reference, or an Idempotency-Key reused with another body"},
    429: {"model": ErrorBody, "description": "too many evaluations queued for this API key"},
    503: {"model": ErrorBody, "description": "the queue is unavailable"},
}


def _referee(request: Request) -> Evaluations:
    return request.app.state.referee


def _wait_limit(request: Request, wait: float | None) -> float:
    return min(wait or 0.0, request.app.state.settings.max_wait_s)


async def _wait_for(referee: Evaluations, owner: str, evaluation_id: str, wait: float) -> dict[str, Any] | None:
    started = time.monotonic()
    deadline = started + wait
    while True:
        view = await run_in_threadpool(referee.view, owner, evaluation_id)
        now = time.monotonic()
        if view is None or "verdict" in view or now >= deadline:
            return view
        # Every 50 ms while a small evaluation may be finishing (its answer is not held back by the
        # poll), then every POLL_S.
        pause = POLL_S / 4 if now - started < 10 else POLL_S
        await asyncio.sleep(min(pause, max(0.0, deadline - now)))


def _evaluation_response(view: dict[str, Any], deduplicated: bool = False) -> JSONResponse:
    headers = {"Location": f"/v1/evaluations/{view['id']}"}
    if "verdict" in view:
        if deduplicated:
            headers["Referee-Deduplicated"] = "true"
        return JSONResponse(view, status_code=200, headers=headers)
    return JSONResponse({**view, "deduplicated": deduplicated}, status_code=202, headers=headers)


EVALUATION_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": EvaluationResult, "description": "completed: the result document"},
    202: {"model": EvaluationStatus, "description": "accepted, not completed yet: poll GET /v1/evaluations/{id}"},
}


@router.post(
    "/v1/evaluations", response_model=None, status_code=202, tags=["evaluations"], responses={**EVALUATION_RESPONSES, **ERRORS}
)
async def create_evaluation(
    body: EvaluationRequest,
    request: Request,
    owner: Owner,
    idempotency_key: IdempotencyKey = None,
    wait: Annotated[float | None, Query(ge=0, description="block up to this many seconds for the result")] = None,
) -> JSONResponse:
    """Queue one evaluation. Identical submissions (same problem, candidate and options) get the
    existing job; 200 with the result document once it is completed, else 202 with its status."""
    referee = _referee(request)
    canonical = body.model_dump_json()

    def submit() -> tuple[str, bool, float | None]:
        prior = referee.idempotent(owner, "evaluation", idempotency_key, canonical)
        if prior is not None:
            return prior, False, None
        admitted = referee.submit(owner, body)
        evaluation_id = referee.remember_idempotent(owner, "evaluation", idempotency_key, canonical, admitted.id)
        return evaluation_id, admitted.deduplicated, admitted.created_at if evaluation_id == admitted.id else None

    evaluation_id, deduplicated, created_at = await run_in_threadpool(submit)
    wait_s = _wait_limit(request, wait)
    if created_at is not None and wait_s == 0:
        # Enqueued by this very request and nobody waits: it is queued; skip reading it back (the hot path).
        queued = {"id": evaluation_id, "status": "queued", "created_at": created_at, "name": body.name}
        return _evaluation_response(queued, deduplicated=False)
    view = await _wait_for(referee, owner, evaluation_id, wait_s)
    if view is None:  # expired between submission and now
        raise NotFound(f"evaluation {evaluation_id} not found")
    return _evaluation_response(view, deduplicated)


@router.get(
    "/v1/evaluations/{evaluation_id}",
    response_model=None,
    tags=["evaluations"],
    responses={
        200: {"model": EvaluationResult | EvaluationStatus, "description": "the result document, or the status while it runs"},
        **{k: ERRORS[k] for k in (401, 404)},
    },
)
async def get_evaluation(
    evaluation_id: str,
    request: Request,
    owner: Owner,
    wait: Annotated[float | None, Query(ge=0, description="block up to this many seconds for the result")] = None,
) -> JSONResponse:
    view = await _wait_for(_referee(request), owner, evaluation_id, _wait_limit(request, wait))
    if view is None:
        raise NotFound(f"evaluation {evaluation_id} not found")
    return JSONResponse(view)


@router.post("/v1/batches", response_model=Batch, status_code=202, tags=["batches"], responses=ERRORS)
async def create_batch(
    body: BatchRequest, request: Request, owner: Owner, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Queue many evaluations at once (all accepted, or none). Follow it with GET /v1/batches/{id}."""
    referee = _referee(request)
    canonical = body.model_dump_json()

    def submit() -> str:
        prior = referee.idempotent(owner, "batch", idempotency_key, canonical)
        if prior is not None:
            return prior
        batch = referee.submit_batch(owner, body)
        return referee.remember_idempotent(owner, "batch", idempotency_key, canonical, batch["id"])

    batch_id = await run_in_threadpool(submit)
    view = await run_in_threadpool(referee.batch_view, owner, batch_id)
    if view is None:
        raise NotFound(f"batch {batch_id} not found")
    return JSONResponse(view, status_code=202, headers={"Location": f"/v1/batches/{batch_id}"})


@router.get(
    "/v1/batches/{batch_id}",
    response_model=Batch,
    tags=["batches"],
    responses={
        200: {
            "content": {"application/x-ndjson": {}},
            "description": "JSON progress and results; with ?format=ndjson one line per item (index, id, status, result)",
        },
        **{k: ERRORS[k] for k in (401, 404)},
    },
)
async def get_batch(
    batch_id: str,
    request: Request,
    owner: Owner,
    format: Annotated[Literal["json", "ndjson"], Query(description="ndjson streams one line per item")] = "json",
    results: Annotated[bool, Query(description="include the items and their results (json)")] = True,
    wait: Annotated[
        float | None, Query(ge=0, description="ndjson: follow the batch this many seconds, sending each item as it completes")
    ] = None,
) -> Response:
    referee = _referee(request)
    view = await run_in_threadpool(referee.batch_view, owner, batch_id, results=format == "json" and results)
    if view is None:
        raise NotFound(f"batch {batch_id} not found")
    if format == "json":
        return JSONResponse(view)
    return StreamingResponse(
        _ndjson(referee, owner, batch_id, view["total"], _wait_limit(request, wait)), media_type="application/x-ndjson"
    )


async def _ndjson(referee: Evaluations, owner: str, batch_id: str, total: int, wait: float) -> AsyncIterator[bytes]:
    """Each item exactly once: completed ones as soon as they are, the rest as status lines at the end."""
    deadline = time.monotonic() + wait
    left = set(range(total))
    chunk = 200
    while left:
        last_round = time.monotonic() >= deadline
        order = sorted(left)
        for start in range(0, len(order), chunk):
            indexes = set(order[start : start + chunk])
            view = await run_in_threadpool(referee.batch_view, owner, batch_id, only=indexes)
            if view is None:
                return
            for item in view["items"]:
                if item["status"] == "completed" or last_round:
                    left.discard(item["index"])
                    yield json.dumps(item).encode() + b"\n"
        if left:
            await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


@router.post(
    "/v1/problems",
    response_model=Problem,
    status_code=201,
    tags=["problems"],
    responses={200: {"model": Problem, "description": "already registered"}, **{k: ERRORS[k] for k in (400, 401, 413, 422)}},
)
async def create_problem(body: ProblemRequest, request: Request, owner: Owner) -> JSONResponse:
    """Register a reference once (validated now); submit candidates against it with `problem_id`."""
    problem, created = await run_in_threadpool(_referee(request).register_problem, owner, body)
    return JSONResponse(problem, status_code=201 if created else 200, headers={"Location": f"/v1/problems/{problem['id']}"})


@router.get("/v1/problems/{problem_id}", response_model=Problem, tags=["problems"], responses={k: ERRORS[k] for k in (401, 404)})
async def get_problem(problem_id: str, request: Request, owner: Owner) -> JSONResponse:
    problem = await run_in_threadpool(_referee(request).store.problem, owner, problem_id)
    if problem is None:
        raise NotFound(f"problem {problem_id} not found")
    return JSONResponse(problem)


@router.get("/healthz", response_model=Health, tags=["operations"])
async def healthz() -> Health:
    """The process answers (liveness)."""
    return Health()


@router.get(
    "/readyz", response_model=Readiness, tags=["operations"], responses={503: {"model": Readiness, "description": "not ready"}}
)
async def readyz(request: Request) -> JSONResponse:
    """Ready when the queue answers and at least one worker is live."""
    referee = _referee(request)
    kind: Literal["redis", "embedded"] = "embedded" if request.app.state.settings.embedded else "redis"

    def probe() -> Readiness:
        try:
            referee.queue.ping()
            workers = referee.queue.workers()
            depth = referee.queue.depth()
        except Exception as exc:
            return Readiness(
                ready=False, queue=kind, queue_reachable=False, reason=f"queue unreachable: {type(exc).__name__}: {exc}"
            )
        states = [WorkerState(**vars(w)) for w in workers]
        return Readiness(
            ready=bool(workers),
            queue=kind,
            queue_reachable=True,
            queue_depth=depth,
            workers=states,
            reason=None if workers else "no live worker",
        )

    readiness = await run_in_threadpool(probe)
    return JSONResponse(readiness.model_dump(), status_code=200 if readiness.ready else 503)


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request) -> Response:
    referee = _referee(request)
    m = request.app.state.metrics

    def sample() -> bytes:
        try:
            m.queue_depth.set(referee.queue.depth())
            m.pending.set(len(referee.store.pending()))
            workers = referee.queue.workers()
        except Exception:
            workers = []  # the queue is down: /readyz says so; metrics still answer
        m.workers.clear()
        m.worker_busy.clear()
        for state in ("idle", "busy", "suspended", "started"):
            m.workers.labels(state).set(sum(w.state == state for w in workers))
        for w in workers:
            m.worker_busy.labels(w.name).set(1 if w.current_job else 0)
        return m.render()

    return Response(await run_in_threadpool(sample), media_type=CONTENT_TYPE_LATEST)
