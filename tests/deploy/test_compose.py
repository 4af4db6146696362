"""The docker deployment as written: images built from docker/Dockerfile.{worker,api}, the stack
started with docker compose from docker/compose.yaml, an evaluation through the API, the worker
restarted and serving again.

Without a registry the Dockerfiles build on a local base image made from this machine's runtime
(tests/deploy/base_image.py; their BASE_IMAGE, TORCH_SPEC, APT_PACKAGES, PIP_OPTIONS and SANDBOX_PYTHON
build arguments exist for this), and Redis runs from that image too (REFEREE_REDIS_IMAGE). There is
no GPU here, so the compose file is used with one change: worker-gpu0 loses its NVIDIA device
reservation and worker-gpu1 is left out; everything else (the non-root worker, the named volume, the
control directory at the same host path, the `prepare` step, the docker socket) is the file's own.
The worker confines harness processes in sandbox containers of its own image, started through the
host's daemon, and runs the candidate with Triton's interpreter. Nothing here uses the network
beyond this machine's loopback and the compose project's own bridge.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.machine import compose_command, ensure_docker
from tests.machine_lock import machine_lock
from tests.tiny_problem import CANDIDATE, REFERENCE
from triton_referee.service.stack import free_port

from .base_image import build_base_image

ROOT = Path(__file__).resolve().parents[2]
TAG = "compose-test"
PROJECT = "referee-compose-test"
API_KEY = "compose-test-key"
WORKER = "worker-gpu0"


def _cpu_compose_file(folder: Path) -> Path:
    """docker/compose.yaml with worker-gpu0's GPU reservation removed and worker-gpu1 left out."""
    spec = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = spec["services"]
    services.pop("worker-gpu1")
    assert services[WORKER].pop("deploy")["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    for service in services.values():  # relative to the original file's folder
        if "build" in service:
            service["build"]["context"] = str(ROOT)
    spec = {key: value for key, value in spec.items() if not key.startswith("x-")}
    path = folder / "compose.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _build(dockerfile: str, tag: str, base: str, python: str) -> float:
    started = time.monotonic()
    arguments = {
        "BASE_IMAGE": base,
        "PIP_OPTIONS": "--no-index --no-build-isolation",
        "TORCH_SPEC": "",
        "APT_PACKAGES": "",
        "SANDBOX_PYTHON": python,
    }
    command = ["docker", "build", "-q", "-f", f"docker/{dockerfile}", "-t", tag]
    for key, value in arguments.items():
        if key in (ROOT / "docker" / dockerfile).read_text():
            command += ["--build-arg", f"{key}={value}"]
    built = subprocess.run([*command, "."], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout + built.stderr
    return time.monotonic() - started


@dataclass
class Stack:
    compose: list[str]
    env: dict[str, str]
    url: str
    state_dir: Path
    build_seconds: dict[str, float]

    def run(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.compose, *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)

    def container(self, service: str) -> dict:
        ids = self.run("ps", "-q", service).stdout.split()
        assert len(ids) == 1, f"{service}: {ids}"
        inspected = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True, check=True)
        return json.loads(inspected.stdout)[0]

    def logs(self, service: str) -> str:
        return self.run("logs", "--no-color", service).stdout


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _wait(predicate, timeout: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}\n{stack.run('ps').stdout}\n"
                f"api:\n{stack.logs('api')[-3000:]}\nworker:\n{stack.logs(WORKER)[-5000:]}"
            )
        time.sleep(0.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ensure_docker()
    compose = compose_command()
    with machine_lock("docker"):
        base, info, base_seconds = build_base_image(sys.executable)
    with machine_lock("docker-tests"):  # one docker test at a time on this machine, as tests/security does
        build_seconds = {
            "base": base_seconds,
            "worker": _build("Dockerfile.worker", f"triton-referee-worker:{TAG}", base, info["executable"]),
            "api": _build("Dockerfile.api", f"triton-referee-api:{TAG}", base, info["executable"]),
        }
        folder = tmp_path_factory.mktemp("compose")
        state_dir = folder / "docker-state"  # not made here: docker makes a missing bind source, root-owned
        port = free_port()
        socket_gid = os.stat("/var/run/docker.sock").st_gid
        env = {
            **os.environ,
            "COMPOSE_PROJECT_NAME": PROJECT,
            "REFEREE_API_KEYS": API_KEY,
            "DOCKER_GID": str(socket_gid),
            "REFEREE_API_PORT": f"127.0.0.1:{port}",
            "REFEREE_STATE_DIR": str(state_dir),
            "REFEREE_IMAGE_TAG": TAG,
            "REFEREE_REDIS_IMAGE": base,
        }
        stack = Stack([*compose, "-f", str(_cpu_compose_file(folder))], env, f"http://127.0.0.1:{port}", state_dir, build_seconds)
        stack.run("down", "-v", "--remove-orphans")  # a run killed before its teardown
        try:
            up = stack.run("up", "-d", "--no-build", timeout=300)
            assert up.returncode == 0, up.stdout + up.stderr
            _wait(lambda: _ready(stack.url), 120, "the API's /readyz (queue reachable, a live worker)", stack)
            yield stack
        finally:
            stack.run("down", "-v", "--remove-orphans")
            pool = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:10]
            leftovers = subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label=referee.pool={pool}"], capture_output=True, text=True
            ).stdout.split()
            if leftovers:
                subprocess.run(["docker", "rm", "-f", *leftovers], capture_output=True)
            shutil.rmtree(state_dir, ignore_errors=True)


