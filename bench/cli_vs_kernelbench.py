"""`referee check`'s wall time for small problems against KernelBench's own evaluator, same pairs,
same GPU, same run (issue 19, item 7: a CI check should take at most half of KernelBench's time).

For each example pair (examples/*/reference.py with its honest candidate.py), alternately:
  - `referee check REF CAND --json` as a user runs it: a fresh CLI process, wall time from start to
    exit, and the stage times the result reports;
  - KernelBench's `eval_kernel_against_ref` in a fresh process (bench/kernelbench_eval.py, imported from
    the checkout given by --kernelbench: 5 correctness trials, 100 timed, backend triton).
Each measured `--repeats` times (the first of each tool also warms the disk cache and Triton's
kernel cache, as a CI machine's second check would find them). Records the medians, the ratio and
the card as JSON.

  python3 -m bench.cli_vs_kernelbench --kernelbench /path/to/KernelBench --out DIR     # on a GPU
  python3 -m bench.cli_vs_kernelbench --device cpu --out DIR                           # the CLI alone, CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.kernelbench_eval import kernelbench_command, last_json_line, run_measured
from bench.lib import ROOT, card_name, is_cpu, slug, write_result

EXAMPLES = ROOT / "examples"


def _referee(reference: Path, candidate: Path, device: str, trials: int, extra: list[str]) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "triton_referee.service.cli",
        "check",
        str(reference),
        str(candidate),
        "--json",
        "--device",
        device,
        "--trials",
        str(trials),
        *extra,
    ]
    measured = run_measured(command, timeout=300, cwd=ROOT)
    document = last_json_line(measured.stdout) or {}
    return {
        "wall_s": round(measured.wall_s, 3),
        "verdict": document.get("verdict"),
        "returncode": measured.returncode,
        "peak_rss_mib": round(measured.peak_rss_bytes / 2**20, 1),
        "engine_total_s": round(document["timings_ms"]["total"] / 1e3, 3) if document else None,
        "steps_ms": (document.get("timings_ms") or {}).get("steps"),
        "isolation": (document.get("environment") or {}).get("isolation"),
        "error": (document.get("error") or None) if document else measured.stderr[-1500:],
    }


def _kernelbench(checkout: Path, reference: Path, candidate: Path, trials: int, perf_trials: int) -> dict[str, Any]:
    measured = run_measured(kernelbench_command(checkout, reference, candidate, trials, perf_trials), timeout=300, cwd=ROOT)
    document = last_json_line(measured.stdout) or {}
    return {
        "wall_s": round(measured.wall_s, 3),
        "correct": document.get("correctness"),
        "returncode": measured.returncode,
        "peak_rss_mib": round(measured.peak_rss_bytes / 2**20, 1),
        "import_s": document.get("import_s"),
        "evaluate_s": document.get("evaluate_s"),
        "stand_ins": document.get("stand_ins"),
        "error": (document.get("error") or None) if document else measured.stderr[-1500:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernelbench", type=Path, help="a KernelBench checkout; without it only the CLI is measured")
    parser.add_argument("--problems", default="relu,softmax,matmul,linear_gelu", help="folders of examples/")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    parser.add_argument("--trials", type=int, default=5, help="correctness trials, both tools")
    parser.add_argument("--perf-trials", type=int, default=100, help="KernelBench's timed runs")
    parser.add_argument("--referee-args", default="", help="extra arguments for referee check (e.g. '--isolation process')")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    card = card_name()
    on_gpu = args.device == "cuda" or (args.device == "auto" and not is_cpu(card))
    compare = args.kernelbench is not None and on_gpu
    if args.kernelbench is not None and not on_gpu:
        print("KernelBench's evaluator needs CUDA: only the CLI is measured here", file=sys.stderr)
    problems: list[dict[str, Any]] = []
    for name in [p.strip() for p in args.problems.split(",") if p.strip()]:
        reference, candidate = EXAMPLES / name / "reference.py", EXAMPLES / name / "candidate.py"
        if not reference.is_file() or not candidate.is_file():
            parser.error(f"examples/{name} has no reference.py and candidate.py")
        runs: dict[str, list[dict[str, Any]]] = {"referee": [], "kernelbench": []}
        for repeat in range(args.repeats):
            runs["referee"].append(_referee(reference, candidate, args.device, args.trials, args.referee_args.split()))
            if compare:
                runs["kernelbench"].append(_kernelbench(args.kernelbench, reference, candidate, args.trials, args.perf_trials))
            line = f"{name:12} #{repeat}: referee {runs['referee'][-1]['wall_s']:6.2f} s ({runs['referee'][-1]['verdict']})"
            if compare:
                line += f"  kernelbench {runs['kernelbench'][-1]['wall_s']:6.2f} s (correct={runs['kernelbench'][-1]['correct']})"
            print(line, flush=True)
        summary: dict[str, Any] = {
            "problem": name,
            "runs": runs,
            "referee_median_s": statistics.median(r["wall_s"] for r in runs["referee"]),
        }
        if compare:
            summary["kernelbench_median_s"] = statistics.median(r["wall_s"] for r in runs["kernelbench"])
            summary["ratio"] = summary["referee_median_s"] / summary["kernelbench_median_s"]
        problems.append(summary)
    document = {
        "benchmark": "cli_vs_kernelbench",
        "card": card,
        "device": args.device,
        "trials": args.trials,
        "perf_trials": args.perf_trials,
        "referee_args": args.referee_args,
        "repeats": args.repeats,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "problems": problems,
    }
    if compare:
        document["ratio_median"] = statistics.median(p["ratio"] for p in problems)

    path = write_result(args.out / f"cli-vs-kernelbench-{slug(card)}-{datetime.now(timezone.utc):%Y-%m-%d}.json", document)
    for p in problems:
        print(
            f"{p['problem']:12} referee {p['referee_median_s']:6.2f} s"
            + (f"  kernelbench {p['kernelbench_median_s']:6.2f} s  ratio {p['ratio']:.2f}" if compare else "")
        )
    print(f"wrote {path}")
    return 0 if all(r["verdict"] == "correct" for p in problems for r in p["runs"]["referee"]) else 1


if __name__ == "__main__":
    sys.exit(main())
