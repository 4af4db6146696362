"""CUDA context churn: how many CUDA contexts one host creates and tears down per second, and how
that changes with several processes churning at once (issue 9: every evaluation costs two).

Each driver process imports torch once (without CUDA), then until its time is up forks a child
that creates its context the way a warm-pool spare does (`torch.empty(1, device="cuda")`), says so
through a pipe and is killed (as the pool closes a harness process); the driver reaps it. For each
count N of `--parallel`, N drivers run at once, spread round robin over `--gpus`. Reported per N:
contexts per second over the host, the child's create time and the kill-to-reaped teardown
(p50/p95), and what the host's processes did meanwhile (bench/procstates.py: how many waited in
the kernel, state D, and where).

If contexts per second stop growing with N while the CPUs are idle, context set-up and teardown
are serialized host-wide (in the driver), and every GPU of the host shares that limit.

    python3 -m bench.context_churn --out DIR --parallel 1,2,4,8 --seconds 12 --gpus 0
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.lib import ROOT, describe_machine, slug, spread, write_result
from bench.procstates import ProcessStates


def make_context(mode: str) -> None:
    """torch: as a warm-pool spare does; driver: the bare driver API (primary context, one 2 MiB
    allocation), to tell the driver's share from torch's."""
    if mode == "torch":
        import torch

        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
        return
    cuda = ctypes.CDLL("libcuda.so.1")
    device, context, pointer = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint64()
    for name, call in (
        ("cuInit", lambda: cuda.cuInit(0)),
        ("cuDeviceGet", lambda: cuda.cuDeviceGet(ctypes.byref(device), 0)),
        ("cuDevicePrimaryCtxRetain", lambda: cuda.cuDevicePrimaryCtxRetain(ctypes.byref(context), device)),
        ("cuCtxSetCurrent", lambda: cuda.cuCtxSetCurrent(context)),
        ("cuMemAlloc", lambda: cuda.cuMemAlloc_v2(ctypes.byref(pointer), ctypes.c_size_t(2 << 20))),
        ("cuCtxSynchronize", lambda: cuda.cuCtxSynchronize()),
    ):
        if (code := call()) != 0:
            raise RuntimeError(f"{name} failed: CUresult {code}")


def drive(start_at: float, seconds: float, mode: str) -> None:
    """One driver: fork, let the child make its context, kill and reap it; one JSON line per cycle."""
    if mode == "torch":
        import torch  # noqa: F401  the parent never touches CUDA, so forking stays safe

    while time.monotonic() < start_at:
        time.sleep(0.01)
    end = start_at + seconds
    while time.monotonic() < end:
        read, write = os.pipe()
        forked = time.monotonic()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                began = time.monotonic()
                make_context(mode)
                os.write(write, f"{time.monotonic() - began:.6f}".encode())
                while True:
                    signal.pause()
            finally:
                os._exit(1)
        os.close(write)
        created = os.read(read, 64)
        os.close(read)
        ready = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        gone = time.monotonic()
        if not created:
            print(json.dumps({"error": "child died before its context was ready"}), flush=True)
            continue
        print(
            json.dumps(
                {"create_s": float(created), "fork_to_ready_s": ready - forked, "teardown_s": gone - ready, "ended": gone}
            ),
            flush=True,
        )


def recorded_environment() -> dict[str, str]:
    """The CUDA settings that change how contexts are made (an MPS pipe directory only as "set")."""
    return {
        k: ("set" if k.startswith("CUDA_MPS") else v)
        for k, v in os.environ.items()
        if k.startswith(("CUDA_DEVICE_", "CUDA_MPS_PIPE", "CUDA_MODULE_")) or k == "CUDA_VERSION"
    }


def measure(parallel: int, gpus: list[int], seconds: float, mode: str) -> dict[str, Any]:
    start_at = time.monotonic() + 12  # every driver has imported torch by then
    drivers = []
    for index in range(parallel):
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpus[index % len(gpus)])}
        drivers.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.context_churn", "--drive", str(start_at), str(seconds), mode],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    while time.monotonic() < start_at:
        time.sleep(0.05)
    with ProcessStates() as states:
        outputs = [driver.communicate(timeout=seconds + 120)[0] for driver in drivers]
    cycles = [json.loads(line) for out in outputs for line in out.splitlines() if line.startswith("{")]
    done = [c for c in cycles if "create_s" in c and c["ended"] <= start_at + seconds + 1]
    return {
        "parallel": parallel,
        "mode": mode,
        "environment": recorded_environment(),
        "gpus": sorted(set(gpus[i % len(gpus)] for i in range(parallel))),
        "seconds": seconds,
        "contexts": len(done),
        "contexts_per_s": round(len(done) / seconds, 2),
        "create_s": spread([c["create_s"] for c in done], 4),
        "fork_to_ready_s": spread([c["fork_to_ready_s"] for c in done], 4),
        "teardown_s": spread([c["teardown_s"] for c in done], 4),
        "errors": sum(1 for c in cycles if "error" in c),
        "processes": states.summary(),
    }


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--drive":
        drive(float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parallel", default="1,2,4,8")
    parser.add_argument("--gpus", default="0", help="GPUs the drivers are spread over, e.g. 0,1")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--mode", choices=("torch", "driver"), default="torch")
    parser.add_argument("--label", default="", help="appended to the results file's name (CUDA_* variables are recorded)")
    args = parser.parse_args()
    import torch

    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    gpus = [int(g) for g in args.gpus.split(",")]
    report: dict[str, Any] = {
        "card": card,
        "gpus": gpus,
        "date": datetime.date.today().isoformat(),
        "host": {**describe_machine(), "torch": torch.__version__},
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "runs": [],
    }
    path = args.out / f"context-churn-{slug(card)}{args.label}-{report['date']}.json"
    for parallel in (int(n) for n in args.parallel.split(",")):
        run = measure(parallel, gpus, args.seconds, args.mode)
        report["runs"].append(run)
        print(json.dumps(run), flush=True)
        write_result(path, report)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
