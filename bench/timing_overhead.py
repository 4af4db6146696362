"""Where does Referee's candidate time differ from do_bench? Times one honest example kernel in
one process with the harness's watchers added one at a time.

    python3 -m bench.timing_overhead --out DIR      # on a GPU host
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import torch
import triton.testing

from bench.lib import ROOT, write_result
from triton_referee.sandbox.harness.audit import AuditGuard
from triton_referee.sandbox.harness.dispatch import OpRecorder
from triton_referee.sandbox.harness.launches import LaunchRecorder
from triton_referee.sandbox.harness.runtime import load_module
from triton_referee.sandbox.harness.timing import CudaTimer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--problem", default="relu")
    args = parser.parse_args()
    device = torch.device("cuda")
    reference = load_module(ROOT / "examples" / args.problem / "reference.py", "ref")
    candidate_path = ROOT / "examples" / args.problem / "candidate.py"
    recorder = LaunchRecorder(candidate_file=str(candidate_path))
    candidate = load_module(candidate_path, "cand")
    with torch.device(device):
        model = candidate.ModelNew(*reference.get_init_inputs())
        input_sets = [reference.get_inputs() for _ in range(4)]
    rows: dict[str, float] = {}

    def timer_median(label: str, mode: Any = None) -> None:
        with torch.no_grad():
            if mode is None:
                stats = CudaTimer(device).run(lambda x: model(*x), input_sets)
            else:
                with mode:
                    stats = CudaTimer(device).run(lambda x: model(*x), input_sets)
        rows[label] = stats["median"]
        rows[label + "_n"] = stats["n"]

    flush = torch.empty(64 << 20, dtype=torch.int32, device=device)
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(20)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(20)]
    for s, e in zip(starts, ends, strict=True):
        s.record()
        flush.zero_()
        e.record()
    torch.cuda.synchronize()
    rows["flush_ms"] = statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))
    with torch.no_grad():
        rows["do_bench"] = triton.testing.do_bench(lambda: model(*input_sets[0]), return_mode="median")
    timer_median("cudatimer_plain")
    recorder.install()
    timer_median("cudatimer_launch_hook")
    ops = OpRecorder()
    timer_median("cudatimer_launch_hook_dispatch", ops)
    guard = AuditGuard(str(candidate_path), str(candidate_path.parent))
    guard.install()
    guard.active = True
    timer_median("cudatimer_all_watchers", ops)
    with torch.no_grad(), ops:
        rows["do_bench_all_watchers"] = triton.testing.do_bench(lambda: model(*input_sets[0]), return_mode="median")
    guard.active = False  # the guard refuses writes outside the "job" directory, this file included
    print(json.dumps(rows, indent=1))
    write_result(args.out / f"timing-overhead-{args.problem}.json", {"card": torch.cuda.get_device_name(), **rows})


if __name__ == "__main__":
    main()
