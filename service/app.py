"""The FastAPI application: `create_app(settings)` wires the store, the queue, metrics and routes.

Run it with `referee serve` (embedded unless REFEREE_REDIS_URL or --redis-url is given), or
`uvicorn --factory triton_referee.service.app:create_app`.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from triton_referee.worker import context

from .evaluations import Evaluations
from .exceptions import RefereeError
from .integrations.openrlhf import KeyFromQuery
from .integrations.openrlhf import router as openrlhf_router
from .metrics import Metrics
from .queue import EmbeddedQueue, JobQueue, RQQueue
from .routes import router
from .settings import Settings
from .store import MemoryKV, RedisKV, Store

log = logging.getLogger("referee")


def _version() -> str:
    """pyproject.toml's version, as installed; a checkout run without installing (the GPU host runs
    the repository with the system python3) says so instead of failing to start."""
    try:
        return importlib.metadata.version("triton-referee")
    except importlib.metadata.PackageNotFoundError:
        return "0+checkout"


VERSION = _version()


class AsciiJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a 422 echoes the input, which may hold lone
    surrogates that UTF-8 cannot encode (starlette's default rendering would fail with a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


async def _refused(request: Request, exc: Exception) -> JSONResponse:
    """Every refusal of the domain (`service/exceptions.py`), answered here and only here."""
    assert isinstance(exc, RefereeError)
    if exc.reason is not None:
        request.app.state.metrics.rejected.labels(exc.reason).inc()
    return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers or None)


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """Redis down or unreachable: a 503 the clients retry, with what broke, never a bare 500."""
    request.app.state.metrics.rejected.labels("store_unavailable").inc()
    log.warning("Redis unavailable for %s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return AsciiJSONResponse(
        {"detail": f"the store and queue (Redis) are unavailable: {type(exc).__name__}: {exc}"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """413 for a body over the limit, before it is read in full or parsed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(scope, receive, send, int(length))
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _BodyTooLarge:
            if not started:
                await self._refuse(scope, receive, send, received)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        detail = f"the request body is {'over ' if size else ''}{size} bytes; the limit is {self.limit} bytes"
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


class Observe:
    """Request latency per route and status. Plain ASGI: starlette's BaseHTTPMiddleware costs a task
    group per request, a sixth of the API's CPU on the submission path."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaping the app is answered 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            route = scope.get("route")
            self.metrics.http_seconds.labels(scope["method"], getattr(route, "path", "unmatched"), str(status)).observe(
                time.perf_counter() - started
            )


def _build(settings: Settings) -> tuple[Store, JobQueue]:
    if settings.embedded:
        return Store(MemoryKV(), settings.result_ttl_s), EmbeddedQueue(settings.embedded_workers, retries=settings.job_retries)
    assert settings.redis_url is not None  # not embedded
    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30)
    queue = RQQueue(
        connection,
        settings.queue_name,
        retries=settings.job_retries,
        result_ttl=settings.result_ttl_s,
        worker_stale_s=settings.worker_stale_s,
    )
    return Store(RedisKV(connection), settings.result_ttl_s), queue


def _maintenance(referee: Evaluations, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            referee.maintain()
        except Exception:  # Redis away for a moment: try again next round, never die
            log.exception("maintenance sweep failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.check()
    store, queue = _build(settings)
    metrics = Metrics()
    referee = Evaluations(settings, store, queue, metrics)
    stop = threading.Event()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        host = None
        if isinstance(queue, EmbeddedQueue):
            # This process runs the jobs: set up their context (backend, warm pool, caches) from the
            # settings, once. Two harness processes per evaluation: enough spares for every thread.
            spares = max(settings.pool_spares, 2 * settings.embedded_workers)
            host = await asyncio.to_thread(context.start, settings, data_in_files=False, pool_spares=spares)
            queue.start()
        sweeper = threading.Thread(
            target=_maintenance, args=(referee, settings.maintenance_interval_s, stop), name="referee-maintenance", daemon=True
        )
        sweeper.start()
        yield
        stop.set()
        sweeper.join(timeout=10)
        queue.close()
        if host is not None:
            context.stop(host)

    app = FastAPI(
        title="Triton Referee",
        version=VERSION,
        lifespan=lifespan,
        description="Verifies Triton kernels against PyTorch references: correctness, speed and anti-cheat, "
        "as one reward JSON document per evaluation.",
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.referee = referee
    app.include_router(router)
    app.include_router(openrlhf_router)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RefereeError, _refused)
    app.add_exception_handler(redis.exceptions.RedisError, _store_unavailable)
    app.add_middleware(KeyFromQuery)  # OpenRLHF sends no headers: its URL may carry the key

    app.add_middleware(Observe, metrics=metrics)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
