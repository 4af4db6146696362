"""A harness-like process for tests/gpu/test_native_recorder.py: it starts the native recorder on
the descriptor the test (the judge) passed - before torch is imported, as a harness process must
before any submitted code - then runs a Triton kernel, a torch matmul and a device-to-host copy
between markers, timing each with CUDA events, and prints the events' times as JSON on stdout (the
judge compares its own reading of the records with them). Run as:

    python -I gpu_worker.py SANDBOX_DIR CACHE_DIR FD SCENARIO

Scenarios: honest; late_attach (the warm pool's order: recorder prepared, started without a
descriptor, CUDA context, attached later); profiler (torch's profiler, which also drives CUPTI, runs in the
middle, as a candidate might).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

BASE = 0x40000000


def main() -> int:
    sandbox_dir, cache_dir, fd_text, scenario = sys.argv[1:5]
    sys.path.insert(0, sandbox_dir)
    from harness import native

    fd = int(fd_text)
    facts: dict[str, object] = {"scenario": scenario}
    started = time.monotonic()
    if scenario == "late_attach":  # the warm pool's order: prepared, started without a descriptor, context, attached
        import torch  # the zygote imported it before preparing: CUPTI may be mapped already

        prepared = native.prepare(Path(cache_dir))
        recorder = native.start_ahead() if prepared is not None else None
        if recorder is not None:
            torch.empty(1, device="cuda").fill_(1.0)  # the spare's context, and activity before assignment
            torch.cuda.synchronize()
            recorder.flush()
            facts["spare_s"] = time.monotonic() - started
            started = time.monotonic()
            assert recorder.attach(fd)
    else:
        recorder = native.load_recorder(fd, Path(cache_dir))
    facts["start_s"] = time.monotonic() - started
    if recorder is None:
        print(json.dumps({"error": native.last_failure}))
        return 3
    facts["cupti"] = recorder.location.library

    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def referee_scale(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offsets < n
        tl.store(y_ptr + offsets, tl.load(x_ptr + offsets, mask=mask) * 3.0, mask=mask)

    n = 1 << 28  # 1 GiB each way: about half a millisecond on an H200
    x = torch.randn(n, device="cuda")
    y = torch.empty_like(x)
    a = torch.randn(4096, 4096, device="cuda")

    def scale() -> None:
        referee_scale[(triton.cdiv(n, 4096),)](x, y, n, BLOCK=4096)

    scale()  # compiled before the markers
    torch.mm(a, a)
    torch.cuda.synchronize()
    stream = torch.cuda.current_stream().cuda_stream
    events = [torch.cuda.Event(enable_timing=True) for _ in range(6)]
    torch.cuda._sleep(50_000_000)  # keeps the GPU busy while the host enqueues the rest: no idle gaps
    recorder.mark(BASE, stream)
    events[0].record()
    scale()
    events[1].record()
    recorder.mark(BASE + 1, stream)
    events[2].record()
    torch.mm(a, a)
    events[3].record()
    recorder.mark(BASE + 2, stream)
    events[4].record()
    host_copy = y[:1024].cpu()  # 4096 bytes device to host
    events[5].record()
    recorder.mark(BASE + 3, stream)
    torch.cuda.synchronize()
    facts["scale_ms"] = events[0].elapsed_time(events[1])
    facts["mm_ms"] = events[2].elapsed_time(events[3])
    facts["copy_ms"] = events[4].elapsed_time(events[5])
    facts["copied"] = int(host_copy.numel())

    if scenario == "profiler":
        from torch.profiler import ProfilerActivity, profile

        recorder.mark(BASE + 4, stream)
        with profile(activities=[ProfilerActivity.CUDA]):
            scale()
            torch.cuda.synchronize()
        recorder.mark(BASE + 5, stream)
        scale()
        recorder.mark(BASE + 6, stream)
        torch.cuda.synchronize()
    if scenario.startswith("rounds"):  # the engine's timed rounds: markers, a flush after each round
        if scenario == "rounds_profiler_first":  # a kineto session before the rounds (the op witness at set-up)
            with torch.autograd.profiler.profile(use_kineto=True, record_shapes=False):
                torch.empty(0)
        recorder.flush()
        for r in range(3):
            for i in range(4):
                recorder.mark(BASE + 100 * (r + 1) + 2 * i, stream)
                scale()
                recorder.mark(BASE + 100 * (r + 1) + 2 * i + 1, stream)
            torch.cuda.synchronize()
            recorder.flush()
            time.sleep(0.05)
    facts["flush"] = recorder.flush()
    with open("/proc/self/maps", encoding="utf-8") as maps:
        facts["cupti_mapped"] = sorted({line.split()[-1] for line in maps if "libcupti" in line})
    facts["kernel_name"] = "referee_scale"
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