def _evaluate(stack: Stack, name: str) -> dict:
    body = {"reference": REFERENCE, "candidate": CANDIDATE, "name": name, "trials": 1, "device": "cpu"}
    with httpx.Client(base_url=stack.url, headers={"X-API-Key": API_KEY}, timeout=30) as client:
        created = client.post("/v1/evaluations", json=body, params={"wait": 25})
        assert created.status_code in (200, 202), created.text
        view = created.json()
        deadline = time.monotonic() + 180
        while "verdict" not in view and time.monotonic() < deadline:
            view = client.get(f"/v1/evaluations/{view['id']}", params={"wait": 20}).json()
    assert "verdict" in view, f"no result: {view}\nworker:\n{stack.logs(WORKER)[-5000:]}"
    return view


def _assert_started_cleanly(stack: Stack) -> None:
    worker = stack.container(WORKER)
    assert worker["State"]["Running"] and worker["RestartCount"] == 0, worker["State"]
    assert worker["Config"]["User"] == "referee"
    logs = stack.logs(WORKER)
    assert "PermissionError" not in logs and "Traceback" not in logs, logs[-5000:]
    assert "is not writable" not in logs, logs[-3000:]  # the volume itself is writable: no fallback needed


def test_the_stack_evaluates_through_the_api_with_a_non_root_worker(stack: Stack) -> None:
    _assert_started_cleanly(stack)
    assert stack.state_dir.stat().st_uid == 10001  # `prepare` handed the root-made control directory over
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        assert client.post("/v1/evaluations", json={"reference": REFERENCE, "candidate": CANDIDATE}).status_code == 401
    result = _evaluate(stack, "first")
    assert result["verdict"] == "correct", json.dumps(result)[:3000]
    assert result["environment"]["isolation"] == "docker"  # in a sandbox container of the worker image
    cache = subprocess.run(
        ["docker", "exec", stack.container(WORKER)["Id"], "ls", "/var/lib/referee/reference-cache"],
        capture_output=True,
        text=True,
    )
    assert cache.returncode == 0 and cache.stdout.split(), cache.stdout + cache.stderr  # the cache was written


def test_the_worker_comes_back_cleanly_after_a_restart(stack: Stack) -> None:
    before = stack.container(WORKER)["State"]["StartedAt"]
    restarted = stack.run("restart", WORKER, timeout=120)
    assert restarted.returncode == 0, restarted.stderr
    after = stack.container(WORKER)
    assert after["State"]["StartedAt"] != before
    _assert_started_cleanly(stack)
    result = _evaluate(stack, "after-restart")
    assert result["verdict"] == "correct", json.dumps(result)[:3000]
    time.sleep(3)  # a restart loop would show here
    assert stack.container(WORKER)["RestartCount"] == 0
