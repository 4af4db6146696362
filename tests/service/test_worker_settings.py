"""`referee worker` reads its settings once at start, from REFEREE_* variables overridden by its
options (worker/settings.py), and its jobs, run in RQ's forked work horses, use them through the
context set up from them (worker/context.py). Real Redis, real worker processes."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.service.service_support import API_KEYS, ROOT, TINY_CANDIDATE, full, redis_settings
from triton_referee.service.server import background_server


def _worker(*args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    environment = {name: value for name, value in os.environ.items() if not name.startswith("REFEREE_")}
    return subprocess.run(
        [sys.executable, "-m", "triton_referee.service.cli", "worker", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environment, **(env or {})},
    )


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_environment_sets_the_worker_and_its_options_override_it(redis_url: str) -> None:
    from_env = _worker(
        "--burst",
        env={
            "REFEREE_REDIS_URL": redis_url,
            "REFEREE_QUEUE_NAME": "queue-from-env",
            "REFEREE_WORKER_NAME": "worker-from-env",
            "REFEREE_WARM_POOL": "off",
        },
    )
    assert from_env.returncode == 0, from_env.stderr
    assert "referee worker worker-from-env on queue queue-from-env:" in from_env.stderr
    assert "warm pool off" in from_env.stderr

    overridden = _worker(
        "--redis-url",
        redis_url,
        "--burst",
        "--queue",
        "queue-from-option",
        "--warm-pool",
        env={"REFEREE_QUEUE_NAME": "queue-from-env", "REFEREE_WARM_POOL": "off", "REFEREE_ISOLATION": "process"},
    )
    assert overridden.returncode == 0, overridden.stderr
    assert "on queue queue-from-option:" in overridden.stderr and "warm pool on" in overridden.stderr


def test_a_bad_choice_or_a_missing_setting_is_a_usage_error(redis_url: str) -> None:
    """Exit 2 naming the choices, before the worker connects or starts anything."""
    option = _worker("--redis-url", redis_url, "--isolation", "chroot")
    assert option.returncode == 2, option.stderr
    assert all(
        word in _flat(option.stderr)
        for word in ("--isolation", "'chroot'", "'auto'", "'docker'", "'bwrap'", "'unshare'", "'process'")
    )

    variable = _worker("--redis-url", redis_url, env={"REFEREE_LOCKDOWN": "partial"})
    assert variable.returncode == 2, variable.stderr
    assert all(word in _flat(variable.stderr) for word in ("REFEREE_LOCKDOWN", "'on'", "'landlock'", "'seccomp'", "'off'"))
    assert "Traceback" not in variable.stderr

    missing = _worker()
    assert missing.returncode == 2, missing.stderr
    assert "--redis-url or REFEREE_REDIS_URL" in _flat(missing.stderr)


def test_a_job_in_a_work_horse_uses_the_settings_the_worker_read_at_start(redis_url: str, tmp_path: Path) -> None:
    """REFEREE_REFERENCE_CACHE_DIR and REFEREE_LOCK_DIR reach the job in its forked horse (the reference
    timing and data are written there), and the warm pool does too (the same context carries it)."""
    queue = f"settings-{uuid.uuid4().hex[:8]}"
    cache, locks = tmp_path / "reference-cache", tmp_path / "locks"
    with (
        background_server(redis_settings(redis_url, queue)) as url,
        httpx.Client(base_url=url, headers={"X-API-Key": API_KEYS[0]}, timeout=60) as http,
    ):
        created = http.post("/v1/evaluations", json=full(TINY_CANDIDATE + f"\n# {queue}\n"))
        assert created.status_code in (200, 201, 202), created.text
        evaluation_id = created.json()["id"]
        completed = _worker(
            "--burst",
            env={
                "REFEREE_REDIS_URL": redis_url,
                "REFEREE_QUEUE_NAME": queue,
                "REFEREE_ISOLATION": "process",
                "REFEREE_REFERENCE_CACHE_DIR": str(cache),
                "REFEREE_LOCK_DIR": str(locks),
            },
            timeout=300,
        )
        assert completed.returncode == 0, completed.stderr
        assert "warm pool on" in completed.stderr
        result = http.get(f"/v1/evaluations/{evaluation_id}", params={"wait": 30}).json()
    assert result.get("verdict") == "correct", result
    assert any(path.suffix == ".json" for path in cache.iterdir()), list(cache.iterdir())  # the reference timing
    assert any((cache / "data").iterdir()), "the reference data, as files: the horse's memory would not outlive it"
    assert locks.is_dir(), "the timing lock lives where the settings say"
