"""The operating-system layer alone: attack programs run through each backend's command line with
no harness and no audit hook. Under `process` the same probes succeed (the control: each probe
really works), under docker, bwrap and unshare they are refused or contained."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from triton_referee.sandbox import probes
from triton_referee.sandbox.probes import run_probe, start_loopback_service
from triton_referee.worker.evaluate import jobs_root

from .conftest import CONFINING, ROOT

SECRETS = {"AWS_SECRET_ACCESS_KEY": "probe-aws-" + uuid.uuid4().hex, "REFEREE_API_KEYS": "probe-key-" + uuid.uuid4().hex}


@pytest.fixture(scope="module")
def loopback_service() -> int:
    """A TCP service on the host's loopback (where Redis would be) that answers every connection."""
    return start_loopback_service()


@pytest.fixture
def escape_targets(loopback_service: int, job_dir: Path) -> dict:
    other = Path(tempfile.mkdtemp(prefix="referee-", dir=jobs_root()))
    (other / "reference").mkdir()
    (other / "reference" / "expected.txt").write_text("other job's expected output")
    sentinel = subprocess.Popen(["sleep", "120"], start_new_session=True)
    config = {
        "port": loopback_service,
        "outside": "1.1.1.1",
        "other_job_file": str(other / "reference" / "expected.txt"),
        "worker_file": str(ROOT / "service" / "settings.py"),
        "outside_file": str(Path(tempfile.gettempdir()) / f"referee-escape-{uuid.uuid4().hex}"),
        "repo_file": str(ROOT / f"escape-{uuid.uuid4().hex}.txt"),
        "sentinel_pid": sentinel.pid,
        "worker_pid": os.getpid(),
        "secrets": SECRETS,
    }
    saved = {k: os.environ.get(k) for k in SECRETS}
    os.environ.update(SECRETS)  # the worker has secrets in its environment; the child must not
    yield config
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    alive = sentinel.poll() is None
    sentinel.kill()
    sentinel.wait()
    config["sentinel_survived"] = alive
    for path in (config["outside_file"], config["repo_file"]):
        Path(path).unlink(missing_ok=True)
    import shutil

    shutil.rmtree(other, ignore_errors=True)


ALWAYS_REFUSED = (
    "tcp_loopback_service",
    "tcp_outside",
    "dns",
    "read_shadow",
    "read_other_job",
    "read_worker_file",
    "write_repo",
    "write_etc",
    "kill_host_process",
    "worker_mem",
    "worker_environ",
)


@pytest.mark.parametrize("backend", [*CONFINING, "process"])
def test_escapes_are_refused_by_the_backend(backend: str, make_isolation, escape_targets: dict, job_dir: Path) -> None:
    isolation = make_isolation(backend)
    config = {**escape_targets, "spare_parent": backend == "process"}
    code, stdout, stderr = run_probe(isolation, probes.ESCAPES, job_dir, config)
    assert stdout.strip(), f"the probe printed nothing (exit {code}): {stderr[-3000:]}"
    result = json.loads(stdout.strip().splitlines()[0])
    if backend == "process":
        # The control: nothing stops a plain process (run as the worker's user).
        assert result["tcp_loopback_service"] == {"ok": "+PONG\r\n"}
        assert "ok" in result["read_other_job"] and "ok" in result["read_worker_file"]
        assert "ok" in result["write_outside_tmp"] and Path(escape_targets["outside_file"]).exists()
        return
    refused = {name: result[name] for name in ALWAYS_REFUSED if "ok" in result[name]}
    assert not refused, f"{backend} let these through: {refused}"
    assert "error" in result["secrets"], result["secrets"]
    assert result["write_workdir"] == {"ok": str(job_dir / "inside.txt")}  # the work directory stays usable
    # /tmp is the sandbox's own tmpfs: a write there may succeed, but never reaches the host's /tmp.
    assert not Path(escape_targets["outside_file"]).exists() and not Path(escape_targets["repo_file"]).exists()
    assert not (job_dir / "inside.txt").exists()  # the work directory is private: a tmpfs, not the host's
    assert os.kill(escape_targets["sentinel_pid"], 0) is None  # the host process it tried to kill lives
    assert result["tcp_loopback_service"]["error"] in ("ENETUNREACH", "ECONNREFUSED"), result["tcp_loopback_service"]
    # Killing its parent reaches at most the sandbox's own processes: the next job runs as usual.
    code, stdout, stderr = run_probe(isolation, "print('next job')", job_dir)
    assert (code, stdout.strip()) == (0, "next job"), stderr[-2000:]


