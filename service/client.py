"""A small HTTP client for the API (httpx), used by `referee submit`, `referee batch` and `referee demo`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from .auth import API_KEY_HEADER


class ApiError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class RefereeClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> RefereeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except (ValueError, AttributeError):
                detail = response.text
            raise ApiError(response.status_code, detail if isinstance(detail, str) else json.dumps(detail))
        return response

    def submit(self, body: dict[str, Any], wait: float = 0.0, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"wait": wait} if wait else {}
        return self._check(self.http.post("/v1/evaluations", json=body, params=params, headers=headers, timeout=wait + 60)).json()

    def evaluation(self, evaluation_id: str, wait: float = 0.0) -> dict[str, Any]:
        params = {"wait": wait} if wait else {}
        return self._check(self.http.get(f"/v1/evaluations/{evaluation_id}", params=params, timeout=wait + 60)).json()

    def result(self, evaluation_id: str, timeout: float = 3600.0) -> dict[str, Any]:
        """Long-poll until the result document is there."""
        deadline = time.monotonic() + timeout
        while True:
            view = self.evaluation(evaluation_id, wait=min(60.0, max(0.0, deadline - time.monotonic())))
            if "verdict" in view or time.monotonic() >= deadline:
                return view

    def create_batch(self, items: list[dict[str, Any]], name: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._check(self.http.post("/v1/batches", json={"items": items, "name": name}, headers=headers)).json()

    def batch(self, batch_id: str, results: bool = True) -> dict[str, Any]:
        return self._check(self.http.get(f"/v1/batches/{batch_id}", params={"results": results})).json()

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
