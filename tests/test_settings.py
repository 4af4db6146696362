"""One settings object per process (worker/settings.py, service/settings.py), read once at start and
passed down; defaults in worker/defaults.py. What could go wrong: a variable that no longer reaches
the pool or the jobs, a round trip through uvicorn's worker processes that changes a value, an
import that writes to the user's home, an operator switch reachable from a request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TINY_REFERENCE
from triton_referee.service.app import create_app
from triton_referee.service.server import settings_environment
from triton_referee.service.settings import Settings
from triton_referee.worker import context, defaults
from triton_referee.worker.models import EvaluationResult, Verdict
from triton_referee.worker.settings import JudgeSettings, WorkerSettings

ROOT = Path(__file__).resolve().parents[1]


def test_settings_given_by_the_environment_reach_the_pool_and_the_job(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Read once (as a worker does at start), then carried by the context: the job gets the pool the
    settings started, their harness interpreter, backend and lockdown, and the audit-hook switch."""
    import triton_referee.worker.jobs as jobs

    for name, value in {
        "REFEREE_ISOLATION": "process",
        "REFEREE_POOL_SPARES": "1",
        "REFEREE_LOCKDOWN": "seccomp",
        "REFEREE_HARNESS_PYTHON": sys.executable,
        "REFEREE_UNSAFE_NO_AUDIT_HOOK": "1",
        "REFEREE_REFERENCE_CACHE_DIR": str(tmp_path / "cache"),
        "REFEREE_LOCK_DIR": str(tmp_path / "locks"),
        "REFEREE_EXCLUSIVE_TIMING": "off",
    }.items():
        monkeypatch.setenv(name, value)
    settings = JudgeSettings()
    seen: dict[str, Any] = {}

    def fake_evaluate(problem: Any, submission: Any, config: Any, **kwargs: Any) -> EvaluationResult:
        seen.update(kwargs)
        return EvaluationResult(id=kwargs["job_id"], verdict=Verdict.correct)

    monkeypatch.setattr(jobs, "evaluate", fake_evaluate)
    host = context.start(settings, data_in_files=False, device="cpu")
    try:
        assert host.pool is not None and host.pool.spares == 1 and host.pool.python == sys.executable
        pool_client = host.pool.client
        assert pool_client.request({"op": "ping"})["ok"]  # a real zygote
        jobs.run_evaluation(
            {"id": "x", "problem": {"source": TINY_REFERENCE}, "submission": {"source": "x"}, "config": {"device": "cpu"}}
        )
    finally:
        context.stop(host)
    assert seen["pool"] == pool_client
    assert seen["python"] == sys.executable and seen["audit_hook"] is False
    assert seen["isolation"].name == "process" and seen["isolation"].lockdown == "seccomp"
    assert seen["timing_lock"].path.parent == tmp_path / "locks" and seen["timing_lock"].exclusive is False
    assert seen["reference_cache"].directory == tmp_path / "cache"


def test_a_job_for_another_device_does_not_get_the_pool(tmp_path: Path) -> None:
    host = context.start(
        JudgeSettings(warm_pool=True, isolation="process", reference_cache_dir=tmp_path),
        data_in_files=False,
        device="cpu",
        pool_spares=1,
    )
    try:
        assert host.pool is not None and host.pool_for("cpu") is not None
        assert host.pool_for("cuda") is None  # the zygote was made for the CPU: a CUDA job starts fresh processes
    finally:
        context.stop(host)


def test_without_a_started_context_a_job_reads_the_settings_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A script calling run_evaluation directly: the settings come from the environment the first time,
    and the context is kept (not read again per job)."""
    monkeypatch.setattr(context, "_current", None)
    monkeypatch.setenv("REFEREE_ISOLATION", "process")
    monkeypatch.setenv("REFEREE_REFERENCE_CACHE_DIR", str(tmp_path / "cache"))
    first = context.current()
    monkeypatch.setenv("REFEREE_REFERENCE_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert context.current() is first and first.pool is None
    assert first.reference_cache is not None and first.reference_cache.directory == tmp_path / "cache"
    context.stop(first)


@pytest.mark.parametrize(
    "environment",
    [
        {},
        {
            "REFEREE_LOCKDOWN": "landlock",
            "REFEREE_API_KEYS": "a,b",
            "REFEREE_WARM_POOL": "off",
            "REFEREE_ISOLATION": "bwrap",
            "REFEREE_DOCKER_PYTHON": "/opt/python",
        },
    ],
)
def test_settings_survive_the_round_trip_to_uvicorns_worker_processes(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str]
) -> None:
    """`referee serve --processes N` hands its settings to uvicorn's processes as variables."""
    for name in [name for name in os.environ if name.startswith("REFEREE_")]:
        monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    original = Settings(redis_url="redis://localhost:1/0", port=9001, max_wait_s=12.5)
    for name in [name for name in os.environ if name.startswith("REFEREE_")]:
        monkeypatch.delenv(name)
    for name, value in settings_environment(original).items():
        monkeypatch.setenv(name, value)
    assert Settings() == original


