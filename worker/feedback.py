"""Short text a model can act on in its next turn, written from the result document.

`write_feedback(result, source)` is what the engine stores in `result.feedback`: with the source,
compile and runtime errors quote the offending lines of the submission itself. Results nothing was
judged for get theirs from it too (`worker/unjudged.py`). Callers never rewrite it.
"""

from __future__ import annotations

import re
from typing import Any

from .models import EvaluationResult, Verdict

_FRAME = re.compile(r'File "candidate\.py", line (\d+)')
_NAME = re.compile(r"name '(\w+)' is not defined")
_MAX_TRACE_LINES = 12


def offending_lines(result: EvaluationResult, source: str | None = None) -> list[int]:
    """Line numbers of the submission that the error points at (1-based, in order, unique)."""
    error = result.error or {}
    lines: list[int] = []
    if isinstance(error.get("line"), int):
        lines.append(error["line"])
    lines += [int(n) for n in _FRAME.findall(str(error.get("traceback", "")))]
    if source is not None:
        # An undefined name inside a @triton.jit kernel is reported at the launch; point at its uses.
        for name in _NAME.findall(str(error.get("message", ""))):
            pattern = re.compile(rf"\b{re.escape(name)}\b")
            lines += [
                i for i, text in enumerate(source.splitlines(), 1) if pattern.search(text) and not text.lstrip().startswith("#")
            ]
    return list(dict.fromkeys(lines))


def _quote(source: str, lines: list[int], context: int = 1) -> str:
    text = source.splitlines()
    shown: list[str] = []
    for line in lines[:3]:
        for n in range(max(1, line - context), min(len(text), line + context) + 1):
            marker = ">" if n == line else " "
            shown.append(f"{marker} {n:4d} | {text[n - 1]}")
        shown.append("")
    return "\n".join(shown).rstrip()


def _trace_tail(error: dict[str, Any]) -> str:
    trace = str(error.get("traceback") or "").rstrip().splitlines()
    return "\n".join(trace[-_MAX_TRACE_LINES:])


def _rule_text(v: Any) -> str:
    text = f"Rejected: rule {v.rule} fired. {v.message}."
    evidence = v.evidence or {}
    details = []
    if evidence.get("ops"):
        details.append("torch ops seen in forward: " + ", ".join(f"{op} x{n}" for op, n in evidence["ops"].items()))
    if evidence.get("foreign_kernels"):
        details.append("kernels not defined in your file: " + ", ".join(map(str, evidence["foreign_kernels"])))
    phase = evidence.get("phase") or evidence.get("trial")
    if phase:
        details.append(f"during {phase}")
    if details:
        text += " (" + "; ".join(details) + ")"
    return text


def write_feedback(result: EvaluationResult, source: str | None = None) -> str:
    error = result.error or {}
    verdict = result.verdict
    if verdict == Verdict.correct:
        perf = result.performance
        # A speedup is only ever set with both timings (evaluate._time).
        if perf.meaningful and perf.speedup is not None and perf.candidate_ms is not None and perf.reference_ms is not None:
            text = (
                f"Correct on {result.correctness.trials} trials over {result.correctness.input_sets} input sets. "
                f"Speedup {perf.speedup:.2f}x over the PyTorch reference "
                f"({perf.candidate_ms.median:.4g} ms vs {perf.reference_ms.median:.4g} ms)."
            )
            if perf.speedup < 1.0:
                text += " It is slower than PyTorch: fuse work into fewer kernels, use larger blocks, or cut memory traffic."
            return text + "".join(f" Warning {w.rule}: {w.message}." for w in result.anti_cheat.warnings)
        return (
            f"Correct on {result.correctness.trials} trials over {result.correctness.input_sets} input sets. "
            "Speed was not measured (no GPU: Triton interpreter on the CPU)."
            + "".join(f" Warning {w.rule}: {w.message}." for w in result.anti_cheat.warnings)
        )
    if verdict == Verdict.cheating:
        lines = [_rule_text(v) for v in result.anti_cheat.violations]
        return " ".join(lines) + " Do the computation inside your own @triton.jit kernels and return the tensors they write."
    if verdict == Verdict.incorrect:
        c = result.correctness
        failure = c.first_failure or {}
        where = f" (trial {failure.get('trial')}, input shapes {failure.get('shapes')})" if failure else ""
        text = f"Incorrect output{where}: {failure.get('reason', 'outputs differ from the reference')}."
        if failure.get("worst_index") is not None and isinstance(failure.get("worst_expected"), (int, float)):
            text += (
                f" Largest error at index {failure['worst_index']} (among the failed elements): expected "
                f"{failure['worst_expected']:.6g}, got {failure['worst_actual']:.6g}."
            )
            others = [e["index"] for e in (failure.get("failed_elements") or [])[1:]]
            if others:
                text += " Other failed elements: " + ", ".join(map(str, others)) + "."
            shapes = failure.get("shapes") or []
            index = failure["worst_index"]
            if shapes and isinstance(index, list) and len(shapes[0]) == len(index) and index:
                last, size = index[-1], shapes[0][-1]
                if size and last >= size - (size % 64 or 64):
                    text += " The error sits in the last block of the row: check the mask and the tail handling."
        if c.trials:
            text += f" Passed {c.passed} of {c.trials} trials"
            if c.max_abs_error is not None:
                text += f"; max abs error {c.max_abs_error:.3g}"
            if c.max_rel_error:
                text += f", max rel error {c.max_rel_error:.3g}"
            if c.atol is not None:
                text += f" (tolerance atol={c.atol:g}, rtol={c.rtol:g})"
            text += "."
        if failure.get("trial") == "recheck":
            text += " It passed earlier trials but failed on fresh inputs after the timed runs."
        return text
    if verdict in (Verdict.compile_error, Verdict.runtime_error):
        head = "The kernel did not compile" if verdict == Verdict.compile_error else "Runtime error"
        text = f"{head}: {error.get('message', '')}"
        trace = _trace_tail(error)
        if trace and trace not in text:
            text += "\n" + trace
        if source is not None:
            line_numbers = offending_lines(result, source)
            if line_numbers:
                text += "\nIn your code:\n" + _quote(source, line_numbers)
        return text.strip()
    if verdict == Verdict.timeout:
        return f"Timed out: {error.get('message', '')}. Check for endless loops or far too much work per call."
    message = error.get("message", "")
    if verdict == Verdict.invalid_submission:
        if error.get("kind") == "problem_error":  # the reference failed when it ran
            return f"The reference problem could not be used, so the candidate was not judged: {message}"
        return f"Invalid submission: {message}"
    if error.get("kind") == "rejected":  # the HTTP client's: the server refused the request
        return f"Referee failed to evaluate this submission (not your fault): the server refused this item: HTTP {error.get('status')}: {message}"
    text = f"Referee failed to evaluate this submission (not your fault): {message}"
    if result.status == "failed":  # the evaluation never finished (the queue or a worker failed), unlike the engine's own
        text += " This says nothing about the candidate: submit it again."
    return text
