"""HTTP clients for the API (httpx): `RefereeClient` (sync) and `AsyncRefereeClient`.

Used by `referee submit`, `referee batch`, `referee demo` and the RL trainer adapters in
`service/integrations/`. Never imports torch.

    with RefereeClient("http://127.0.0.1:8000") as client:
        result = client.evaluate(reference_src, candidate_src, trials=3)   # an EvaluationResult
        results = client.evaluate_many([{"reference": ..., "candidate": ...}, ...], concurrency=8)

Transient failures (connection errors and timeouts, 429, 502, 503, 504) are retried with tenacity:
exponential backoff with jitter (`retries`, `backoff`), a `Retry-After` honoured, each retry logged
as a warning. What is left after the retries, and every other status >= 400, raises `ApiError`
(or httpx's transport error). `evaluate_many` turns an item the server refuses (400, 404, 409,
413, 422: that request is unusable) into an `infrastructure_error` result with `error.kind`
"rejected", and raises `RefereeUnavailable` for what no item can get past (auth, the server or its
queue down): a trainer must never mistake a broken service for a reward.

Imports only httpx, tenacity, pydantic, `worker.models` and `worker.unjudged`: a trainer installs
it without the server stack (`pip install triton-referee`; the server is the `server` extra).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from triton_referee.worker.models import EvaluationResult, Verdict
from triton_referee.worker.unjudged import unjudged_result

API_KEY_HEADER = "X-API-Key"  # service/auth.py reads the same header
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# The request itself is unusable (bad problem, too large, unknown id): other items may still go through.
REFUSED_STATUSES = frozenset({400, 404, 409, 413, 422})
log = logging.getLogger("referee.client")


class ApiError(Exception):
    def __init__(self, status: int, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail, self.retry_after = status, detail, retry_after


class RefereeUnavailable(RuntimeError):
    """No evaluation can get through: wrong or missing API key, the server unreachable, or its queue
    down (after the retries). Raised, never turned into a reward."""


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    return detail if isinstance(detail, str) else json.dumps(detail)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return min(float(value), 60.0) if value.replace(".", "", 1).isdigit() else None


def _error(response: httpx.Response) -> ApiError:
    return ApiError(response.status_code, _detail(response), _retry_after(response))


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, httpx.TransportError) or (isinstance(exc, ApiError) and exc.status in RETRY_STATUSES)


class _Wait:
    """Exponential backoff with jitter, or the server's Retry-After when it sent one."""

    def __init__(self, backoff: float) -> None:
        self.backoff = wait_exponential(multiplier=backoff, max=30.0) + wait_random(0, backoff)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ApiError) and exc.retry_after is not None:
            return exc.retry_after
        return self.backoff(state)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    delay = state.next_action.sleep if state.next_action else 0.0
    log.warning("Referee request failed (%s: %s); retry %d in %.1f s", type(exc).__name__, exc, state.attempt_number, delay)


def _retry_policy(retries: int, backoff: float) -> dict[str, Any]:
    return {
        "retry": retry_if_exception(_retryable),
        "stop": stop_after_attempt(retries + 1),
        "wait": _Wait(backoff),
        "before_sleep": _log_retry,
        "reraise": True,
    }


def unavailable(exc: Exception, base_url: object) -> RefereeUnavailable:
    """The service-level failure as one clear message (what broke, what to check)."""
    if isinstance(exc, ApiError) and exc.status in (401, 403):
        hint = "set REFEREE_API_KEY (or the adapter's api_key) to a key the server accepts"
    elif isinstance(exc, httpx.TransportError):
        hint = "is the server running and REFEREE_URL right?"
    else:
        hint = "the server or its queue (Redis) is down or overloaded; see its log"
    return RefereeUnavailable(f"Referee at {base_url} cannot evaluate: {type(exc).__name__}: {exc} ({hint})")


def refused_result(index: int, exc: ApiError) -> EvaluationResult:
    """An item the server refused: no reward for it, and why."""
    return unjudged_result(f"item-{index}", Verdict.infrastructure_error, exc.detail, kind="rejected", status=exc.status)


def no_result_in_time(evaluation_id: str, timeout: float, status: object = None) -> EvaluationResult:
    """What a caller gets when no result came back in time: infrastructure_error, reward 0."""
    waiting = f" (status {status})" if status is not None else ""
    return unjudged_result(evaluation_id, Verdict.infrastructure_error, f"no result after {timeout:g} s{waiting}")


def request_body(
    reference: str | None = None, candidate: str = "", *, problem_id: str | None = None, name: str | None = None, **options: Any
) -> dict[str, Any]:
    """The JSON body of POST /v1/evaluations (options are the engine's: trials, seed, reward, ...)."""
    body: dict[str, Any] = {"candidate": candidate, **{k: v for k, v in options.items() if v is not None}}
    if problem_id is not None:
        body["problem_id"] = problem_id
    else:
        body["reference"] = reference
    if name is not None:
        body["name"] = name
    return body