def test_defaults_come_from_the_defaults_module(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("REFEREE_")]:
        monkeypatch.delenv(name)
    worker = WorkerSettings(redis_url="redis://localhost:1/0")
    assert (worker.isolation, worker.lockdown, worker.pool_spares, worker.worker_ttl_s, worker.queue_name) == (
        defaults.ISOLATION,
        defaults.LOCKDOWN,
        defaults.POOL_SPARES,
        defaults.WORKER_TTL_S,
        defaults.QUEUE_NAME,
    )
    monkeypatch.setenv("REFEREE_CONCURRENCY", "16")  # the trainer integrations' (evaluations in flight), not the worker's
    assert WorkerSettings(redis_url="redis://localhost:1/0").worker_concurrency == defaults.WORKER_CONCURRENCY
    api = Settings()
    assert (api.port, api.max_body_bytes, api.reference_data_max_uses, api.lock_dir) == (
        defaults.PORT,
        defaults.MAX_BODY_BYTES,
        defaults.REFERENCE_DATA_MAX_USES,
        defaults.LOCK_DIR,
    )
    assert api.unsafe_no_audit_hook is False and api.audit_hook is True


def test_importing_the_service_writes_nothing_and_starting_it_makes_its_directories(tmp_path: Path) -> None:
    """Importing service.app (and the CLI and the worker) leaves HOME untouched; the embedded server
    makes the reference cache's directory when it starts."""
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "import json, os, sys\n"
        "import triton_referee.service.app, triton_referee.service.cli, triton_referee.worker.main, triton_referee.worker.jobs, triton_referee.worker.context\n"
        "home = os.environ['HOME']\n"
        "after_import = sorted(os.listdir(home))\n"
        "from fastapi.testclient import TestClient\n"
        "from triton_referee.service.settings import Settings\n"
        "app = triton_referee.service.app.create_app(Settings(redis_url=None, warm_pool=False, isolation='process'))\n"
        "after_create = sorted(os.listdir(home))\n"
        "with TestClient(app):\n"
        "    started = os.path.isdir(os.path.join(home, '.cache', 'triton-referee', 'reference'))\n"
        "print(json.dumps([after_import, after_create, started]))\n"
    )
    environment = {name: value for name, value in os.environ.items() if not name.startswith(("REFEREE_", "XDG_"))}
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**environment, "HOME": str(home)},
    )
    assert completed.returncode == 0, completed.stderr
    after_import, after_create, started = json.loads(completed.stdout.strip().splitlines()[-1])
    assert after_import == [] and after_create == [], (after_import, after_create)
    assert started is True


@pytest.mark.parametrize(
    "switch", [{"unsafe_no_audit_hook": True}, {"audit_hook": False}, {"lockdown": "off"}, {"isolation": "process"}]
)
def test_operator_switches_are_not_taken_from_a_request(switch: dict[str, Any]) -> None:
    """They come from the worker's environment through its settings; a request naming one is refused."""
    with TestClient(create_app(Settings(redis_url=None, warm_pool=False, isolation="process"))) as api:
        answer = api.post("/v1/evaluations", json={"reference": TINY_REFERENCE, "candidate": "x", **switch})
    assert answer.status_code == 422, answer.text
    assert next(iter(switch)) in answer.text


def test_the_trainer_side_reads_its_variables_in_one_settings_object(monkeypatch: pytest.MonkeyPatch) -> None:
    from triton_referee.service.integrations import scorer_from_env

    for name in [name for name in os.environ if name.startswith("REFEREE_")]:
        monkeypatch.delenv(name)
    assert scorer_from_env().url == "http://127.0.0.1:8000" and scorer_from_env().concurrency == 16
    monkeypatch.setenv("REFEREE_SERVER", "http://server:1")
    assert scorer_from_env().url == "http://server:1"
    monkeypatch.setenv("REFEREE_URL", "http://url:2")  # REFEREE_URL wins over REFEREE_SERVER
    monkeypatch.setenv("REFEREE_OPTIONS", '{"trials": 2}')
    monkeypatch.setenv("REFEREE_CONCURRENCY", "3")
    monkeypatch.setenv("REFEREE_API_KEY", "k")
    scorer = scorer_from_env(concurrency=None)
    assert (scorer.url, scorer.options, scorer.concurrency, scorer.api_key) == ("http://url:2", {"trials": 2}, 3, "k")
    assert scorer_from_env(url="http://given:3").url == "http://given:3"
