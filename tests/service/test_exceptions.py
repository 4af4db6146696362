"""Refusals: the domain raises a `RefereeError`, and one handler answers it with its status, the
`{"detail": ...}` body clients read, its headers, and one count in `referee_requests_rejected`.

Every refusal the service makes is driven here through the real app (embedded store and queue;
for the queue being down, a real RQ queue on a Redis port nothing listens on)."""

from __future__ import annotations

import ast
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from service_support import ROOT, TINY_CANDIDATE, TINY_REFERENCE, free_port, static_reject

from triton_referee.service import exceptions
from triton_referee.service.app import create_app
from triton_referee.service.exceptions import RefereeError
from triton_referee.service.queue import RQQueue
from triton_referee.service.settings import Settings


def _rejected(client: TestClient, reason: str) -> float:
    value = client.app.state.metrics.registry.get_sample_value("referee_requests_rejected_total", {"reason": reason})
    return value or 0.0


@pytest.fixture
def app_client() -> Iterator[TestClient]:
    # No `with`: no lifespan, so the embedded workers never start and queued jobs stay queued.
    yield TestClient(create_app(Settings(redis_url=None, max_source_bytes=4096, max_batch_items=2, max_queued_per_key=1)))


def _refused(client: TestClient, method: str, url: str, status: int, detail: str, reason: str | None, **kwargs: object):
    before = _rejected(client, reason) if reason else 0.0
    response = client.request(method, url, **kwargs)
    assert response.status_code == status, response.text
    assert response.json() == {"detail": detail}
    if reason is not None:
        assert _rejected(client, reason) == before + 1  # counted once, by the handler
    return response


def test_each_refusal_of_a_submission_keeps_its_status_body_and_count(app_client: TestClient) -> None:
    big = "#" * 5000
    _refused(
        app_client,
        "POST",
        "/v1/evaluations",
        413,
        "the candidate is 5000 bytes; the limit is 4096 bytes",
        "source_size",
        json={"reference": TINY_REFERENCE, "candidate": big},
    )
    _refused(
        app_client,
        "POST",
        "/v1/batches",
        413,
        "the batch has 3 items; the limit is 2",
        "batch_size",
        json={"items": [{"reference": TINY_REFERENCE, "candidate": static_reject(str(n))} for n in range(3)]},
    )
    _refused(
        app_client,
        "POST",
        "/v1/evaluations",
        422,
        "the reference is not a usable problem: the reference does not define Model, get_inputs, get_init_inputs (KernelBench format)",
        "problem_source",
        json={"reference": "x = 1\n", "candidate": TINY_CANDIDATE},
    )
    _refused(
        app_client,
        "POST",
        "/v1/evaluations",
        404,
        "problem abc is not registered (POST /v1/problems)",
        "unknown_problem",
        json={"problem_id": "abc", "candidate": TINY_CANDIDATE},
    )
    _refused(
        app_client,
        "POST",
        "/v1/evaluations",
        400,
        "Idempotency-Key must be 1 to 255 characters",
        "idempotency_key",
        json={"reference": TINY_REFERENCE, "candidate": TINY_CANDIDATE},
        headers={"Idempotency-Key": "k" * 256},
    )
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = app_client.post("/v1/evaluations", json={"reference": TINY_REFERENCE, "candidate": static_reject("a")}, headers=key)
    assert first.status_code == 202, first.text
    _refused(
        app_client,
        "POST",
        "/v1/evaluations",
        422,
        "this Idempotency-Key was used with a different request body; use a new key",
        "idempotency_key",
        json={"reference": TINY_REFERENCE, "candidate": static_reject("b")},
        headers=key,
    )
    # The first evaluation is still queued (no worker runs here) and the limit is one.
    full = _refused(
        app_client,
        "POST",
        "/v1/evaluations",
        429,
        "this API key already has 1 evaluations queued or running; the limit is 1 (this request adds 1): "
        "wait for results, then submit again",
        "queued_per_key",
        json={"reference": TINY_REFERENCE, "candidate": static_reject("c")},
    )
    assert full.headers["Retry-After"] == "10"


