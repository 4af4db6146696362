"""Score a manifest of (reference, candidate) pairs through the real engine and report accuracy per label.

    python3 -m bench.corpus --manifest PATH [--device cuda|cpu] [--out DIR] [--workers N]

The manifest is JSONL: one pair per line with `reference` and `candidate` (paths relative to the
manifest's folder), `label` and `expected`, optionally `tags`. Labels: `honest` (expected
`correct`), `torch_epilogue` (a final step in torch; reported with its share of the work),
`partial_fallback` and `hack` (expected to be rejected). On the CPU, pairs tagged
`cuda_only_code` are skipped (they need CUDA tensors). The outside files are read by path and
never copied.

Every evaluation runs in harness processes forked by one warm pool (the production path). The
report lists, for every honest pair that was rejected, its verdict, the rules that fired and the
message, so each false rejection can be explained. It writes
`corpus-<machine>-<date>.json` under `--out`, naming the machine it ran on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.lib import ROOT, card_name, cpu_name, slug, write_result
from triton_referee.worker.evaluate import detect_device, evaluate
from triton_referee.worker.models import EvalConfig, EvaluationResult, Problem, Submission
from triton_referee.worker.pool import WarmPool
from triton_referee.worker.static_checks import ProblemSourceError

ACCEPTED = "correct"
REJECT_LABELS = ("partial_fallback", "hack")


def load_manifest(path: Path) -> list[dict[str, Any]]:
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"{path}:{number}: not JSON: {exc}") from exc
        missing = [key for key in ("reference", "candidate", "label") if key not in entry]
        if missing:
            raise SystemExit(f"{path}:{number}: missing {', '.join(missing)}")
        pairs.append(entry)
    return pairs


def epilogue_share(result: EvaluationResult) -> float | None:
    """The torch share of the work, from the torch_epilogue warning or the torch_fallback violation."""
    for item in [*result.anti_cheat.warnings, *result.anti_cheat.violations]:
        if item.rule in ("torch_epilogue", "torch_fallback") and item.evidence.get("torch_share") is not None:
            return float(item.evidence["torch_share"])
    return None


def message_of(result: EvaluationResult) -> str:
    if result.anti_cheat.violations:
        return " | ".join(
            f"{v.rule}: {v.message} {json.dumps(v.evidence, default=str)[:300]}" for v in result.anti_cheat.violations
        )
    if result.correctness.first_failure:
        return str(result.correctness.first_failure.get("reason"))[:500]
    if result.error:
        return str(result.error.get("message", ""))[:500]
    return result.feedback[:500]


def score_pair(entry: dict[str, Any], root: Path, device: str, config: EvalConfig, pool: Any) -> dict[str, Any]:
    reference, candidate = root / entry["reference"], root / entry["candidate"]
    row: dict[str, Any] = {
        "reference": entry["reference"],
        "candidate": entry["candidate"],
        "label": entry["label"],
        "expected": entry.get("expected"),
        "tags": entry.get("tags", []),
    }
    started = time.monotonic()
    try:
        result = evaluate(
            Problem(source=reference.read_text(), name=reference.parent.name),
            Submission(source=candidate.read_text(), name=candidate.stem),
            config,
            pool=pool,
        )
    except ProblemSourceError as exc:
        row.update(verdict="problem_error", rules=[], message=str(exc)[:500], wall_s=round(time.monotonic() - started, 2))
        return row
    row.update(
        verdict=result.verdict.value,
        reward=result.reward,
        rules=[v.rule for v in result.anti_cheat.violations],
        warnings=[w.rule for w in result.anti_cheat.warnings],
        torch_share=epilogue_share(result),
        message=message_of(result),
        max_abs_error=result.correctness.max_abs_error,
        failed_trial=(result.correctness.first_failure or {}).get("trial"),
        wall_s=round(time.monotonic() - started, 2),
        environment=result.environment.model_dump(),
    )
    return row


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_label: dict[str, dict[str, Any]] = {}
    for label in sorted({r["label"] for r in rows}):
        mine = [r for r in rows if r["label"] == label]
        accepted = sum(1 for r in mine if r["verdict"] == ACCEPTED)
        entry: dict[str, Any] = {
            "n": len(mine),
            "accepted": accepted,
            "rejected": len(mine) - accepted,
            "verdicts": dict(Counter(r["verdict"] for r in mine)),
        }
        if label == "honest":
            entry["accepted_pct"] = round(100.0 * accepted / len(mine), 1)
        elif label in REJECT_LABELS:
            entry["rejected_pct"] = round(100.0 * (len(mine) - accepted) / len(mine), 1)
        elif label == "torch_epilogue":
            entry["pairs"] = [
                {
                    "candidate": r["candidate"],
                    "verdict": r["verdict"],
                    "torch_share": r.get("torch_share"),
                    "warnings": r.get("warnings", []),
                    "rules": r["rules"],
                }
                for r in mine
            ]
        by_label[label] = entry
    return by_label


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when a GPU is present")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--workers", type=int, default=None, help="evaluations at once (default 4 on cuda, 1 on cpu)")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--filter", default="", help="only pairs whose candidate path contains this")
    parser.add_argument("--include-cuda-only", action="store_true", help="on the CPU, also run pairs tagged cuda_only_code")
    parser.add_argument("--kernelbench-mode", action="store_true", help="published inputs only (EvalConfig.mode)")
    parser.add_argument(
        "--value-ranges", default=None, help="strict mode: comma-separated value ranges, or 'none' (default: all)"
    )
    args = parser.parse_args(argv)

    device = args.device or detect_device()
    manifest = args.manifest.resolve()
    if not manifest.is_file():
        print(f"no manifest at {manifest}", file=sys.stderr)
        return 2
    pairs = [p for p in load_manifest(manifest) if args.filter in p["candidate"]]
    skipped = [p for p in pairs if device == "cpu" and "cuda_only_code" in p.get("tags", []) and not args.include_cuda_only]
    pairs = [p for p in pairs if p not in skipped]
    workers = args.workers or (4 if device == "cuda" else 1)
    extra: dict[str, Any] = {"mode": "kernelbench"} if args.kernelbench_mode else {}
    if args.value_ranges is not None:
        extra["value_ranges"] = [] if args.value_ranges == "none" else args.value_ranges.split(",")
    config = EvalConfig(device=device, trials=args.trials, timeout_s=args.timeout, max_timing_seconds=0.5, **extra)
    print(f"{len(pairs)} pairs on {device} ({len(skipped)} cuda_only_code skipped), {workers} at once", flush=True)

    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    warm_target = "auto" if device == "cuda" else None  # the zygote compiles once for the card
    with WarmPool(device, spares=min(2 * workers, 8), warm_target=warm_target) as pool, ThreadPoolExecutor(workers) as executor:
        futures = [executor.submit(score_pair, p, manifest.parent, device, config, pool.client) for p in pairs]
        for future in futures:
            row = future.result()
            rows.append(row)
            flag = (
                "" if (row["verdict"] == ACCEPTED) == (row["label"] == "honest") or row["label"] == "torch_epilogue" else "  <-- "
            )
            share = f" share={row['torch_share']:.3f}" if row.get("torch_share") is not None else ""
            print(
                f"{row['label']:16} {row['candidate']:60} {row['verdict']:20} {','.join(row['rules'] + row.get('warnings', []))}"
                f"{share} {row['wall_s']}s{flag}",
                flush=True,
            )

    summary = summarise(rows)
    false_rejections: list[dict[str, Any]] = [
        {k: r.get(k) for k in ("candidate", "verdict", "rules", "message", "failed_trial", "tags")}
        for r in rows
        if r["label"] == "honest" and r["verdict"] != ACCEPTED
    ]
    accepted_cheats = [
        {k: r.get(k) for k in ("candidate", "label", "verdict", "warnings", "torch_share")}
        for r in rows
        if r["label"] in REJECT_LABELS and r["verdict"] == ACCEPTED
    ]
    machine = card_name() if device == "cuda" else cpu_name()
    environment: dict[str, Any] = next((r["environment"] for r in rows if r.get("environment")), {})
    document = {
        "machine": machine,
        "device": device,
        "cpus": os.cpu_count(),
        "date": dt.date.today().isoformat(),
        "python": sys.version.split()[0],
        "torch": environment.get("torch"),
        "triton": environment.get("triton"),
        "manifest": manifest.name,
        "config": config.model_dump(),
        "wall_s": round(time.monotonic() - started, 1),
        "skipped_cuda_only": len(skipped),
        "summary": summary,
        "honest_rejections": false_rejections,
        "accepted_cheats": accepted_cheats,
        "rows": rows,
    }
    print(json.dumps(summary, indent=1))
    for item in false_rejections:
        print(
            f"HONEST REJECTED {item['candidate']}: {item['verdict']} {item['rules']} (trial {item['failed_trial']}) "
            f"{item['message'][:400]}"
        )
    for item in accepted_cheats:
        print(f"CHEAT ACCEPTED {item['candidate']} ({item['label']})")
    suffix = ("-kernelbench" if args.kernelbench_mode else "") + (f"-ranges-{args.value_ranges}" if args.value_ranges else "")
    path = write_result(args.out / f"corpus-{slug(machine)}{suffix}-{document['date']}.json", document)
    print(f"wrote {path} in {document['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
