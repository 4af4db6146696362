"""Schemathesis against the committed openapi.yaml, in-process against the embedded app (ASGI).

Three tests, one app (the real embedded one: in-memory store, the queue's worker thread, the engine):

- every operation gets generated requests, schema-valid and schema-invalid: every answer must be a
  non-5xx with a documented status code, the documented content type and headers and a body that
  matches the documented schema, and a request the schema forbids must be refused;
- schema-valid evaluations and batches with generated candidates and options against a real problem,
  so generated submissions reach the worker and the engine (its static checks; no harness process)
  and the result documents, status documents and batches that come back are checked against the schema;
- one request of each kind with a usable problem and candidate, a full evaluation among them, so
  every success body (201 problem, 202 status, 200 result, batch with results) is checked too.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from service_support import FAST, ROOT, TINY_CANDIDATE, TINY_REFERENCE, static_reject
from starlette.types import Receive, Scope, Send

from triton_referee.service.app import create_app
from triton_referee.service.settings import Settings

# Generated requests per operation and mode (schemathesis adds its own explicit and boundary cases);
# REFEREE_SCHEMATHESIS_EXAMPLES=500 for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("REFEREE_SCHEMATHESIS_EXAMPLES", "15"))
# Not `positive_data_acceptance`: a request can match the schema and still be a 422, because the
# reference must be a usable KernelBench problem (parsed and checked by the engine), which no JSON
# schema can say.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
CHECKS = [*CONFORMANCE, negative_data_rejection]
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
# Auth is off in embedded mode: a request without X-API-Key is served, as it should be there.
schema.config.generation.update(with_security_parameters=False)

submissions = schemathesis.openapi.from_path(ROOT / "openapi.yaml").include(
    path_regex="^/v1/(evaluations|batches)$", method="POST"
)
submissions.config.generation.update(with_security_parameters=False, modes=["positive"])

STATUSES: Counter[tuple[str, int]] = Counter()


@pytest.fixture(scope="module")
def app() -> Iterator[FastAPI]:
    # No warm pool: only one full evaluation runs here. A short wait cap: generated ?wait= values
    # would otherwise hold requests open for up to 600 s.
    application = create_app(Settings(redis_url=None, auth="off", warm_pool=False, max_wait_s=0.5))
    with TestClient(application):  # the lifespan, once: the queue's worker thread and the sweeper
        yield application
    print(
        f"\nschemathesis: {sum(STATUSES.values())} requests; status codes: {sorted(Counter(s for _, s in STATUSES.elements()).items())}"
    )


def _requests_only(application: FastAPI) -> Callable[[Scope, Receive, Send], Any]:
    """The app without its lifespan: schemathesis starts and ends an app's lifespan around every
    test, and the embedded queue's worker thread, once stopped, stays stopped (a server runs it once)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await application(scope, receive, send)

    return app


def _call(case: schemathesis.Case, app: FastAPI, checks: list[Any]) -> Any:
    response = case.call_and_validate(app=_requests_only(app), checks=checks)
    STATUSES[(f"{case.method} {case.path}", response.status_code)] += 1
    return response


@schema.parametrize()
@SETTINGS
def test_every_operation_conforms_to_openapi_yaml(case: schemathesis.Case, app: FastAPI) -> None:
    _call(case, app, CHECKS)


def _on_the_tiny_problem(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "reference": TINY_REFERENCE, "problem_id": None}


@submissions.parametrize()
@SETTINGS
def test_generated_submissions_on_a_real_problem_conform(case: schemathesis.Case, app: FastAPI) -> None:
    # Generated candidates and options, a usable reference: the request is accepted and the engine judges it.
    if case.path == "/v1/batches":
        case.body = {**case.body, "items": [_on_the_tiny_problem(item) for item in case.body["items"]]}
    else:
        case.body = _on_the_tiny_problem(case.body)
    response = _call(case, app, CONFORMANCE)
    assert response.status_code in (200, 202, 400, 413, 422), response.text


def test_usable_requests_conform_including_a_full_result(app: FastAPI) -> None:
    def call(method: str, path: str, **kwargs: Any) -> Any:
        return _call(schema[path][method].Case(**kwargs), app, CHECKS)

    problem = call("POST", "/v1/problems", body={"source": TINY_REFERENCE, "name": "double"})
    assert problem.status_code == 201, problem.text
    problem_id = problem.json()["id"]
    assert call("GET", "/v1/problems/{problem_id}", path_parameters={"problem_id": problem_id}).status_code == 200

    rejected = call(
        "POST",
        "/v1/evaluations",
        query={"wait": 0.5},
        body={"problem_id": problem_id, "candidate": static_reject("schemathesis"), **FAST},
    )
    batch = call(
        "POST",
        "/v1/batches",
        body={
            "items": [
                {"reference": TINY_REFERENCE, "candidate": TINY_CANDIDATE, "device": "cpu", **FAST},
                {"reference": TINY_REFERENCE, "candidate": static_reject("batch")},
            ]
        },
    )
    assert batch.status_code == 202, batch.text
    honest_id = batch.json()["items"][0]["id"]
    assert call("GET", "/v1/evaluations/{evaluation_id}", path_parameters={"evaluation_id": honest_id}).status_code == 200
    deadline = time.monotonic() + 120
    while (
        result := call(
            "GET", "/v1/evaluations/{evaluation_id}", path_parameters={"evaluation_id": honest_id}, query={"wait": 0.5}
        ).json()
    ).get("verdict") is None:
        assert time.monotonic() < deadline, result
    assert result["verdict"] == "correct", result
    done = call("GET", "/v1/batches/{batch_id}", path_parameters={"batch_id": batch.json()["id"]}).json()
    assert done["status"] == "completed" and done["verdicts"] == {"correct": 1, "invalid_submission": 1}, done
    rejected = call("GET", "/v1/evaluations/{evaluation_id}", path_parameters={"evaluation_id": rejected.json()["id"]}).json()
    assert rejected["verdict"] == "invalid_submission", rejected
    assert call("GET", "/readyz").status_code == 200