class RefereeClient:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.retries, self.backoff = retries, backoff
        self.retry_policy = _retry_policy(retries, backoff)

    def __enter__(self) -> RefereeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request, retried on transport errors and 429/502/503/504 (see the module docstring)."""
        # A fresh Retrying per request: its iteration state must not be shared between threads' calls.
        return Retrying(**self.retry_policy)(lambda: self._check(self.http.request(method, url, **kwargs)))

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

    def create_batch(
        self, items: list[dict[str, Any]], name: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/v1/batches", json={"items": items, "name": name}, headers=headers).json()

    def batch(self, batch_id: str, results: bool = True) -> dict[str, Any]:
        return self._request("GET", f"/v1/batches/{batch_id}", params={"results": results}).json()

    def stream(self, batch_id: str, wait: float = 0.0) -> Iterator[dict[str, Any]]:
        """The batch's items as NDJSON lines, each once; completed ones as they complete, for `wait` seconds."""
        with self.http.stream(
            "GET", f"/v1/batches/{batch_id}", params={"format": "ndjson", "wait": wait}, timeout=wait + 60
        ) as response:
            if response.status_code >= 400:
                response.read()
                self._check(response)
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def follow(
        self, batch_id: str, total: int, on_item: Callable[[dict[str, Any]], None], timeout: float = 3600.0
    ) -> dict[int, dict[str, Any]]:
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
            return no_result_in_time(evaluation_id, timeout, view.get("status"))
        return EvaluationResult.model_validate(view)

    def evaluate(
        self,
        reference: str | None = None,
        candidate: str = "",
        *,
        problem_id: str | None = None,
        timeout: float = 3600.0,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> EvaluationResult:
        """Submit one evaluation and wait for its result document."""
        body = request_body(reference, candidate, problem_id=problem_id, **options)
        view = self.submit(body, wait=min(timeout, 60.0), idempotency_key=idempotency_key)
        if "verdict" in view:
            return EvaluationResult.model_validate(view)
        return self.wait(view["id"], timeout=timeout)

    def evaluate_many(
        self,
        bodies: Sequence[dict[str, Any]],
        concurrency: int = 8,
        timeout: float = 3600.0,
        on_result: Callable[[int, EvaluationResult], None] | None = None,
    ) -> list[EvaluationResult]:
        """Evaluate many request bodies with at most `concurrency` in flight; results in input order.

        An item the server refuses (400/404/409/413/422) or that never finishes gets an
        `infrastructure_error` result; a failure no item can get past (auth, server or queue down,
        after the retries) raises `RefereeUnavailable` and the items not yet sent are not sent."""
        results: list[EvaluationResult | None] = [None] * len(bodies)
        lock = threading.Lock()
        broken = threading.Event()

        def one(index: int) -> None:
            if broken.is_set():
                return
            try:
                result = self.evaluate(**{"timeout": timeout, **_as_kwargs(bodies[index])})
            except ApiError as exc:
                if exc.status not in REFUSED_STATUSES:
                    broken.set()
                    raise unavailable(exc, self.http.base_url) from exc
                result = refused_result(index, exc)
            except httpx.HTTPError as exc:
                broken.set()
                raise unavailable(exc, self.http.base_url) from exc
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

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, transport=transport)
        self.retries, self.backoff = retries, backoff
        self.retry_policy = _retry_policy(retries, backoff)

    async def __aenter__(self) -> AsyncRefereeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def once() -> httpx.Response:
            response = await self.http.request(method, url, **kwargs)
            if response.status_code >= 400:
                raise _error(response)
            return response

        return await AsyncRetrying(**self.retry_policy)(once)  # fresh per request, as in the sync client

    async def submit(self, body: dict[str, Any], wait: float = 0.0, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"wait": wait} if wait else {}
        return (
            await self._request("POST", "/v1/evaluations", json=body, params=params, headers=headers, timeout=wait + 60)
        ).json()

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
                return no_result_in_time(evaluation_id, timeout, view.get("status"))

    async def evaluate(
        self,
        reference: str | None = None,
        candidate: str = "",
        *,
        problem_id: str | None = None,
        timeout: float = 3600.0,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> EvaluationResult:
        body = request_body(reference, candidate, problem_id=problem_id, **options)
        view = await self.submit(body, wait=min(timeout, 60.0), idempotency_key=idempotency_key)
        if "verdict" in view:
            return EvaluationResult.model_validate(view)
        return await self.wait(view["id"], timeout=timeout)

    async def evaluate_many(
        self, bodies: Sequence[dict[str, Any]], concurrency: int = 8, timeout: float = 3600.0
    ) -> list[EvaluationResult]:
        """Like the sync one: at most `concurrency` in flight, results in input order, refused items as
        results, `RefereeUnavailable` when no item can get through."""
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(index: int) -> EvaluationResult:
            async with gate:
                try:
                    return await self.evaluate(**{"timeout": timeout, **_as_kwargs(bodies[index])})
                except ApiError as exc:
                    if exc.status not in REFUSED_STATUSES:
                        raise unavailable(exc, self.http.base_url) from exc
                    return refused_result(index, exc)
                except httpx.HTTPError as exc:
                    raise unavailable(exc, self.http.base_url) from exc

        tasks = [asyncio.ensure_future(one(i)) for i in range(len(bodies))]
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            for task in tasks:  # the first failure ends the call: nothing more is sent
                task.cancel()
