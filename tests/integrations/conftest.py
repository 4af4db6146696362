"""Embedded Referee servers for this package: one plain (in-process queue, two worker threads, no
auth), one with auth on and one key, and one whose worker fails on marked candidates."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from triton_referee.service import queue as service_queue
from triton_referee.service.server import background_server
from triton_referee.service.settings import Settings

KEY = "trainer-key-0123456789"
CRASH = "# referee-test: the worker fails on this one\n"


@pytest.fixture(scope="package")
def server_url() -> Iterator[str]:
    with background_server(Settings(redis_url=None, auth="off", embedded_workers=2, maintenance_interval_s=0.5)) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_url() -> Iterator[str]:
    """An embedded server with auth on and one key."""
    with background_server(Settings(redis_url=None, auth="on", api_keys=[KEY], embedded_workers=1)) as url:
        yield url


@pytest.fixture
def crashing_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An embedded server whose worker fails on candidates carrying the CRASH line. A job cannot be
    made to fail from outside the server, so the failure is injected at the job function the
    worker threads call (every other candidate runs the real engine)."""
    real = service_queue.run_evaluation

    def run_evaluation(payload: dict[str, Any]) -> dict[str, Any]:
        if CRASH in str(payload.get("submission", {}).get("source", "")):
            raise RuntimeError("the GPU fell off the bus")
        return real(payload)

    monkeypatch.setattr(service_queue, "run_evaluation", run_evaluation)
    with background_server(Settings(redis_url=None, auth="off", embedded_workers=2)) as url:
        monkeypatch.setenv("REFEREE_URL", url)
        yield url
