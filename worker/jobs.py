"""The job function a worker runs: one evaluation, payload in, result document out.

It knows nothing of Redis or of the service's records: RQ (or the embedded queue) stores what it
returns, and the service turns that, or a failure, into the final result.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sandbox.evaluate import evaluate
from sandbox.isolation import cached_isolation
from sandbox.models import EvalConfig, EvaluationResult, Problem, Submission, Verdict
from sandbox.reference_cache import ReferenceCache
from sandbox.static_checks import ProblemSourceError

# Shared by every job of this host (RQ runs each job in a fresh work-horse process, so the
# directory is what carries reference timings from one evaluation of a problem to the next).
REFERENCE_CACHE = ReferenceCache(
    os.environ.get("REFEREE_REFERENCE_CACHE_DIR") or Path.home() / ".cache" / "triton-referee" / "reference"
)


def run_evaluation(payload: dict[str, Any]) -> dict[str, Any]:
    """Evaluate `payload` = {"id", "problem": Problem, "submission": Submission, "config": EvalConfig}.

    A reference that turns out unusable only when it runs (the service rejects what it can see
    statically with a 422) ends as `invalid_submission` with `error.kind == "problem_error"`: the
    candidate is not to blame, and the caller must fix the problem. Anything else that raises is
    left to the queue, which retries it and finally records `infrastructure_error`.
    """
    evaluation_id = payload["id"]
    problem = Problem.model_validate(payload["problem"])
    submission = Submission.model_validate(payload["submission"])
    config = EvalConfig.model_validate(payload["config"])
    try:
        result = evaluate(problem, submission, config, job_id=evaluation_id, reference_cache=REFERENCE_CACHE,
                          isolation=cached_isolation(os.environ.get("REFEREE_ISOLATION") or "auto"))
    except ProblemSourceError as exc:
        result = EvaluationResult(
            id=evaluation_id,
            verdict=Verdict.invalid_submission,
            reward_preset=config.reward.preset,
            error={"kind": "problem_error", "message": str(exc)},
            feedback=f"The reference problem could not be used, so the candidate was not judged: {exc}",
        )
    return result.model_dump(mode="json")


def failure_document(evaluation_id: str, message: str, reward_preset: str = "tritonrl") -> dict[str, Any]:
    """The result recorded when an evaluation could not be carried out (worker died, timed out, raised)."""
    return EvaluationResult(
        id=evaluation_id,
        status="failed",
        verdict=Verdict.infrastructure_error,
        reward_preset=reward_preset,  # type: ignore[arg-type]
        error={"kind": "infrastructure_error", "message": message},
        feedback="Referee could not complete this evaluation; this says nothing about the candidate. Submit it again.",
    ).model_dump(mode="json")
