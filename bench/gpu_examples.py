"""Run every example through the engine on the GPU (and on the CPU interpreter, for agreement)
and write the numbers to a JSON file named for the card.

    python3 -m bench.gpu_examples --out bench/results   # on a GPU host

Each row: problem, candidate, device, verdict, wall time of the whole evaluation (two fresh
harness processes, compile included), candidate and reference medians, speedup and its CI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

from bench.lib import ROOT, card_name, slug, write_result
from triton_referee.service.cli import EXPECTED_VERDICTS
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--devices", default="cuda,cpu")
    args = parser.parse_args()
    rows = []
    for device in args.devices.split(","):
        for problem_dir in sorted(p for p in (ROOT / "examples").iterdir() if (p / "reference.py").is_file()):
            for candidate in sorted(problem_dir.glob("candidate*.py")):
                started = time.monotonic()
                result = evaluate(
                    Problem(source=(problem_dir / "reference.py").read_text(), name=problem_dir.name),
                    Submission(source=candidate.read_text()),
                    EvalConfig(device=device),
                )
                wall = time.monotonic() - started
                perf = result.performance
                row = {
                    "problem": problem_dir.name,
                    "candidate": candidate.name,
                    "device": device,
                    "verdict": result.verdict.value,
                    "expected": EXPECTED_VERDICTS[candidate.stem].value,
                    "wall_s": round(wall, 3),
                    "candidate_ms": perf.candidate_ms.median if perf.candidate_ms else None,
                    "reference_ms": perf.reference_ms.median if perf.reference_ms else None,
                    "candidate_n": perf.candidate_ms.n if perf.candidate_ms else None,
                    "speedup": perf.speedup,
                    "speedup_ci95": perf.speedup_ci95,
                    "host_event_ratio": perf.host_event_ratio,
                    "meaningful": perf.meaningful,
                    "triton_launches": result.anti_cheat.triton_launches,
                    "timings_ms": result.timings_ms.model_dump(),
                    "environment": result.environment.model_dump(),
                }
                if result.verdict.value != row["expected"]:
                    row["error"] = result.error
                    row["feedback"] = result.feedback
                    print(f"UNEXPECTED {problem_dir.name}/{candidate.name} on {device}: {result.feedback[:1500]}", flush=True)
                rows.append(row)
                speed = f"{perf.speedup:.3f}x" if perf.speedup is not None else "-"
                print(
                    f"{device:4} {problem_dir.name:12} {candidate.name:28} {result.verdict.value:14} "
                    f"expected {row['expected']:14} {wall:6.2f}s speedup {speed}",
                    flush=True,
                )
    by_pair: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        by_pair.setdefault((row["problem"], row["candidate"]), set()).add(row["verdict"])
    card = card_name()
    document = {
        "card": card,
        "date": dt.date.today().isoformat(),
        "python": sys.version.split()[0],
        "rows": rows,
        "all_expected": all(r["verdict"] == r["expected"] for r in rows),
        "cpu_gpu_agree": all(len(v) == 1 for v in by_pair.values()),
    }
    path = write_result(args.out / f"examples-{slug(card)}-{document['date']}.json", document)
    print(f"all expected: {document['all_expected']}; cpu/gpu agree: {document['cpu_gpu_agree']}; wrote {path}")
    return 0 if document["all_expected"] and document["cpu_gpu_agree"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
