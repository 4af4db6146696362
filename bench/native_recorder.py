"""What the native recorder costs on a GPU: building it (cold) and loading it (cached), starting
CUPTI, host time per Triton launch and GPU time per call (CUDA events) with and without it, host
time per marker, and the bytes of records written. Each measurement runs in a fresh process, as a harness process would.

    python3 -m bench.native_recorder --out DIR     (bench/gpu_session.sh native; about 40 s)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.lib import ROOT, write_result
from triton_referee.worker import native_evidence

LAUNCHES = 2000
TIMED = 300
MARKS = 2000
SIZES = {"small": 1 << 20, "large": 1 << 26}
# Each measurement's process starts isolated (`python -I`), as a harness process does, so its
# bootstrap puts the repository on sys.path itself (as sandbox/launch.py's does for the harness).
CHILD = "import sys; sys.path.insert(0, sys.argv[1]); from bench.native_recorder import child; child(sys.argv[2], int(sys.argv[3]), sys.argv[4])"


def child(mode: str, fd: int, cache: str) -> None:
    from triton_referee.sandbox.harness import native

    facts: dict[str, object] = {"mode": mode}
    recorder = None
    if mode == "on":
        started = time.perf_counter()
        prepared = native.prepare(Path(cache))
        facts["prepare_s"] = time.perf_counter() - started
        started = time.perf_counter()
        recorder = prepared.start(fd) if prepared is not None else None
        facts["start_s"] = time.perf_counter() - started
        if recorder is None:
            print(json.dumps({"error": native.last_failure}))
            return
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def bench_scale(x_ptr, y_ptr, n, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]  # Triton reads a kernel's annotations
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(y_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) * 3.0, mask=mask)

    for name, n in SIZES.items():
        x = torch.randn(n, device="cuda")
        y = torch.empty_like(x)
        grid = (triton.cdiv(n, 1024),)
        bench_scale[grid](x, y, n, BLOCK=1024)
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(LAUNCHES):
            bench_scale[grid](x, y, n, BLOCK=1024)
        facts[f"{name}_host_us_per_launch"] = (time.perf_counter() - started) / LAUNCHES * 1e6
        torch.cuda.synchronize()
        samples = []
        for _ in range(TIMED):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            bench_scale[grid](x, y, n, BLOCK=1024)
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) * 1e3)
        facts[f"{name}_event_us_median"] = statistics.median(samples)
    if recorder is not None:
        torch.cuda.synchronize()
        started = time.perf_counter()
        for label in range(MARKS):
            recorder.mark(0x40000000 + label, torch.cuda.current_stream().cuda_stream)
        facts["host_us_per_mark"] = (time.perf_counter() - started) / MARKS * 1e6
        started = time.perf_counter()
        recorder.flush()
        facts["flush_s"] = time.perf_counter() - started
    facts["launches"] = (LAUNCHES + TIMED + 1) * len(SIZES)
    print(json.dumps(facts))


def run(mode: str, cache: str) -> dict[str, object]:
    pipe = native_evidence.RecordPipe()
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", CHILD, str(ROOT), mode, str(pipe.child_fd()), cache],
            pass_fds=[pipe.child_fd()],
            capture_output=True,
            text=True,
            timeout=240,
        )
        pipe.close_child_end()
        facts = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {"error": done.stderr[-2000:]}
        stream = pipe.wait_for_flush(1, timeout=10) if mode == "on" else None
    finally:
        pipe.close()
    if stream is not None:
        facts["record_bytes"] = len(pipe.data())
        facts["records"] = len(stream)
        facts["kernel_records"] = sum(1 for r in stream if isinstance(r, native_evidence.Kernel))
        facts["stream_problems"] = stream.problems[:5]
    return facts


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        from triton_referee.sandbox.harness import native

        location = native.locate_cupti()
        started = time.perf_counter()
        built = native.build(location, Path(cache)) if not isinstance(location, str) else location
        result: dict[str, object] = {"cupti": str(location), "build": str(built), "cold_build_s": time.perf_counter() - started}
        result["off"] = run("off", cache)
        result["on"] = run("on", cache)
    for name in SIZES:
        on, off = result["on"], result["off"]
        if (
            isinstance(on, dict)
            and isinstance(off, dict)
            and f"{name}_event_us_median" in on
            and f"{name}_event_us_median" in off
        ):
            result[f"{name}_event_ratio"] = on[f"{name}_event_us_median"] / off[f"{name}_event_us_median"]
            result[f"{name}_host_ratio"] = on[f"{name}_host_us_per_launch"] / off[f"{name}_host_us_per_launch"]
    print(json.dumps(result, indent=1))
    write_result(Path(args.out, "native-recorder.json"), result)
    return 0 if isinstance(result["on"], dict) and "error" not in result["on"] else 1


if __name__ == "__main__":
    sys.exit(main())
