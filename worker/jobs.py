"""The job function a worker runs: one evaluation, payload in, result document out.

It knows nothing of Redis or of the service's records: RQ (or the embedded queue) stores what it
returns, and the service turns that, or a failure, into the final result.
"""

from __future__ import annotations

from typing import Any

from worker import context
from worker.evaluate import detect_device, evaluate
from worker.models import EvalConfig, EvaluationResult, Problem, Submission, Verdict
from worker.static_checks import ProblemSourceError


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
    host = context.current()  # set up once at the worker's start, from its settings (worker/context.py)
    device = detect_device() if config.device == "auto" else config.device
    try:
        result = evaluate(problem, submission, config, job_id=evaluation_id, python=host.settings.harness_python,
                          reference_cache=host.reference_cache, isolation=host.isolation, pool=host.pool_for(device),
                          timing_lock=host.timing_lock(), reference_data=host.reference_data,
                          audit_hook=host.settings.audit_hook, allow_native_code=host.settings.allow_native_code)
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