@pytest.mark.parametrize("backend", CONFINING)
def test_fork_bomb_is_bounded(backend: str, make_isolation, job_dir: Path) -> None:
    isolation = make_isolation(backend, processes=64)
    started = time.monotonic()
    _, stdout, _ = run_probe(isolation, probes.FORK_BOMB, job_dir, timeout=120)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["error"] is not None and result["forked"] <= 64, result
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("backend", CONFINING)
def test_memory_bomb_is_killed(backend: str, make_isolation, job_dir: Path) -> None:
    isolation = make_isolation(backend, memory_bytes=512 << 20)
    code, stdout, stderr = run_probe(isolation, probes.MEMORY_BOMB, job_dir, timeout=120)
    reached = json.loads(stdout.strip().splitlines()[-1])["mib"] if stdout.strip() else 0
    assert code != 0 and reached < 1024, (code, reached, stderr[-2000:])


@pytest.mark.parametrize("backend", CONFINING)
def test_disk_fill_hits_the_limits(backend: str, make_isolation, job_dir: Path) -> None:
    isolation = make_isolation(backend, file_bytes=32 << 20, workdir_bytes=96 << 20)
    _, stdout, _ = run_probe(isolation, probes.DISK_FILL, job_dir, timeout=120)
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["file_error"] in ("EFBIG", "ENOSPC") and result["file_mib"] <= 32, result
    assert result["many_error"] == "ENOSPC" and result["many_mib"] <= 96, result
    assert not (job_dir / "fill.bin").exists()  # it all went to the private tmpfs


def _processes_with(marker: str) -> list[int]:
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    with open(f"/proc/{pid}/stat", "rb") as stat:
                        if stat.read().split(b") ")[1][:1] != b"Z":
                            found.append(int(pid))
        except OSError:
            pass
    return found


def _wait_gone(marker: str, seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("backend", CONFINING)
def test_endless_loop_is_stopped_by_the_cpu_limit_with_its_whole_tree(backend: str, make_isolation, job_dir: Path) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    isolation = make_isolation(backend, cpu_seconds=2)
    code, stdout, _ = run_probe(isolation, probes.ENDLESS + f"\n# {marker}\n", job_dir, timeout=60)
    assert "looping" in stdout and code != 0
    assert not _wait_gone(marker), "a process of the sandbox outlived it"


@pytest.mark.parametrize("backend", CONFINING)
def test_wall_clock_kill_takes_the_whole_tree(backend: str, make_isolation, job_dir: Path) -> None:
    marker = f"marker-{uuid.uuid4().hex}"
    isolation = make_isolation(backend)
    code, stdout, _ = run_probe(isolation, probes.ENDLESS + f"\n# {marker}\n", job_dir, kill_after=8)
    assert code is None and "looping" in stdout
    assert not _wait_gone(marker), "a process of the sandbox outlived the kill of its group"


def test_docker_launcher_survives_a_replaced_control_socket(make_isolation, job_dir: Path) -> None:
    """The control directory is writable from inside the container: a job that swaps the launcher's
    socket for its own file taints the container, and the next job gets a new one."""
    isolation = make_isolation("docker")
    hijack = (
        "import os, socket\nos.unlink('/control/launch.sock')\ns = socket.socket(socket.AF_UNIX)\n"
        "s.bind('/control/launch.sock')\nprint('replaced', flush=True)\n"
    )
    code, stdout, stderr = run_probe(isolation, hijack, job_dir)
    assert "replaced" in stdout, stderr[-2000:]
    code, stdout, stderr = run_probe(isolation, "print('next job')", job_dir)
    assert (code, stdout.strip()) == (0, "next job"), stderr[-2000:]
