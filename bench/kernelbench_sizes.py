"""Issue 15's benchmark: four KernelBench level-1 problems at their published sizes, each judged by
Referee and by KernelBench's own evaluator on the same GPU in the same run.

The problems are bench/problems/*.py (written in KernelBench's format: ReLU 4096x393216, a sum over
dimension 1 of 128x4096x4095, a square matmul N=4096, softmax 4096x393216, all fp32), each with an
honest Triton candidate beside it (`*_candidate.py`). Every evaluation is a fresh process tree:
Referee's is `referee check --json` (the engine path a check takes: both harness processes, the
isolation `auto` picks), KernelBench's is `eval_kernel_against_ref` from the checkout given by
--kernelbench (5 correctness trials, 100 timed, backend triton; see bench/kernelbench_eval.py).
Recorded per evaluation: wall time, verdict, speedup, and the peak resident memory of the whole
process tree (summed over its processes, sampled every 50 ms), as JSON naming the card.

  python3 -m bench.kernelbench_sizes --kernelbench /path/to/KernelBench --out DIR      # on a GPU
  python3 -m bench.kernelbench_sizes --scale 0.004 --device cpu --out DIR              # small, CPU: Referee only

--scale multiplies every size constant of the problems (at least 1), so the same files run small
on the CPU (Triton's interpreter); KernelBench's evaluator needs CUDA and is skipped without it.
--budget-s keeps the run inside one call: each evaluation is killed when the budget ends (at most
--timeout-s), and one that would start with less than 20 s left is recorded as skipped.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.kernelbench_eval import kernelbench_command, last_json_line, run_measured
from bench.lib import ROOT, card_name, is_cpu, slug, write_result

PROBLEMS_DIR = ROOT / "bench" / "problems"
# Name -> (file stem, the module constants that are sizes). Fastest first, so a tight budget still
# gets whole problems.
PROBLEMS = {
    "matmul": ("matmul_4096", ("N",)),
    "relu": ("relu_4096x393216", ("batch_size", "dim")),
    "sum": ("sum_dim1_128x4096x4095", ("batch_size", "dim1", "dim2")),
    "softmax": ("softmax_4096x393216", ("batch_size", "dim")),
}


def scaled_source(source: str, constants: tuple[str, ...], scale: float) -> tuple[str, dict[str, int]]:
    """SOURCE with each size constant multiplied by SCALE (at least 1); and the sizes used."""
    sizes: dict[str, int] = {}

    def replace(match: re.Match[str]) -> str:
        value = max(1, round(int(match.group(2)) * scale))
        sizes[match.group(1)] = value
        return f"{match.group(1)} = {value}"

    for name in constants:
        source = re.sub(rf"^({re.escape(name)}) = (\d+)$", replace, source, count=1, flags=re.MULTILINE)
        if name not in sizes:
            raise SystemExit(f"{name} is not a size constant of this problem")
    return source, sizes


def referee_verdict(measured: Any) -> dict[str, Any]:
    document = last_json_line(measured.stdout)
    if document is None:
        return {"verdict": None, "error": (measured.stderr or measured.stdout)[-2000:]}
    return {
        "verdict": document["verdict"],
        "speedup": document["performance"].get("speedup"),
        "error": (document.get("error") or {}).get("message") if document.get("error") else None,
        "timings_ms": document.get("timings_ms"),
        "environment": document.get("environment"),
    }


def kernelbench_verdict(measured: Any) -> dict[str, Any]:
    document = last_json_line(measured.stdout)
    if document is None:
        return {"verdict": None, "error": (measured.stderr or measured.stdout)[-2000:]}
    verdict = (
        "compile_error"
        if document.get("compiled") is False
        else "correct"
        if document.get("correctness")
        else "incorrect"
        if document.get("correctness") is False
        else None
    )
    return {
        "verdict": verdict,
        "speedup": document.get("speedup"),
        "stand_ins": document.get("stand_ins"),
        "import_s": document.get("import_s"),
        "evaluate_s": document.get("evaluate_s"),
        "error": document.get("error") or (document.get("metadata") or {}).get("runtime_error"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernelbench", type=Path, help="a KernelBench checkout; without it only Referee runs")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated, of {', '.join(PROBLEMS)}")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size constant (1 = published sizes)")
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--trials", type=int, default=5, help="correctness trials, both tools")
    parser.add_argument("--perf-trials", type=int, default=100, help="KernelBench's timed runs")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="per evaluation")
    parser.add_argument("--budget-s", type=float, default=560.0, help="start no evaluation after this many seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    names = [n.strip() for n in args.problems.split(",") if n.strip()]
    unknown = [n for n in names if n not in PROBLEMS]
    if unknown:
        parser.error(f"unknown problems {unknown}; known: {', '.join(PROBLEMS)}")
    card = card_name()
    on_gpu = args.device == "cuda" or (args.device == "auto" and not is_cpu(card))
    if args.kernelbench is not None and not on_gpu:
        print("KernelBench's evaluator needs CUDA: it is skipped here", file=sys.stderr)
    started = time.monotonic()
    evaluations: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kb-sizes-") as scratch:
        for name in names:
            stem, constants = PROBLEMS[name]
            source, sizes = scaled_source((PROBLEMS_DIR / f"{stem}.py").read_text(), constants, args.scale)
            reference = Path(scratch) / f"{stem}.py"
            reference.write_text(source)
            candidate = PROBLEMS_DIR / f"{stem}_candidate.py"
            tools = ["referee"] + (["kernelbench"] if args.kernelbench is not None and on_gpu else [])
            for tool in tools:
                record: dict[str, Any] = {"problem": name, "sizes": sizes, "tool": tool}
                # Every evaluation ends by the budget: it gets what is left of it, at most --timeout-s.
                limit = min(args.timeout_s, args.budget_s - (time.monotonic() - started))
                if limit < 20:
                    evaluations.append({**record, "skipped": f"less than 20 s left of the {args.budget_s:g} s budget"})
                    continue
                record["limit_s"] = round(limit, 1)
                if tool == "referee":
                    command = [
                        sys.executable,
                        "-m",
                        "triton_referee.service.cli",
                        "check",
                        str(reference),
                        str(candidate),
                        "--json",
                        "--device",
                        args.device,
                        "--trials",
                        str(args.trials),
                        "--timeout",
                        str(max(1.0, limit - 10)),
                    ]
                else:
                    command = kernelbench_command(args.kernelbench, reference, candidate, args.trials, args.perf_trials)
                measured = run_measured(command, timeout=limit, cwd=ROOT)
                outcome = referee_verdict(measured) if tool == "referee" else kernelbench_verdict(measured)
                record.update(
                    wall_s=round(measured.wall_s, 3),
                    peak_rss_mib=round(measured.peak_rss_bytes / 2**20, 1),
                    returncode=measured.returncode,
                    **outcome,
                )
                evaluations.append(record)
                print(
                    f"{name:8} {tool:11} {record.get('verdict')!s:20} {measured.wall_s:8.1f} s  "
                    f"peak RSS {record['peak_rss_mib']:8.0f} MiB  speedup {record.get('speedup')}",
                    flush=True,
                )
    document = {
        "benchmark": "kernelbench_sizes",
        "card": card,
        "scale": args.scale,
        "device": args.device,
        "trials": args.trials,
        "perf_trials": args.perf_trials,
        "kernelbench": "given" if args.kernelbench is not None else None,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "evaluations": evaluations,
    }

    suffix = "" if args.scale == 1.0 else f"-scale{args.scale:g}"
    path = write_result(args.out / f"kernelbench-sizes-{slug(card)}{suffix}-{datetime.now(timezone.utc):%Y-%m-%d}.json", document)
    print(f"wrote {path}")
    ran = [e for e in evaluations if "skipped" not in e]
    return 0 if ran and all(e.get("verdict") == "correct" for e in ran) else 1


if __name__ == "__main__":
    sys.exit(main())
