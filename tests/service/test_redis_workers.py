"""The service with a real Redis, real `referee worker` processes (RQ) and the API over HTTP (uvicorn)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from service_support import (
    API_KEYS,
    ROOT,
    TINY_CANDIDATE,
    TINY_REFERENCE,
    WorkerProcess,
    alive,
    descendants,
    full,
    redis_settings,
    static_reject,
    wait_until,
)

from triton_referee.service.app import create_app
from triton_referee.service.evaluations import Prepared
from triton_referee.service.server import background_server
from triton_referee.worker.models import EvalConfig, Problem, RewardConfig, Submission

ALICE, BOB, LIMITED = ({"X-API-Key": key} for key in API_KEYS)


def client(url: str, headers: dict[str, str] | None = None) -> httpx.Client:
    return httpx.Client(base_url=url, headers=headers or {}, timeout=180)


def result_of(http: httpx.Client, evaluation_id: str, timeout: float = 150) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = http.get(f"/v1/evaluations/{evaluation_id}", params={"wait": 5}).json()
        if "verdict" in view or time.monotonic() > deadline:
            return view


def static_item(tag: str) -> dict[str, Any]:
    return {"reference": TINY_REFERENCE, "candidate": static_reject(tag)}


def test_submit_and_get_the_result(api_url: str) -> None:
    with client(api_url, ALICE) as http:
        accepted = http.post("/v1/evaluations", json=full())
        assert accepted.status_code == 202, accepted.text
        body = accepted.json()
        assert body["status"] in ("queued", "started") and accepted.headers["location"] == f"/v1/evaluations/{body['id']}"
        result = result_of(http, body["id"])
        assert result["verdict"] == "correct", result
        assert result["id"] == body["id"] and result["status"] == "completed" and result["correct"] is True
        assert (
            result["correctness"]["passed"] == result["correctness"]["trials"] >= 1
            and result["environment"]["interpreter"] is True
        )
        assert result["timings_ms"]["queued"] >= 0 and result["timings_ms"]["total"] > 0
        assert http.get(f"/v1/evaluations/{body['id']}").json() == result  # the same stored document
        metrics = http.get("/metrics").text
        assert 'referee_verdicts_total{verdict="correct"}' in metrics
        assert 'referee_stage_seconds_count{stage="candidate"}' in metrics
        ready = http.get("/readyz").json()
        assert ready["ready"] is True and ready["queue"] == "redis" and len(ready["workers"]) >= 2


def test_wait_returns_the_result_document(api_url: str) -> None:
    with client(api_url, ALICE) as http:
        response = http.post(
            "/v1/evaluations", params={"wait": 120}, json={"reference": TINY_REFERENCE, "candidate": "def broken(:\n"}
        )
        assert response.status_code == 200, response.text
        assert response.json()["verdict"] == "compile_error"


def test_a_problem_evaluated_again_reuses_its_reference_data(api_url: str) -> None:
    # Each RQ job runs in a forked work horse, so the entry must outlive it: workers keep it in a
    # private directory, shared by the workers of the host.
    reference = TINY_REFERENCE + f"\n# {uuid.uuid4().hex}\n"  # a problem no earlier run has cached
    flags = []
    with client(api_url, ALICE) as http:
        for i in range(2):
            accepted = http.post("/v1/evaluations", json={**full(TINY_CANDIDATE + f"\n# {i}\n"), "reference": reference})
            assert accepted.status_code == 202, accepted.text
            result = result_of(http, accepted.json()["id"])
            assert result["verdict"] == "correct", result
            flags.append(result["performance"]["reference_outputs_cached"])
    assert flags == [False, True]


def test_a_batch_of_50_has_every_result_exactly_once(api_url: str, redis_url: str) -> None:
    # Four full evaluations and 46 distinct candidates that the worker rejects statically: every
    # item goes through Redis, RQ and a worker; only the latter skip the harness processes.
    tag = uuid.uuid4().hex
    items = [full(TINY_CANDIDATE + f"\n# {tag} {i}\n") for i in range(4)] + [static_item(f"{tag} {i}") for i in range(46)]
    with client(api_url, ALICE) as http:
        created = http.post("/v1/batches", json={"items": items, "name": "fifty"})
        assert created.status_code == 202, created.text
        batch = created.json()
        assert batch["total"] == 50 and len({item["id"] for item in batch["items"]}) == 50
        with http.stream("GET", f"/v1/batches/{batch['id']}", params={"format": "ndjson", "wait": 240}) as stream:
            assert stream.headers["content-type"].startswith("application/x-ndjson")
            lines = [json.loads(line) for line in stream.iter_lines() if line.strip()]
        assert sorted(line["index"] for line in lines) == list(range(50))
        assert all(line["status"] == "completed" for line in lines), [line for line in lines if line["status"] != "completed"]
        assert len({line["id"] for line in lines}) == 50 and all(line["result"]["id"] == line["id"] for line in lines)
        verdicts = [line["result"]["verdict"] for line in sorted(lines, key=lambda line: line["index"])]
        assert verdicts == ["correct"] * 4 + ["invalid_submission"] * 46
        summary = http.get(f"/v1/batches/{batch['id']}").json()
        assert summary["status"] == "completed" and summary["completed"] == 50
        assert summary["verdicts"] == {"correct": 4, "invalid_submission": 46}
        assert [item["index"] for item in summary["items"]] == list(range(50))
        assert [item["id"] for item in summary["items"]] == [item["id"] for item in batch["items"]]
        assert http.get(f"/v1/batches/{batch['id']}", params={"results": False}).json().get("items") is None
    # Every job was collected into a stored result, and RQ's copies were dropped.
    connection = redis.Redis.from_url(redis_url)
    ids = [item["id"] for item in batch["items"]]
    assert not connection.smismember("referee:pending", ids).count(1)
    assert all(connection.exists(f"referee:result:{i}") for i in ids)
    assert not any(connection.exists(f"rq:job:{i}") for i in ids)


def test_identical_submissions_share_one_job(api_url: str) -> None:
    tag = uuid.uuid4().hex
    body = static_item(tag)
    with client(api_url, ALICE) as http, client(api_url, BOB) as bob:
        first = http.post("/v1/evaluations", json=body).json()
        again = http.post("/v1/evaluations", params={"wait": 60}, json=body)
        assert again.json()["id"] == first["id"]
        assert again.json().get("deduplicated") is True or again.headers.get("referee-deduplicated") == "true"
        # A seed of None is one option value: the random salt it implies is not part of the key.
        assert http.post("/v1/evaluations", json={**body, "seed": None}).json()["id"] == first["id"]
        seeded = {http.post("/v1/evaluations", json={**body, "seed": seed}).json()["id"] for seed in (1, 2, 1)}
        assert len(seeded) == 2 and first["id"] not in seeded
        assert http.post("/v1/evaluations", json={**body, "trials": 2}).json()["id"] != first["id"]
        # Dedup is per key: another key gets its own job.
        assert bob.post("/v1/evaluations", json=body).json()["id"] != first["id"]
        # Within one batch too.
        batch = http.post("/v1/batches", json={"items": [body, static_item(tag + "x"), body]}).json()
        ids = [item["id"] for item in batch["items"]]
        assert ids[0] == ids[2] == first["id"] and ids[1] != ids[0]
        assert [item["deduplicated"] for item in batch["items"]] == [True, False, True]


def test_keys_see_only_their_own_jobs(api_url: str) -> None:
    with client(api_url, ALICE) as alice, client(api_url, BOB) as bob, client(api_url) as anonymous:
        evaluation = alice.post("/v1/evaluations", json=static_item(uuid.uuid4().hex)).json()
        batch = alice.post("/v1/batches", json={"items": [static_item(uuid.uuid4().hex)]}).json()
        problem = alice.post("/v1/problems", json={"source": TINY_REFERENCE, "name": "double"}).json()
        for path in (f"/v1/evaluations/{evaluation['id']}", f"/v1/batches/{batch['id']}", f"/v1/problems/{problem['id']}"):
            assert alice.get(path).status_code == 200
            response = bob.get(path)
            assert response.status_code == 404 and "not found" in response.json()["detail"]
            assert anonymous.get(path).status_code == 401
        assert bob.post("/v1/evaluations", json={"problem_id": problem["id"], "candidate": "x = 1"}).status_code == 404
        denied = anonymous.post("/v1/evaluations", json=static_item("x"), headers={"X-API-Key": "not-a-key"})
        assert denied.status_code == 401 and "X-API-Key" in denied.json()["detail"]


def test_limits_answer_413_and_429_with_clear_messages(redis_url: str) -> None:
    # A queue with no worker, so accepted jobs stay queued and count against the key.
    settings = redis_settings(
        redis_url,
        f"no-workers-{uuid.uuid4().hex[:8]}",
        max_batch_items=3,
        max_queued_per_key=2,
        max_body_bytes=300_000,
        max_source_bytes=100_000,
    )
    with background_server(settings) as url, client(url, LIMITED) as http:
        too_big = http.post("/v1/evaluations", json={"reference": TINY_REFERENCE, "candidate": "#" * 100_001})
        assert (
            too_big.status_code == 413 and too_big.json()["detail"] == "the candidate is 100001 bytes; the limit is 100000 bytes"
        )
        body_too_big = http.post("/v1/evaluations", json={"reference": TINY_REFERENCE, "candidate": "#" * 400_000})
        assert body_too_big.status_code == 413 and "the limit is 300000 bytes" in body_too_big.json()["detail"]
        big_batch = http.post("/v1/batches", json={"items": [static_item(str(i)) for i in range(4)]})
        assert big_batch.status_code == 413 and big_batch.json()["detail"] == "the batch has 4 items; the limit is 3"
        assert http.post("/v1/evaluations", json=static_item("one")).status_code == 202
        assert http.post("/v1/batches", json={"items": [static_item("two")]}).status_code == 202
        refused = http.post("/v1/evaluations", json=static_item("three"))
        assert refused.status_code == 429 and refused.headers["retry-after"]
        assert "already has 2 evaluations queued or running; the limit is 2" in refused.json()["detail"]
        assert http.post("/v1/batches", json={"items": [static_item("four")]}).status_code == 429
        # A duplicate of a queued job adds nothing, so it is not refused.
        assert http.post("/v1/evaluations", json=static_item("one")).status_code == 202
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["reason"] == "no live worker"
        metrics = http.get("/metrics").text
        assert 'referee_requests_rejected_total{reason="queued_per_key"} 2.0' in metrics


def test_an_idempotency_key_returns_the_same_job(api_url: str) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    body = static_item(uuid.uuid4().hex)
    with client(api_url, ALICE) as http, client(api_url, BOB) as bob:
        first = http.post("/v1/evaluations", json=body, headers=key).json()["id"]
        assert http.post("/v1/evaluations", json=body, headers=key).json()["id"] == first
        clash = http.post("/v1/evaluations", json=static_item("other"), headers=key)
        assert clash.status_code == 422 and "different request body" in clash.json()["detail"]
        assert bob.post("/v1/evaluations", json=body, headers=key).json()["id"] != first  # keys are per API key
        batch_key = {"Idempotency-Key": uuid.uuid4().hex}
        batch = {"items": [static_item(uuid.uuid4().hex)]}
        created = http.post("/v1/batches", json=batch, headers=batch_key).json()["id"]
        assert http.post("/v1/batches", json=batch, headers=batch_key).json()["id"] == created


def test_a_job_that_raises_is_retried_then_ends_as_infrastructure_error(
    redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    # Its own database, so no other API process's sweep collects the job before we look at RQ.
    url = redis_url.rsplit("/", 1)[0] + "/1"
    queue = f"raising-{uuid.uuid4().hex[:8]}"
    start_worker(queue, url=url)
    referee = create_app(redis_settings(url, queue, job_retries=1)).state.referee  # no lifespan: no background sweep
    # An empty reference, which the API refuses with a 422, built past validation: the worker's own
    # validation of the job raises, as any fault in the job function would.
    broken = Prepared(
        digest=uuid.uuid4().hex,
        problem=Problem.model_construct(source="", name="problem"),
        submission=Submission(source="x"),
        config=EvalConfig(reward=RewardConfig(preset="fast_p")),
        timeout_s=60,
        name="broken",
    )
    evaluation_id = referee.admit("owner", [broken])[0].id
    connection = redis.Redis.from_url(url)
    job = wait_until(
        lambda: (
            (j := Job.fetch(evaluation_id, connection=connection, serializer=JSONSerializer)).get_status() == JobStatus.FAILED
            and j
        ),
        60,
        "the job to fail",
    )
    assert job.retries_left == 0  # it ran twice: once, then its one retry
    result = referee.view("owner", evaluation_id)
    assert result["verdict"] == "infrastructure_error" and result["status"] == "failed" and result["reward_preset"] == "fast_p"
    assert "ValidationError" in result["error"]["message"]
    assert referee.view("owner", evaluation_id) == result and not connection.exists(f"rq:job:{evaluation_id}")


def _kill_mid_job(http: httpx.Client, worker: WorkerProcess, candidate_tag: str) -> tuple[str, list[str]]:
    """Submit a full evaluation, SIGKILL the worker while it runs; return the id and the statuses seen after."""
    evaluation_id = http.post("/v1/evaluations", json=full(TINY_CANDIDATE + f"\n# {candidate_tag}\n")).json()["id"]
    wait_until(lambda: http.get(f"/v1/evaluations/{evaluation_id}").json()["status"] == "started", 60, "the job to start")
    wait_until(lambda: len(descendants(worker.pid)) >= 3, 30, "the work horse and its harness processes")
    below = descendants(worker.pid)
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)
    # The horse dies with its worker, and the harness processes with the horse.
    wait_until(lambda: not any(alive(pid) for pid in below), 20, f"processes {below} to end")
    return evaluation_id, [http.get(f"/v1/evaluations/{evaluation_id}").json()["status"]]


def test_a_worker_killed_mid_job_has_the_job_retried_and_completed(
    redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    queue = f"kill-retry-{uuid.uuid4().hex[:8]}"
    worker = start_worker(queue)
    with background_server(redis_settings(redis_url, queue, job_retries=1)) as url, client(url, ALICE) as http:
        evaluation_id, seen = _kill_mid_job(http, worker, uuid.uuid4().hex)
        # The sweep sees the heartbeat stop (grace 3 s) and puts the job back in the queue.
        started = time.monotonic()
        wait_until(
            lambda: seen.append(http.get(f"/v1/evaluations/{evaluation_id}").json()["status"]) or seen[-1] == "queued",
            30,
            "the abandoned job to be queued again",
        )
        assert time.monotonic() - started < 30 and "completed" not in seen
        start_worker(queue)
        result = result_of(http, evaluation_id)
        assert result["verdict"] == "correct", result


def test_a_worker_killed_with_no_retry_left_ends_as_infrastructure_error(
    redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    queue = f"kill-fail-{uuid.uuid4().hex[:8]}"
    worker = start_worker(queue)
    with background_server(redis_settings(redis_url, queue, job_retries=0)) as url, client(url, ALICE) as http:
        tag = uuid.uuid4().hex
        evaluation_id, _ = _kill_mid_job(http, worker, tag)
        result = wait_until(
            lambda: (view := http.get(f"/v1/evaluations/{evaluation_id}").json()).get("verdict") and view,
            30,
            "the abandoned job to end",
        )
        assert result["verdict"] == "infrastructure_error" and result["status"] == "failed", result
        assert "AbandonedJobError" in result["error"]["message"]
        assert "says nothing about the candidate" in result["feedback"]
        # Submitting it again makes a new job rather than returning the failure.
        again = http.post("/v1/evaluations", json=full(TINY_CANDIDATE + f"\n# {tag}\n")).json()
        assert again["id"] != evaluation_id and again["deduplicated"] is False


def test_a_worker_pins_its_gpu_before_anything_imports_torch(redis_url: str) -> None:
    queue = f"pinned-{uuid.uuid4().hex[:8]}"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "triton_referee.service.cli",
            "worker",
            "--redis-url",
            redis_url,
            "--queue",
            queue,
            "--gpu",
            "3",
            "--burst",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert f"referee worker referee-{socket.gethostname()}-gpu3-" in completed.stderr
    assert "CUDA_VISIBLE_DEVICES=3" in completed.stderr and "imported in the worker" not in completed.stderr


def test_an_idle_worker_stops_on_sigterm_with_its_warm_pool(start_worker: Callable[..., WorkerProcess]) -> None:
    """`docker stop` and systemd send SIGTERM: an idle worker exits at once, and its zygote with it
    (RQ 3 ends work() without `_stop_requested` when idle; the worker used to restart instead)."""
    worker = start_worker(f"sigterm-{uuid.uuid4().hex[:8]}")
    wait_until(lambda: any(b"harness.zygote" in _cmdline(pid) for pid in _descendants(worker.pid)), 60, "the worker's zygote")
    zygotes = [pid for pid in _descendants(worker.pid) if b"harness.zygote" in _cmdline(pid)]
    # RQ registers the worker before it installs its signal handlers: a SIGTERM in between kills it outright.
    wait_until(lambda: "Listening on" in worker.tail(), 30, "RQ's work loop")
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(timeout=15)
    assert "warm shut down requested" in worker.tail()
    assert "waiting for Redis" not in worker.tail()
    wait_until(lambda: not any(_cmdline(pid) for pid in zygotes), 15, "the worker's zygote to exit")


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            children.setdefault(int(stat[stat.rindex(b")") + 2 :].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
