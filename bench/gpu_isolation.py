"""The unshare backend on a GPU host: a real CUDA Triton kernel evaluated inside it, and the escape
probes that make sense there. For hosts without docker or bubblewrap (the lent H100/H200s).

    python3 -m bench.gpu_isolation --out DIR [--examples relu softmax]

Needs: Linux, python3 with torch (CUDA) and triton, pydantic on PYTHONPATH (the engine's models),
util-linux `unshare` able to create namespaces. Fails at once, with the reason, when one is
missing (exit 2). Every step after that is recorded, exceptions included, in
DIR/gpu-isolation-<card>-<date>.json; the exit code is 0 only when every expectation held.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from bench.lib import ROOT, slug, write_result


def fail_fast(message: str) -> None:
    print(f"gpu_isolation: cannot run: {message}", file=sys.stderr)
    sys.exit(2)


def preflight() -> dict[str, Any]:
    if sys.platform != "linux":
        fail_fast("Linux only")
    try:
        import torch
        import triton
    except ImportError as exc:
        fail_fast(f"{exc} (this python is {sys.executable})")
    if not torch.cuda.is_available():
        fail_fast("torch.cuda.is_available() is False")
    try:
        import pydantic  # noqa: F401
    except ImportError:
        fail_fast("pydantic is not importable: put the wheels directory on PYTHONPATH")
    if shutil.which("unshare") is None:
        fail_fast("util-linux `unshare` is not on PATH")
    from triton_referee.sandbox.selection import unshare_works

    if not unshare_works():
        fail_fast(
            "unshare cannot create the namespaces (user namespaces disabled?); try: unshare --net --pid --mount --fork true"
        )
    # The harness runs with `python -I`, so PYTHONPATH does not reach it: torch must be installed.
    probe = subprocess.run([sys.executable, "-I", "-c", "import torch, triton"], capture_output=True, text=True)
    if probe.returncode != 0:
        fail_fast(f"{sys.executable} -I cannot import torch and triton: {probe.stderr[-500:]}")
    return {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "root": os.geteuid() == 0,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def step(record: dict[str, Any], name: str, fn: Any) -> Any:
    started = time.monotonic()
    try:
        value = fn()
        record[name] = {"ok": True, "value": value, "seconds": round(time.monotonic() - started, 3)}
        return value
    except Exception as exc:  # recorded, and the next step still runs
        record[name] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-4000:],
            "seconds": round(time.monotonic() - started, 3),
        }
        return None


def evaluate_example(example: str, isolation_name: str) -> dict[str, Any]:
    from triton_referee.sandbox.selection import select_isolation
    from triton_referee.worker.evaluate import evaluate
    from triton_referee.worker.models import EvalConfig, Problem, Submission

    folder = ROOT / "examples" / example
    started = time.monotonic()
    result = evaluate(
        Problem(source=(folder / "reference.py").read_text()),
        Submission(source=(folder / "candidate.py").read_text()),
        EvalConfig(device="cuda", trials=3, timeout_s=300),
        isolation=select_isolation(isolation_name),
    )
    return {
        "verdict": result.verdict.value,
        "isolation": result.environment.isolation,
        "device": result.environment.device,
        "interpreter": result.environment.interpreter,
        "speedup": result.performance.speedup,
        "candidate_ms": result.performance.candidate_ms.median if result.performance.candidate_ms else None,
        "launches": result.anti_cheat.triton_launches,
        "error": result.error,
        "wall_s": round(time.monotonic() - started, 2),
        "stderr_tail": (result.output or {}).get("stderr", "")[-1500:],
    }


def run_probes(out: dict[str, Any]) -> None:
    from triton_referee.sandbox.probes import ESCAPES, run_probe, start_loopback_service
    from triton_referee.sandbox.selection import select_isolation
    from triton_referee.worker.evaluate import jobs_root

    port = start_loopback_service()
    other = Path(tempfile.mkdtemp(prefix="referee-", dir=jobs_root()))
    (other / "expected.txt").write_text("another job's data")
    job = Path(tempfile.mkdtemp(prefix="referee-", dir=jobs_root())) / "candidate"
    job.mkdir()
    sentinel = subprocess.Popen(["sleep", "300"], start_new_session=True)
    secrets = {"AWS_SECRET_ACCESS_KEY": "gpu-probe-" + uuid.uuid4().hex, "REFEREE_API_KEYS": "gpu-probe-" + uuid.uuid4().hex}
    os.environ.update(secrets)
    config: dict[str, Any] = {
        "port": port,
        "outside": "1.1.1.1",
        "other_job_file": str(other / "expected.txt"),
        "worker_file": str(ROOT / "service" / "settings.py"),
        "outside_file": str(Path(tempfile.gettempdir()) / f"referee-escape-{uuid.uuid4().hex}"),
        "repo_file": str(ROOT / f"escape-{uuid.uuid4().hex}.txt"),
        "sentinel_pid": sentinel.pid,
        "worker_pid": os.getpid(),
        "secrets": secrets,
    }
    try:
        for backend in ("unshare", "process"):
            isolation = select_isolation(backend)
            code, stdout, stderr = run_probe(isolation, ESCAPES, job, {**config, "spare_parent": backend == "process"})
            lines = stdout.strip().splitlines()
            attempts = json.loads(lines[0]) if lines else {}
            leaked = [
                k for k, v in attempts.items() if "ok" in v and k not in ("write_workdir", "ctypes_self_mem", "write_outside_tmp")
            ]
            out[f"probes_{backend}"] = {
                "exit": code,
                "attempts": attempts,
                "kill_attempts": json.loads(lines[1]) if len(lines) > 1 else None,
                "succeeded": leaked,
                "stderr_tail": stderr[-1500:],
                "host_outside_file_written": Path(config["outside_file"]).exists(),
                "host_repo_file_written": Path(config["repo_file"]).exists(),
                "sentinel_alive": sentinel.poll() is None,
            }
            for path in (config["outside_file"], config["repo_file"]):
                Path(path).unlink(missing_ok=True)
            if backend == "process":
                sentinel.kill()
                sentinel.wait()
                sentinel = subprocess.Popen(["sleep", "300"], start_new_session=True)
        cuda_probe = (
            "import json, torch; x = torch.ones(4, device='cuda'); "
            "print(json.dumps({'cuda': torch.cuda.is_available(), 'sum': float(x.sum()), 'name': torch.cuda.get_device_name()}))"
        )
        code, stdout, stderr = run_probe(select_isolation("unshare"), cuda_probe, job, {}, timeout=300, device="cuda")
        out["cuda_inside_unshare"] = {"exit": code, "stdout": stdout[-500:], "stderr_tail": stderr[-1500:]}
    finally:
        sentinel.kill()
        shutil.rmtree(other, ignore_errors=True)
        shutil.rmtree(job.parent, ignore_errors=True)
        for key in secrets:
            os.environ.pop(key, None)


def expectations(record: dict[str, Any]) -> list[str]:
    """What must hold; each failed one is named in the result and makes the exit code 1."""
    failed = []
    for name, entry in record["steps"].items():
        if not entry["ok"]:
            failed.append(f"{name} raised")
        elif name.startswith("evaluate_") and name.endswith("_unshare"):
            value = entry["value"]
            if value["verdict"] != "correct" or value["isolation"] != "unshare":
                failed.append(f"{name}: {value['verdict']} under {value['isolation']}")
    probes = record["steps"].get("probes", {}).get("value") or {}
    confined = probes.get("probes_unshare", {})
    if confined.get("succeeded"):
        failed.append(f"unshare let through: {confined['succeeded']}")
    if (
        confined.get("host_outside_file_written")
        or confined.get("host_repo_file_written")
        or confined.get("sentinel_alive") is False
    ):
        failed.append("unshare: a write reached the host or the sentinel died")
    if probes.get("cuda_inside_unshare", {}).get("exit") != 0:
        failed.append("CUDA did not work inside unshare")
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--examples", nargs="+", default=["relu", "softmax"])
    args = parser.parse_args()
    host = preflight()
    record: dict[str, Any] = {"host": host, "date": datetime.date.today().isoformat(), "steps": {}}
    steps = record["steps"]
    for example in args.examples:
        for backend in ("unshare", "process"):  # process: the same evaluation unconfined, for the cost
            step(steps, f"evaluate_{example}_{backend}", lambda e=example, b=backend: evaluate_example(e, b))
            print(f"{example} {backend}: {json.dumps(steps[f'evaluate_{example}_{backend}'])[:400]}", flush=True)

    def probes() -> dict[str, Any]:
        out: dict[str, Any] = {}
        run_probes(out)
        return out

    step(steps, "probes", probes)
    record["failed_expectations"] = expectations(record)
    path = write_result(args.out / f"gpu-isolation-{slug(host['gpu'])}-{record['date']}.json", record)
    print(path)
    print("failed expectations:", record["failed_expectations"] or "none")
    return 1 if record["failed_expectations"] else 0


if __name__ == "__main__":
    sys.exit(main())
