"""What CI and batch scoring write: JUnit XML, GitHub workflow annotations, the batch summary
(fast_p, geometric-mean speedup, verdict and rule counts) and a self-contained HTML report."""

from __future__ import annotations

import ast
import html
import json
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from triton_referee.worker.feedback import offending_lines
from triton_referee.worker.models import EvaluationResult, Verdict

FAST_P_THRESHOLDS = (0.0, 1.0, 1.5, 2.0)
BAR_COLOUR = "#2f6fde"  # the histogram's bars (the report test looks for this colour)


# --- JUnit -----------------------------------------------------------------------------------------


@dataclass
class Case:
    """One evaluated candidate: where its files are and its result."""

    name: str
    problem: str
    result: EvaluationResult
    candidate_path: str | None = None
    source: str | None = None


def junit_xml(cases: Sequence[Case], suite: str = "referee") -> str:
    """<testsuites><testsuite><testcase> per candidate; <failure> for a candidate's failure,
    <error> for infrastructure_error (Referee's fault)."""
    failures = sum(c.result.verdict not in (Verdict.correct, Verdict.infrastructure_error) for c in cases)
    errors = sum(c.result.verdict == Verdict.infrastructure_error for c in cases)
    seconds = sum(c.result.timings_ms.total for c in cases) / 1e3
    root = ET.Element(
        "testsuites", name=suite, tests=str(len(cases)), failures=str(failures), errors=str(errors), time=f"{seconds:.3f}"
    )
    node = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(len(cases)),
        failures=str(failures),
        errors=str(errors),
        skipped="0",
        time=f"{seconds:.3f}",
    )
    for case in cases:
        r = case.result
        testcase = ET.SubElement(node, "testcase", classname=case.problem, name=case.name, time=f"{r.timings_ms.total / 1e3:.3f}")
        if case.candidate_path:
            testcase.set("file", case.candidate_path)
        properties = ET.SubElement(testcase, "properties")
        for key, value in (
            ("verdict", r.verdict.value),
            ("reward", f"{r.reward:g}"),
            ("speedup", "" if r.performance.speedup is None else f"{r.performance.speedup:.4g}"),
        ):
            ET.SubElement(properties, "property", name=key, value=value)
        if r.verdict != Verdict.correct:
            tag = "error" if r.verdict == Verdict.infrastructure_error else "failure"
            rules = ", ".join(v.rule for v in r.anti_cheat.violations)
            message = f"{r.verdict.value}" + (f" ({rules})" if rules else "")
            element = ET.SubElement(testcase, tag, message=message, type=r.verdict.value)
            element.text = r.feedback
        ET.SubElement(testcase, "system-out").text = r.model_dump_json()
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --- GitHub workflow annotations -------------------------------------------------------------------


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotation_lines(result: EvaluationResult, source: str | None) -> list[int]:
    """Lines of the candidate to annotate: the error's lines; for a fired rule, the lines using the
    torch ops it saw; for wrong output, the kernels' @triton.jit lines."""
    lines = offending_lines(result, source)
    if source is None or lines:
        return lines
    text = source.splitlines()
    if result.verdict == Verdict.cheating:
        ops = {op for v in result.anti_cheat.violations for op in (v.evidence or {}).get("ops", {})}
        for op in sorted(ops):
            pattern = re.compile(rf"[.\s(]{re.escape(op)}\s*\(")
            lines += [i for i, line in enumerate(text, 1) if pattern.search(line) and not line.lstrip().startswith("#")]
    if result.verdict == Verdict.cheating and not lines:
        lines = _forward_returns(source)
    if result.verdict in (Verdict.incorrect, Verdict.cheating) and not lines:
        lines = [i for i, line in enumerate(text, 1) if re.match(r"\s*@\s*triton\s*\.\s*jit", line)]
    return sorted(set(lines))


