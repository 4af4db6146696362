"""The job function a worker runs: one evaluation (`worker.models.EvaluationJob`) in, result document out.

It knows nothing of Redis or of the service's records: RQ (or the embedded queue) stores what it
returns, and the service turns that, or a failure, into the final result.
"""

from __future__ import annotations

from typing import Any

from triton_referee.worker import context
from triton_referee.worker.evaluate import detect_device, evaluate
from triton_referee.worker.models import EvaluationJob, Verdict
from triton_referee.worker.static_checks import ProblemSourceError
from triton_referee.worker.unjudged import unjudged_result


def run_evaluation(job: EvaluationJob | dict[str, Any]) -> dict[str, Any]:
    """Evaluate one `EvaluationJob` (as the queue carries it: its JSON form, validated here) and
    return the result document.

    A reference that turns out unusable only when it runs (the service rejects what it can see
    statically with a 422) ends as `invalid_submission` with `error.kind == "problem_error"`: the
    candidate is not to blame, and the caller must fix the problem. Anything else that raises (a
    job that does not validate among them) is left to the queue, which retries it and finally
    records `infrastructure_error`.
    """
    job = EvaluationJob.model_validate(job)
    config = job.config
    host = context.current()  # set up once at the worker's start, from its settings (worker/context.py)
    device = detect_device() if config.device == "auto" else config.device
    try:
        result = evaluate(
            job.problem,
            job.submission,
            config,
            job_id=job.id,
            python=host.settings.harness_python,
            reference_cache=host.reference_cache,
            isolation=host.isolation,
            pool=host.pool_for(device),
            timing_lock=host.timing_lock(),
            reference_data=host.reference_data,
            audit_hook=host.settings.audit_hook,
            allow_native_code=host.settings.allow_native_code,
        )
    except ProblemSourceError as exc:
        result = unjudged_result(
            job.id, Verdict.invalid_submission, str(exc), kind="problem_error", reward_preset=config.reward.preset
        )
    return result.model_dump(mode="json")
