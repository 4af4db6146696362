"""HTTP clients for the API (httpx): `RefereeClient` (sync) and `AsyncRefereeClient`.

Used by `referee submit`, `referee batch`, `referee demo` and the RL trainer adapters in
`service/integrations/`. Never imports torch.

    with RefereeClient("http://127.0.0.1:8000") as client:
        result = client.evaluate(reference_src, candidate_src, trials=3)   # an EvaluationResult
        results = client.evaluate_many([{"reference": ..., "candidate": ...}, ...], concurrency=8)

Transient failures (connection errors, 429, 502, 503, 504) are retried with exponential backoff
and jitter (`retries`, `backoff`); a 429's `Retry-After` is honoured. Other 4xx are `ApiError`.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from sandbox.models import EvaluationResult, Verdict

from .auth import API_KEY_HEADER

RETRY_STATUSES = frozenset({429, 502, 503, 504})


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return detail if isinstance(detail, str) else json.dumps(detail)


def _delay(attempt: int, backoff: float, response: httpx.Response | None) -> float:
    if response is not None and response.status_code == 429:
        retry_after = response.headers.get("Retry-After", "")
        if retry_after.replace(".", "", 1).isdigit():
            return min(float(retry_after), 60.0)
    return min(backoff * (2 ** attempt), 30.0) * (0.5 + random.random() / 2)


def request_body(reference: str | None = None, candidate: str = "", *, problem_id: str | None = None,
                 name: str | None = None, **options: Any) -> dict[str, Any]:
    """The JSON body of POST /v1/evaluations (options are the engine's: trials, seed, reward, ...)."""
    body: dict[str, Any] = {"candidate": candidate, **{k: v for k, v in options.items() if v is not None}}
    if problem_id is not None:
        body["problem_id"] = problem_id
    else:
        body["reference"] = reference
    if name is not None:
        body["name"] = name
    return body


def missing_result(evaluation_id: str, message: str) -> EvaluationResult:
    """What a caller gets when no result came back in time: infrastructure_error, reward 0."""
    return EvaluationResult(id=evaluation_id, status="failed", verdict=Verdict.infrastructure_error,
                            error={"kind": "infrastructure_error", "message": message},
                            feedback=f"Referee failed to evaluate this submission (not your fault): {message}")


class RefereeClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 0.5, transport: httpx.BaseTransport | None = None) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.retries, self.backoff = retries, backoff

    def __enter__(self) -> RefereeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise ApiError(response.status_code, _detail(response))
        return response

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on connection errors and 429/502/503/504 with backoff."""
        attempt = 0
        while True:
            try:
                response = self.http.request(method, url, **kwargs)
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
                time.sleep(_delay(attempt, self.backoff, None))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                time.sleep(_delay(attempt, self.backoff, response))
                attempt += 1
                continue
            return self._check(response)

    # --- the raw API (dicts) ---------------------------------------------------------------------

    def submit(self, body: dict[str, Any], wait: float = 0.0, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"wait": wait} if wait else {}
        return self._request("POST", "/v1/evaluations", json=body, params=params, headers=headers, timeout=wait + 60).json()

    def evaluation(self, evaluation_id: str, wait: float = 0.0) -> dict[str, Any]:
        params = {"wait": wait} if wait else {}
        return self._request("GET", f"/v1/evaluations/{evaluation_id}", params=params, timeout=wait + 60).json()

    def result(self, evaluation_id: str, timeout: float = 3600.0) -> dict[str, Any]:
        """Long-poll until the result document is there (or `timeout` passes: then the status view)."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.evaluation(evaluation_id, wait=min(60.0, max(0.0, deadline - time.monotonic())))
            if "verdict" in view or time.monotonic() >= deadline:
                return view

    def create_batch(self, items: list[dict[str, Any]], name: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/v1/batches", json={"items": items, "name": name}, headers=headers).json()

    def batch(self, batch_id: str, results: bool = True) -> dict[str, Any]:
        return self._request("GET", f"/v1/batches/{batch_id}", params={"results": results}).json()

    def stream(self, batch_id: str, wait: float = 0.0) -> Iterator[dict[str, Any]]:
        """The batch's items as NDJSON lines, each once; completed ones as they complete, for `wait` seconds."""
        with self.http.stream("GET", f"/v1/batches/{batch_id}", params={"format": "ndjson", "wait": wait}, timeout=wait + 60) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def follow(self, batch_id: str, total: int, on_item: Callable[[dict[str, Any]], None], timeout: float = 3600.0) -> dict[int, dict[str, Any]]:
        """Every item's result, calling `on_item` as each completes (re-following while some are pending)."""
        done: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(done) < total and time.monotonic() < deadline:
            for item in self.stream(batch_id, wait=min(300.0, max(1.0, deadline - time.monotonic()))):
                if item["status"] == "completed" and item["index"] not in done:
                    done[item["index"]] = item["result"]
                    on_item(item)
        return done

    def healthy(self) -> bool:
        try:
            return self.http.get("/healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    # --- typed helpers ----------------------------------------------------------------------------

    def wait(self, evaluation_id: str, timeout: float = 3600.0) -> EvaluationResult:
        """The result of an evaluation, waiting for it; `infrastructure_error` if none came in `timeout`."""
        view = self.result(evaluation_id, timeout=timeout)
        if "verdict" not in view:
            return missing_result(evaluation_id, f"no result after {timeout:g} s (status {view.get('status')})")
        return EvaluationResult.model_validate(view)

    def evaluate(self, reference: str | None = None, candidate: str = "", *, problem_id: str | None = None,
                 timeout: float = 3600.0, idempotency_key: str | None = None, **options: Any) -> EvaluationResult:
        """Submit one evaluation and wait for its result document."""
        body = request_body(reference, candidate, problem_id=problem_id, **options)
        view = self.submit(body, wait=min(timeout, 60.0), idempotency_key=idempotency_key)
        if "verdict" in view:
            return EvaluationResult.model_validate(view)
        return self.wait(view["id"], timeout=timeout)

    def evaluate_many(self, bodies: Sequence[dict[str, Any]], concurrency: int = 8, timeout: float = 3600.0,
                      on_result: Callable[[int, EvaluationResult], None] | None = None) -> list[EvaluationResult]:
        """Evaluate many request bodies with at most `concurrency` in flight; results in input order.

        An item the server refuses (4xx) or that never finishes gets an `infrastructure_error`
        result rather than failing the whole call, so a trainer always gets one result per item."""
        results: list[EvaluationResult | None] = [None] * len(bodies)
        lock = threading.Lock()

        def one(index: int) -> None:
            try:
                result = self.evaluate(**{"timeout": timeout, **_as_kwargs(bodies[index])})
            except (ApiError, httpx.HTTPError) as exc:
                result = missing_result(f"item-{index}", f"{type(exc).__name__}: {exc}")
            results[index] = result
            if on_result is not None:
                with lock:
                    on_result(index, result)

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(one, range(len(bodies))))
        return [r for r in results if r is not None]


def _as_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    kwargs = dict(body)
    kwargs.setdefault("candidate", "")
    return kwargs


class AsyncRefereeClient:
    """The asyncio twin of `RefereeClient` (for trainers with an event loop)."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0,
                 retries: int = 4, backoff: float = 0.5, transport: httpx.AsyncBaseTransport | None = None) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.retries, self.backoff = retries, backoff

    async def __aenter__(self) -> AsyncRefereeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self.http.request(method, url, **kwargs)
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
                await asyncio.sleep(_delay(attempt, self.backoff, None))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
                await asyncio.sleep(_delay(attempt, self.backoff, response))
                attempt += 1
                continue
            if response.status_code >= 400:
                raise ApiError(response.status_code, _detail(response))
            return response

    async def submit(self, body: dict[str, Any], wait: float = 0.0, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"wait": wait} if wait else {}
        return (await self._request("POST", "/v1/evaluations", json=body, params=params, headers=headers, timeout=wait + 60)).json()

    async def evaluation(self, evaluation_id: str, wait: float = 0.0) -> dict[str, Any]:
        params = {"wait": wait} if wait else {}
        return (await self._request("GET", f"/v1/evaluations/{evaluation_id}", params=params, timeout=wait + 60)).json()

    async def wait(self, evaluation_id: str, timeout: float = 3600.0) -> EvaluationResult:
        deadline = time.monotonic() + timeout
        while True:
            view = await self.evaluation(evaluation_id, wait=min(60.0, max(0.0, deadline - time.monotonic())))
            if "verdict" in view:
                return EvaluationResult.model_validate(view)
            if time.monotonic() >= deadline:
                return missing_result(evaluation_id, f"no result after {timeout:g} s (status {view.get('status')})")

    async def evaluate(self, reference: str | None = None, candidate: str = "", *, problem_id: str | None = None,
                       timeout: float = 3600.0, idempotency_key: str | None = None, **options: Any) -> EvaluationResult:
        body = request_body(reference, candidate, problem_id=problem_id, **options)
        view = await self.submit(body, wait=min(timeout, 60.0), idempotency_key=idempotency_key)
        if "verdict" in view:
            return EvaluationResult.model_validate(view)
        return await self.wait(view["id"], timeout=timeout)

    async def evaluate_many(self, bodies: Sequence[dict[str, Any]], concurrency: int = 8,
                            timeout: float = 3600.0) -> list[EvaluationResult]:
        """Like the sync one: at most `concurrency` in flight, results in input order, failures as results."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(index: int) -> EvaluationResult:
            async with gate:
                try:
                    return await self.evaluate(**{"timeout": timeout, **_as_kwargs(bodies[index])})
                except (ApiError, httpx.HTTPError) as exc:
                    return missing_result(f"item-{index}", f"{type(exc).__name__}: {exc}")

        return list(await asyncio.gather(*(one(i) for i in range(len(bodies)))))