def _forward_returns(source: str) -> list[int]:
    """The `return` lines of ModelNew.forward (parsed, never run)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "ModelNew":
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == "forward":
                    return [n.lineno for n in ast.walk(item) if isinstance(n, ast.Return)]
    return []


def github_annotations(result: EvaluationResult, path: str, source: str | None = None) -> list[str]:
    """`::error file=…,line=…,title=…::message` lines (workflow commands) for one result."""
    if result.verdict == Verdict.correct:
        annotations = [
            f"::notice file={_escape_property(path)},title={_escape_property('referee: correct')}::"
            f"{_escape_data(result.feedback)}"
        ]
        return annotations + [
            f"::warning file={_escape_property(path)},title={_escape_property('referee: ' + w.rule)}::{_escape_data(w.message)}"
            for w in result.anti_cheat.warnings
        ]
    level = "error"
    rules = [v.rule for v in result.anti_cheat.violations]
    title = f"referee: {result.verdict.value}" + (f" ({', '.join(rules)})" if rules else "")
    lines = annotation_lines(result, source) or [1]
    out = []
    for line in lines[:10]:
        out.append(
            f"::{level} file={_escape_property(path)},line={line},title={_escape_property(title)}::{_escape_data(result.feedback)}"
        )
    return out


# --- batch summary -------------------------------------------------------------------------------


def pass_at_k(samples: int, correct: int, k: int) -> float:
    """The unbiased estimate of pass@k from `samples` draws of which `correct` passed (Chen et al.,
    2021): 1 - C(n - c, k) / C(n, k), the chance that k samples drawn without replacement hold a
    correct one."""
    if samples - correct < k:
        return 1.0
    return 1.0 - math.comb(samples - correct, k) / math.comb(samples, k)


def _per_problem(results: Sequence[EvaluationResult], problems: Sequence[str]) -> dict[str, Any]:
    """Over problems rather than items, for several samples per problem (KernelBench's run folders):
    pass@k for k = 1, 5, 10, ... up to the fewest samples any problem has, and fast_p of the best
    sample (a problem counts when one of its samples is correct with speedup > p)."""
    grouped: dict[str, list[EvaluationResult]] = {}
    for problem, result in zip(problems, results, strict=True):
        grouped.setdefault(problem, []).append(result)
    if not grouped:
        return {"problems": 0, "samples_min": 0, "samples_max": 0, "pass_at_k": {}, "fast_p": {}}
    fewest = min(len(r) for r in grouped.values())
    ks = sorted({k for k in (1, 5, 10, 20, 50, 100) if k <= fewest} | {fewest})
    correct = {p: sum(r.verdict == Verdict.correct for r in rs) for p, rs in grouped.items()}
    measured = any(r.verdict == Verdict.correct and r.performance.speedup for r in results)
    fast_p: dict[str, float | None] = {}
    for p in FAST_P_THRESHOLDS:
        hits = sum(
            any(r.verdict == Verdict.correct and (p == 0.0 or (r.performance.speedup or 0.0) > p) for r in rs)
            for rs in grouped.values()
        )
        fast_p[f"{p:g}"] = hits / len(grouped) if p == 0.0 or measured else None
    return {
        "problems": len(grouped),
        "samples_min": fewest,
        "samples_max": max(len(r) for r in grouped.values()),
        "pass_at_k": {str(k): sum(pass_at_k(len(grouped[p]), correct[p], k) for p in grouped) / len(grouped) for k in ks},
        "fast_p": fast_p,
    }


def summarize(results: Sequence[EvaluationResult], problems: Sequence[str] | None = None) -> dict[str, Any]:
    """fast_p at p = 0, 1, 1.5, 2 (correct and speedup > p, over all items; at p = 0 it is the
    share correct), the geometric-mean speedup of the correct ones with a speedup, verdict counts,
    violations per rule; `per_problem` (pass@k, best-sample fast_p) groups items by `problems`
    (default: each item its own problem)."""
    n = len(results)
    speedups = [r.performance.speedup for r in results if r.verdict == Verdict.correct and r.performance.speedup]
    fast_p: dict[str, float | None] = {}
    for p in FAST_P_THRESHOLDS:
        if p == 0.0:
            hits = sum(r.verdict == Verdict.correct for r in results)
        else:
            hits = sum(r.verdict == Verdict.correct and (r.performance.speedup or 0.0) > p for r in results)
        measured = p == 0.0 or bool(speedups)
        fast_p[f"{p:g}"] = (hits / n if n else 0.0) if measured else None
    geomean = math.exp(sum(math.log(s) for s in speedups) / len(speedups)) if speedups else None
    rules = Counter(v.rule for r in results for v in r.anti_cheat.violations)
    verdicts = Counter(r.verdict.value for r in results)
    return {
        "total": n,
        "verdicts": {v.value: verdicts.get(v.value, 0) for v in Verdict},
        "fast_p": fast_p,
        "fast_p_note": None if speedups or not n else "no speedups measured (CPU interpreter): fast_p above 0 is not defined",
        "geomean_speedup": geomean,
        "speedups_measured": len(speedups),
        "violations_by_rule": dict(sorted(rules.items(), key=lambda kv: (-kv[1], kv[0]))),
        "mean_reward": sum(r.reward for r in results) / n if n else 0.0,
        "per_problem": _per_problem(results, list(problems) if problems is not None else [str(i) for i in range(n)]),
    }


# --- HTML report ---------------------------------------------------------------------------------


def _bins(values: Sequence[float], count: int = 12) -> list[tuple[float, float, int]]:
    """Histogram bins on a log2 scale (speedups are ratios)."""
    if not values:
        return []
    logs = [math.log2(max(v, 1e-6)) for v in values]
    low, high = math.floor(min(logs) * 2) / 2, math.ceil(max(logs) * 2) / 2
    if high - low < 1:
        low, high = low - 0.5, high + 0.5
    width = (high - low) / count
    counts = [0] * count
    for x in logs:
        counts[min(count - 1, int((x - low) / width))] += 1
    return [(2 ** (low + i * width), 2 ** (low + (i + 1) * width), c) for i, c in enumerate(counts)]


def histogram_svg(speedups: Sequence[float], width: int = 720, height: int = 260) -> str:
    bins = _bins(speedups)
    if not bins:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" width="720" height="60" role="img" aria-label="no speedups">'
            '<text x="10" y="35" font-size="14" fill="#555">No speedups measured (CPU interpreter or no correct candidate).</text></svg>'
        )
    pad_l, pad_b, pad_t = 40, 40, 20
    plot_w, plot_h = width - pad_l - 10, height - pad_b - pad_t
    top = max(c for _, _, c in bins)
    bar_w = plot_w / len(bins)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="speedup-histogram" width="{width}" height="{height}" role="img" '
        f'aria-label="histogram of speedups">',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 10}" y2="{pad_t + plot_h}" stroke="#333"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + plot_h}" stroke="#333"/>',
        f'<text x="{pad_l - 6}" y="{pad_t + 4}" font-size="11" text-anchor="end">{top}</text>',
        f'<text x="{pad_l - 6}" y="{pad_t + plot_h}" font-size="11" text-anchor="end">0</text>',
    ]
    for i, (lo, hi, c) in enumerate(bins):
        x = pad_l + i * bar_w
        h = plot_h * c / top
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{pad_t + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
            f'fill="{BAR_COLOUR}"><title>{lo:.2f}x-{hi:.2f}x: {c}</title></rect>'
        )
        if i % 2 == 0:
            parts.append(f'<text x="{x:.1f}" y="{pad_t + plot_h + 16}" font-size="10">{lo:.2f}x</text>')
    if bins[0][0] < 1.0 < bins[-1][1]:
        lo0 = math.log2(bins[0][0])
        x1 = pad_l + plot_w * (0 - lo0) / (math.log2(bins[-1][1]) - lo0)
        parts.append(
            f'<line x1="{x1:.1f}" y1="{pad_t}" x2="{x1:.1f}" y2="{pad_t + plot_h}" stroke="#c33" stroke-dasharray="4 3"/>'
        )
        parts.append(f'<text x="{x1 + 4:.1f}" y="{pad_t + 10}" font-size="11" fill="#c33">1x</text>')
    parts.append(
        f'<text x="{pad_l + plot_w / 2}" y="{height - 6}" font-size="12" text-anchor="middle">speedup over the reference (log scale)</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:12px 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left;vertical-align:top}th{background:#f2f2f2}
.correct{color:#17803d;font-weight:600}.cheating{color:#a0168a;font-weight:600}.bad{color:#b42318}
.fb{max-width:520px;white-space:pre-wrap;font-family:monospace;font-size:12px}.kv td:first-child{font-weight:600}"""


def html_report(cases: Sequence[Case], summary: dict[str, Any], title: str = "Triton Referee batch report") -> str:
    """One self-contained HTML file: summary, speedup histogram (inline SVG), per-problem table."""
    e = html.escape
    speedups = [
        c.result.performance.speedup for c in cases if c.result.verdict == Verdict.correct and c.result.performance.speedup
    ]
    fast_p = " · ".join(f"fast_{p}: {'n/a' if v is None else f'{v:.3f}'}" for p, v in summary["fast_p"].items())
    geomean = summary["geomean_speedup"]
    rows_summary = [
        ("candidates", summary["total"]),
        ("fast_p", fast_p),
        ("geometric-mean speedup", "n/a" if geomean is None else f"{geomean:.3f}x ({summary['speedups_measured']} measured)"),
        ("verdicts", ", ".join(f"{k}: {v}" for k, v in summary["verdicts"].items() if v)),
        ("violations by rule", ", ".join(f"{k}: {v}" for k, v in summary["violations_by_rule"].items()) or "none"),
        ("mean reward", f"{summary['mean_reward']:.3f}"),
    ]
    per_problem = summary.get("per_problem")
    if per_problem and per_problem["problems"]:
        rows_summary.insert(
            2,
            (
                "per problem",
                f"{per_problem['problems']} problems, {per_problem['samples_min']}-{per_problem['samples_max']} samples each; "
                + " · ".join(f"pass@{k}: {v:.3f}" for k, v in per_problem["pass_at_k"].items())
                + "; best sample: "
                + " · ".join(f"fast_{p}: {'n/a' if v is None else f'{v:.3f}'}" for p, v in per_problem["fast_p"].items()),
            ),
        )
    table = [
        "<table id='results'><tr><th>problem</th><th>candidate</th><th>verdict</th><th>reward</th><th>speedup</th>"
        "<th>trials</th><th>rules</th><th>seconds</th><th>feedback</th></tr>"
    ]
    for c in cases:
        r = c.result
        css = "correct" if r.verdict == Verdict.correct else "cheating" if r.verdict == Verdict.cheating else "bad"
        speed = "n/a" if r.performance.speedup is None else f"{r.performance.speedup:.3f}x"
        rules = ", ".join(v.rule for v in r.anti_cheat.violations)
        table.append(
            f"<tr><td>{e(c.problem)}</td><td>{e(c.name)}</td><td class='{css}'>{e(r.verdict.value)}</td><td>{r.reward:g}</td>"
            f"<td>{speed}</td><td>{r.correctness.passed}/{r.correctness.trials}</td><td>{e(rules)}</td>"
            f"<td>{r.timings_ms.total / 1e3:.1f}</td><td class='fb'>{e(r.feedback[:600])}</td></tr>"
        )
    table.append("</table>")
    summary_rows = "".join(f"<tr><td>{e(str(k))}</td><td>{e(str(v))}</td></tr>" for k, v in rows_summary)
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{e(title)}</h1><table class='kv'>{summary_rows}</table><h2>Speedups</h2>{histogram_svg(speedups)}"
        f"<h2>Per problem</h2>{''.join(table)}"
        f"<script type='application/json' id='summary'>{e(json.dumps(summary))}</script></body></html>\n"
    )
