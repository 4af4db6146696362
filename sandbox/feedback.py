"""Short text a model can act on in its next turn, written from the result document."""

from __future__ import annotations

from .models import EvaluationResult, Verdict


def write_feedback(result: EvaluationResult) -> str:
    error = result.error or {}
    verdict = result.verdict
    if verdict == Verdict.correct:
        perf = result.performance
        if perf.meaningful and perf.speedup is not None:
            return (f"Correct on {result.correctness.trials} trials over {result.correctness.input_sets} input sets. "
                    f"Speedup {perf.speedup:.2f}x over the PyTorch reference "
                    f"({perf.candidate_ms.median:.4g} ms vs {perf.reference_ms.median:.4g} ms).")  # type: ignore[union-attr]
        return (f"Correct on {result.correctness.trials} trials over {result.correctness.input_sets} input sets. "
                "Speed was not measured (no GPU: Triton interpreter on the CPU).")
    if verdict == Verdict.cheating:
        lines = [f"Rejected: rule {v.rule} fired. {v.message}." for v in result.anti_cheat.violations]
        return " ".join(lines)
    if verdict == Verdict.incorrect:
        failure = result.correctness.first_failure or {}
        where = f" (trial {failure.get('trial')}, input shapes {failure.get('shapes')})" if failure else ""
        text = f"Incorrect output{where}: {failure.get('reason', 'outputs differ from the reference')}."
        if failure.get("worst_index") is not None and isinstance(failure.get("worst_expected"), (int, float)):
            text += (f" Largest error at index {failure['worst_index']}: expected {failure['worst_expected']:.6g}, "
                     f"got {failure['worst_actual']:.6g}.")
        if failure.get("trial") == "recheck":
            text += " It passed earlier trials but failed on fresh inputs after the timed runs."
        return text
    if verdict == Verdict.compile_error:
        detail = error.get("traceback") or error.get("message", "")
        return f"The kernel did not compile: {error.get('message', '')}\n{detail}".strip()
    if verdict == Verdict.runtime_error:
        return f"Runtime error: {error.get('message', '')}\n{error.get('traceback', '')}".strip()
    if verdict == Verdict.timeout:
        return f"Timed out: {error.get('message', '')}. Check for endless loops or far too much work per call."
    if verdict == Verdict.invalid_submission:
        return f"Invalid submission: {error.get('message', '')}"
    return f"Referee failed to evaluate this submission (not your fault): {error.get('message', '')}"