def test_lookups_that_find_nothing_are_404_and_not_counted_as_refusals(app_client: TestClient) -> None:
    for url, what in (
        ("/v1/evaluations/nope", "evaluation nope"),
        ("/v1/batches/nope", "batch nope"),
        ("/v1/problems/nope", "problem nope"),
    ):
        _refused(app_client, "GET", url, 404, f"{what} not found", None)
    text = app_client.get("/metrics").text
    assert "referee_requests_rejected_total{" not in text  # nothing was refused


def test_a_queue_that_is_down_is_503_and_the_submission_is_undone() -> None:
    client = TestClient(create_app(Settings(redis_url=None)))
    referee = client.app.state.referee
    port = free_port()
    referee.queue = RQQueue(redis.Redis(port=port, socket_connect_timeout=1), "down", retries=0, result_ttl=60, worker_stale_s=10)
    response = client.post("/v1/evaluations", json={"reference": TINY_REFERENCE, "candidate": static_reject("down")})
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the queue is unavailable: ConnectionError:")
    assert _rejected(client, "queue_unavailable") == 1
    assert referee.store.active("anonymous") == []  # nothing left reserved


def test_a_missing_api_key_is_401_with_its_challenge_header() -> None:
    client = TestClient(create_app(Settings(redis_url=None, auth="on", api_keys=["secret"])))
    response = _refused(
        client, "GET", "/v1/evaluations/x", 401, "missing or unknown API key: send a valid key in the X-API-Key header", "auth"
    )
    assert response.headers["WWW-Authenticate"] == "X-API-Key"


def test_the_openrlhf_endpoint_says_which_item_was_refused_and_counts_it_once(app_client: TestClient) -> None:
    query = f"Write it.\n```python\n{TINY_CANDIDATE}```\n"
    _refused(
        app_client,
        "POST",
        "/v1/openrlhf/reward",
        422,
        "item 0: the reference is not a usable problem: the reference does not define Model, get_inputs, get_init_inputs "
        "(KernelBench format)",
        "problem_source",
        json={"query": [query], "labels": ["x = 1\n"]},
    )
    _refused(
        app_client,
        "POST",
        "/v1/openrlhf/reward",
        422,
        "2 labels for 1 queries",
        None,
        json={"query": [query], "labels": ["a", "b"]},
    )


def test_every_kind_of_refusal_maps_to_its_own_status_through_the_one_handler() -> None:
    kinds = [
        k for k in vars(exceptions).values() if isinstance(k, type) and issubclass(k, RefereeError) and k is not RefereeError
    ]
    statuses = {kind.status for kind in kinds}
    assert statuses == {400, 401, 404, 413, 422, 429, 503} and len(statuses) == len(kinds)
    app = create_app(Settings(redis_url=None))
    for kind in kinds:
        app.add_api_route(f"/raise/{kind.__name__}", _raiser(kind))
    client = TestClient(app)
    for kind in kinds:
        response = client.get(f"/raise/{kind.__name__}")
        assert (response.status_code, response.json(), response.headers.get("X-Why")) == (
            kind.status,
            {"detail": f"a {kind.__name__}"},
            "test",
        )
    assert _rejected(client, "probe") == len(kinds)


def _raiser(kind: type[RefereeError]):
    async def route() -> None:
        raise kind(f"a {kind.__name__}", reason="probe", headers={"X-Why": "test"})

    return route


def test_no_module_of_the_product_raises_fastapis_http_exception() -> None:
    """One mapping: the handler in service/app.py. HTTPException anywhere else would be a second."""
    offenders = []
    for folder in ("service", "worker", "sandbox"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
            attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
            if "HTTPException" in names | attributes:
                offenders.append(str(Path(path).relative_to(ROOT)))
    assert offenders == []


def test_a_checkout_that_is_not_installed_still_starts_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU host runs the repository with the system python3, not installed: the API's version
    lookup must not stop the server from starting (it did: PackageNotFoundError at import)."""
    import importlib.metadata

    from triton_referee.service import app

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    assert app._version() == importlib.metadata.version("triton-referee")
    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert app._version() == "0+checkout"
