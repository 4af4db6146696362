"""The one constructor of a result nothing was judged for: reward 0, the reason, and the feedback
the engine's writer (`worker/feedback.py`) gives it.

Every such result is built here, whoever finds out: the worker (a reference that failed when it
ran), the service (a job that failed, was lost or expired), the HTTP client (no result in time, an
item the server refused) and the completion parser (no code to send).
"""

from __future__ import annotations

from typing import Any

from .feedback import write_feedback
from .models import EvaluationResult, RewardPreset, Verdict


def unjudged_result(
    evaluation_id: str,
    verdict: Verdict,
    message: str,
    *,
    kind: str | None = None,
    reward_preset: RewardPreset = "tritonrl",
    **details: Any,
) -> EvaluationResult:
    """A result whose candidate was not judged, with `error = {"kind", "message", **details}`.

    `infrastructure_error`: Referee could not finish (status "failed"; never the candidate's fault).
    `invalid_submission`: there was nothing to judge (no code; `kind="problem_error"`: the reference
    failed when it ran). `kind` defaults to the verdict's name."""
    result = EvaluationResult(
        id=evaluation_id,
        status="failed" if verdict == Verdict.infrastructure_error else "completed",
        verdict=verdict,
        reward_preset=reward_preset,
        error={"kind": kind or verdict.value, "message": message, **details},
    )
    result.feedback = write_feedback(result)
    return result
