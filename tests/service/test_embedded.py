"""Embedded mode: the same API with an in-process queue and worker threads, no Redis."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from service_support import FAST, ROOT, TINY_CANDIDATE, TINY_REFERENCE, free_port, full, static_reject, wait_until

from triton_referee.service.app import create_app
from triton_referee.service.evaluations import Prepared
from triton_referee.service.settings import Settings
from triton_referee.worker.models import EvalConfig, Problem, Submission

# The reference module fails when it is imported, which only running it can show.
FAILING_REFERENCE = TINY_REFERENCE + "\nraise RuntimeError('the data set is not there')\n"


@pytest.fixture(scope="module")
def embedded() -> TestClient:
    with TestClient(create_app(Settings(redis_url=None, maintenance_interval_s=0.5))) as client:
        yield client


def test_problems_are_validated_registered_and_used_by_id(embedded: TestClient) -> None:
    broken = embedded.post("/v1/problems", json={"source": "import torch\nclass Model: pass\n"})
    assert broken.status_code == 422
    assert broken.json()["detail"] == (
        "the source is not a usable problem: the reference does not define get_inputs, get_init_inputs (KernelBench format)"
    )
    created = embedded.post("/v1/problems", json={"source": TINY_REFERENCE, "name": "double"})
    assert created.status_code == 201, created.text
    problem = created.json()
    assert problem["id"] == hashlib.sha256(TINY_REFERENCE.encode()).hexdigest() and problem["name"] == "double"
    assert problem["input_sets"][0] == {} and len(problem["input_sets"]) == 3  # `n` drives two derived sets
    assert embedded.post("/v1/problems", json={"source": TINY_REFERENCE}).status_code == 200
    assert embedded.get(f"/v1/problems/{problem['id']}").json() == problem

    response = embedded.post(
        "/v1/evaluations", params={"wait": 150}, json={"problem_id": problem["id"], "candidate": TINY_CANDIDATE, **FAST}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["verdict"] == "correct" and result["correctness"]["input_sets"] == 3, result

    unknown = embedded.post("/v1/evaluations", json={"problem_id": "0" * 64, "candidate": TINY_CANDIDATE})
    assert unknown.status_code == 404 and "is not registered" in unknown.json()["detail"]
    metrics = embedded.get("/metrics").text
    assert 'referee_verdicts_total{verdict="correct"} 1.0' in metrics and 'referee_workers{state="idle"}' in metrics
    assert embedded.get("/readyz").json()["ready"] is True and embedded.get("/healthz").json() == {"status": "ok"}


def test_a_reference_unusable_on_sight_is_a_422(embedded: TestClient) -> None:
    response = embedded.post("/v1/evaluations", json={"reference": "def get_inputs(:\n", "candidate": TINY_CANDIDATE})
    assert response.status_code == 422
    assert response.json()["detail"].startswith(
        "the reference is not a usable problem: the reference is not valid Python: SyntaxError"
    )
    batch = embedded.post("/v1/batches", json={"items": [full(), {"reference": "x = 1", "candidate": TINY_CANDIDATE}]})
    assert batch.status_code == 422 and batch.json()["detail"].startswith("item 1: the reference is not a usable problem")


def test_a_reference_that_fails_when_run_is_invalid_submission_with_a_problem_error(embedded: TestClient) -> None:
    response = embedded.post(
        "/v1/evaluations", params={"wait": 150}, json={"reference": FAILING_REFERENCE, "candidate": TINY_CANDIDATE, **FAST}
    )
    result = response.json()
    assert result["verdict"] == "invalid_submission" and result["reward"] == 0, result
    assert result["error"]["kind"] == "problem_error" and "the data set is not there" in result["error"]["message"]
    assert "candidate was not judged" in result["feedback"]


def test_a_job_that_raises_ends_as_infrastructure_error(embedded: TestClient) -> None:
    referee = embedded.app.state.referee
    # An empty reference, which the API refuses with a 422, built past validation: the worker's own
    # validation of the job raises, as any fault in the job function would.
    broken = Prepared(
        digest=uuid.uuid4().hex,
        problem=Problem.model_construct(source="", name="problem"),
        submission=Submission(source="x"),
        config=EvalConfig(),
        timeout_s=60,
        name=None,
    )
    evaluation_id = referee.admit("anonymous", [broken])[0].id
    result = embedded.get(f"/v1/evaluations/{evaluation_id}", params={"wait": 30}).json()
    assert result["verdict"] == "infrastructure_error" and result["status"] == "failed", result
    assert "ValidationError" in result["error"]["message"] and "(attempt 2)" in result["error"]["message"]


def test_auth_is_off_in_embedded_mode_unless_configured() -> None:
    with TestClient(create_app(Settings(redis_url=None))) as open_app:
        # Accepted (202), or already answered (200): the engine rejects this candidate in milliseconds.
        assert open_app.post(
            "/v1/evaluations", json={"reference": TINY_REFERENCE, "candidate": static_reject("open")}
        ).status_code in (200, 202)
    with TestClient(create_app(Settings(redis_url=None, auth="on", api_keys=["secret"]))) as locked:
        body = {"reference": TINY_REFERENCE, "candidate": static_reject("locked")}
        assert locked.post("/v1/evaluations", json=body).status_code == 401
        assert locked.post("/v1/evaluations", json=body, headers={"X-API-Key": "secret"}).status_code in (200, 202)


def _examples(tmp_path: Path, wrong_candidate: str | None = None) -> Path:
    problem = tmp_path / "examples" / "double"
    problem.mkdir(parents=True)
    (problem / "reference.py").write_text(TINY_REFERENCE)
    (problem / "candidate.py").write_text(TINY_CANDIDATE)
    (problem / "candidate_compile_error.py").write_text("def forward(:\n")
    if wrong_candidate is not None:
        (problem / "candidate_wrong.py").write_text(wrong_candidate)
    return problem.parent


def test_referee_serve_embedded_answers_submit_and_batch_over_http(tmp_path: Path) -> None:
    """`referee serve --embedded` in its own process, used by `referee submit` and `referee batch`."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("REFEREE_")}, "COLUMNS": "200"}
    referee = [sys.executable, "-m", "triton_referee.service.cli"]
    server = subprocess.Popen(
        [*referee, "serve", "--embedded", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return server.poll() is not None

        wait_until(healthy, 60, "referee serve to answer", interval=0.2)
        assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
        reference, candidate = tmp_path / "reference.py", tmp_path / "candidate.py"
        reference.write_text(TINY_REFERENCE)
        candidate.write_text(TINY_CANDIDATE)
        submitted = subprocess.run(
            [*referee, "submit", str(reference), str(candidate), "--server", url, "--json", "--trials", "1"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert submitted.returncode == 0, submitted.stderr
        assert '"verdict":"correct"' in submitted.stdout.replace(" ", "")

        # The demo's path: one batch, followed over NDJSON, a table, exit 0 when every verdict is as expected.
        scored = subprocess.run(
            [*referee, "batch", str(_examples(tmp_path)), "--server", url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert scored.returncode == 0, scored.stdout + scored.stderr
        assert "compile_error" in scored.stdout and "correct" in scored.stdout
        # candidate_wrong.py is expected to be `incorrect`; one without a kernel is not, so the exit code is 1.
        surprising = subprocess.run(
            [*referee, "batch", str(_examples(tmp_path / "2", static_reject("wrong"))), "--server", url],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert surprising.returncode == 1 and "1 candidate(s) got an unexpected verdict" in surprising.stderr
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    assert server.returncode == 0
