"""The API's contract without a queue behind it doing work: OpenAPI, imports, settings, validation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from fastapi.testclient import TestClient
from service_support import ROOT, TINY_REFERENCE, static_reject

from triton_referee.service.app import create_app
from triton_referee.service.openapi import to_yaml
from triton_referee.service.settings import Settings


@pytest.fixture(scope="module")
def api() -> TestClient:
    with TestClient(create_app(Settings(redis_url=None))) as client:
        yield client


def test_openapi_yaml_is_what_the_app_serves(api: TestClient) -> None:
    committed = (ROOT / "openapi.yaml").read_text()
    served = api.get("/openapi.json").json()
    assert yaml.safe_load(committed) == served, "openapi.yaml is stale: run `referee openapi > openapi.yaml`"
    assert committed == to_yaml(served), "openapi.yaml is not as `referee openapi` writes it: regenerate it"
    assert {
        "/v1/evaluations",
        "/v1/evaluations/{evaluation_id}",
        "/v1/batches",
        "/v1/batches/{batch_id}",
        "/v1/problems",
        "/v1/problems/{problem_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(served["paths"])


def test_the_api_process_never_imports_torch() -> None:
    code = (
        "import json, sys\n"
        "from fastapi.testclient import TestClient\n"
        "import triton_referee.service.cli, triton_referee.worker.main, triton_referee.worker.jobs\n"
        "from triton_referee.service.app import create_app\n"
        "from triton_referee.service.settings import Settings\n"
        "with TestClient(create_app(Settings(redis_url=None))) as client:\n"
        "    assert client.post('/v1/problems', json={'source': open('examples/relu/reference.py').read()}).status_code == 201\n"
        "    assert client.get('/metrics').status_code == 200\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton', 'numpy'))))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout.strip().splitlines()[-1]) == []


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFEREE_API_KEYS", " alpha, beta ,")
    monkeypatch.setenv("REFEREE_MAX_BATCH_ITEMS", "7")
    monkeypatch.delenv("REFEREE_REDIS_URL", raising=False)
    settings = Settings()
    assert settings.api_keys == ["alpha", "beta"] and settings.max_batch_items == 7
    assert settings.embedded and not settings.auth_enabled
    monkeypatch.setenv("REFEREE_REDIS_URL", "redis://127.0.0.1:1/0")
    assert Settings().auth_enabled
    monkeypatch.delenv("REFEREE_API_KEYS")
    with pytest.raises(ValueError, match="no API keys are set"):
        create_app(Settings())
    assert not Settings(auth="off").auth_enabled


@pytest.mark.parametrize(
    "body, fragment",
    [
        ({"reference": TINY_REFERENCE, "problem_id": "x", "candidate": "c"}, "exactly one of `reference`"),
        ({"candidate": "c"}, "exactly one of `reference`"),
        ({"reference": TINY_REFERENCE}, "candidate"),
        ({"reference": TINY_REFERENCE, "candidate": "c", "trials": 0}, "trials"),
        ({"reference": TINY_REFERENCE, "candidate": "c", "no_such_option": 1}, "no_such_option"),
        ({"reference": TINY_REFERENCE, "candidate": "c", "reward": {"preset": "bogus"}}, "preset"),
    ],
)
def test_malformed_requests_are_422_and_queue_nothing(api: TestClient, body: dict, fragment: str) -> None:
    response = api.post("/v1/evaluations", json=body)
    assert response.status_code == 422 and fragment in json.dumps(response.json())
    assert api.app.state.referee.store.pending() == []


def test_request_limits_in_embedded_mode() -> None:
    settings = Settings(redis_url=None, max_body_bytes=5000, max_batch_items=2)
    with TestClient(create_app(settings)) as api:
        response = api.post("/v1/evaluations", json={"reference": TINY_REFERENCE, "candidate": "#" * 6000})
        assert response.status_code == 413 and response.json()["detail"].endswith("the limit is 5000 bytes")
        items = [{"reference": TINY_REFERENCE, "candidate": static_reject(str(i))} for i in range(3)]
        assert api.post("/v1/batches", json={"items": items}).status_code == 413
        long_key = api.post("/v1/evaluations", json=items[0], headers={"Idempotency-Key": "k" * 256})
        assert long_key.status_code == 400 and "Idempotency-Key" in long_key.json()["detail"]
        assert api.get("/v1/evaluations/nope").status_code == 404
        assert api.get("/v1/batches/nope").status_code == 404
        assert api.get("/v1/problems/nope").status_code == 404
