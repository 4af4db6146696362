"""Where a forked harness child's first kernel launch spends its time (GPU host): in a parent that
imported torch and triton without touching CUDA, fork children that each time CUDA init, Triton's
driver utilities and the first launch of a small kernel (compile included), with an empty Triton
cache, and with a cache seeded from an earlier child (the C helper modules and the kernel).

    python3 -m bench.compile_breakdown --out DIR
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import triton
import triton.language as tl

from bench.lib import card_name, write_result


@triton.jit
def _scale(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < n
    tl.store(y_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) * 3.0, mask=mask)


def child(cache_dir: str, report: str) -> None:
    os.environ["TRITON_CACHE_DIR"] = cache_dir
    marks = {}
    started = time.monotonic()
    torch.cuda.init()
    x = torch.randn(1 << 20, device="cuda")
    torch.cuda.synchronize()
    marks["cuda_init_s"] = time.monotonic() - started
    started = time.monotonic()
    triton.runtime.driver.active.get_current_device()  # builds/loads the driver's C utilities
    marks["driver_utils_s"] = time.monotonic() - started
    started = time.monotonic()
    y = torch.empty_like(x)
    _scale[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    torch.cuda.synchronize()
    marks["first_launch_s"] = time.monotonic() - started
    started = time.monotonic()
    _scale[(triton.cdiv(x.numel(), 1024),)](x, y, x.numel(), BLOCK=1024)
    torch.cuda.synchronize()
    marks["second_launch_s"] = time.monotonic() - started
    marks["cache_files"] = sorted(p.name for p in Path(cache_dir).rglob("*") if p.is_file())[:40]
    Path(report).write_text(json.dumps(marks))


def run_child(cache_dir: str) -> dict:
    report = tempfile.mktemp(suffix=".json")
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            child(cache_dir, report)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    marks = json.loads(Path(report).read_text())
    marks["child_total_s"] = time.monotonic() - started
    return marks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    assert not torch.cuda.is_initialized()
    root = Path(tempfile.mkdtemp())
    rows = {"empty_cache": [], "seeded_cache": []}
    for i in range(3):
        rows["empty_cache"].append(run_child(str(root / f"empty{i}")))
    seed = root / "empty0"
    for i in range(3):
        target = root / f"seeded{i}"
        shutil.copytree(seed, target)
        rows["seeded_cache"].append(run_child(str(target)))
    print(json.dumps(rows, indent=1))
    write_result(args.out / "compile-breakdown.json", {"card": card_name(), "rows": rows})


if __name__ == "__main__":
    main()
