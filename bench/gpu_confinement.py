"""Does CUDA keep working inside the harness's lockdown (landlock, seccomp) on this GPU host?

For each variant (no lockdown, landlock alone, seccomp alone, both) a fresh process applies it the
way a warm-pool spare does (sandbox/harness/lockdown.py, its own work directory the only writable
place) and then, step by step: creates a CUDA context, opens a CUDA IPC handle of a tensor this
process made (as the judge's data plane does), exports a handle of its own (as a candidate hands
out its outputs), compiles and runs a Triton kernel in an empty cache
(ptxas, and gcc for the launcher) and tries to open a socket (AF_INET must be refused; AF_UNIX is
allowed on a GPU on purpose). One JSON file says which step
worked under which layer, so a failure names the layer and the step. About a minute.

    python3 -m bench.gpu_confinement [--out bench/results]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.lib import ROOT, slug, write_result

KERNEL = """
import triton
import triton.language as tl


@triton.jit
def triple(x_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(x_ptr + offs, tl.load(x_ptr + offs, mask=mask) * 3.0, mask=mask)
"""
# The child starts isolated (`python -I`) and imports the harness as the box does: as the top-level
# package `harness`, from the folder its bootstrap puts on sys.path.
CHILD = (
    f"KERNEL = {KERNEL!r}\n"
    + r"""
import json, os, pickle, sys, time
sys.path.insert(0, sys.argv[1])
from harness import lockdown
spec = json.loads(sys.argv[2])
out = {}
support = lockdown.Support(spec.get("landlock_abi", 0), spec.get("seccomp", False))
from harness.__main__ import find_libcuda_before_lockdown
find_libcuda_before_lockdown()  # as a harness process does (Triton's ldconfig is refused after)
# A Triton kernel must live in a file: written before the lockdown, imported after it.
with open("referee_triple.py", "w") as source:
    source.write(KERNEL)
sys.path.insert(0, os.getcwd())
started = time.perf_counter()
lockdown.apply(lockdown.default_policy(os.getcwd(), cuda=True), support)
out["lockdown_ms"] = round((time.perf_counter() - started) * 1e3, 2)
shared = pickle.loads(sys.stdin.buffer.read())

def step(name, fn):
    try:
        out[name] = {"ok": fn()}
    except BaseException as exc:
        out[name] = {"error": f"{type(exc).__name__}: {exc}"[:400]}

import torch
step("cuda_context", lambda: str(torch.empty(1, device="cuda").device))

def ipc():
    rebuild, args = shared
    tensor = rebuild(*args)
    return float(tensor.sum())

step("cuda_ipc_open", ipc)

def export():
    block = torch.ones(1 << 20, device="cuda")
    return len(block.untyped_storage()._share_cuda_())  # what a candidate does to hand out its outputs

step("cuda_ipc_export", export)

def compile_and_run():
    from referee_triple import triple

    x = torch.ones(1000, device="cuda")
    triple[(4,)](x, 1000, BLOCK=256)
    torch.cuda.synchronize()
    return float(x.sum())

step("triton_compile_run", compile_and_run)

def socket_open(family):
    import socket
    socket.socket(family, socket.SOCK_STREAM).close()
    return "opened"

import socket
step("socket", lambda: socket_open(socket.AF_INET))  # refused under seccomp
step("socket_unix", lambda: socket_open(socket.AF_UNIX))  # allowed on a GPU: the CUDA driver opens one

print(json.dumps(out), flush=True)
"""
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args()
    import torch
    from torch.multiprocessing.reductions import reduce_tensor

    from triton_referee.sandbox.harness import lockdown

    support = lockdown.probe()
    shared_tensor = torch.arange(1000, device="cuda", dtype=torch.float32)
    shared = pickle.dumps(reduce_tensor(shared_tensor))
    variants = {
        "none": {},
        "landlock": {"landlock_abi": support.landlock_abi},
        "seccomp": {"seccomp": support.seccomp},
        "both": {"landlock_abi": support.landlock_abi, "seccomp": support.seccomp},
    }
    report: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "kernel": os.uname().release,
        "date": datetime.date.today().isoformat(),
        "support": support.layers(),
        "expected_ipc_sum": float(shared_tensor.sum()),
        "variants": {},
    }
    for name, spec in variants.items():
        workdir = tempfile.mkdtemp(prefix="referee-lockdown-")
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "LD_LIBRARY_PATH", "CUDA_HOME", "PYTHONPATH", "CUDA_VISIBLE_DEVICES")
        }
        env.update(
            HOME=workdir, TMPDIR=workdir, TRITON_CACHE_DIR=os.path.join(workdir, "triton-cache"), CUDA_DEVICE_MAX_CONNECTIONS="1"
        )
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-I", "-c", CHILD, str(ROOT / "sandbox"), json.dumps(spec)],
            input=shared,
            cwd=workdir,
            env=env,
            capture_output=True,
            timeout=240,
        )
        try:
            result = json.loads(run.stdout.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            result = {"exit": run.returncode, "stderr": run.stderr.decode(errors="replace")[-2000:]}
        result["seconds"] = round(time.monotonic() - started, 1)
        report["variants"][name] = result
        print(name, json.dumps(result), flush=True)
    path = write_result(Path(args.out) / f"gpu-confinement-{slug(torch.cuda.get_device_name())}-{report['date']}.json", report)
    both = report["variants"]["both"]
    working = all(
        "ok" in both.get(step, {}) for step in ("cuda_context", "cuda_ipc_open", "cuda_ipc_export", "triton_compile_run")
    )
    refused = "error" in both.get("socket", {})
    print(
        f"wrote {path}; under both layers CUDA, IPC and Triton {'work' if working else 'FAIL'}, "
        f"socket {'refused' if refused else 'NOT refused'}"
    )
    return 0 if working and refused else 1


if __name__ == "__main__":
    sys.exit(main())
