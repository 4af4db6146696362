"""The job the service queues is `worker.models.EvaluationJob`, and exactly it: RQ carries its JSON
form to `worker.jobs.run_evaluation`, which validates it back (real Redis; no worker runs here)."""

from __future__ import annotations

import uuid

from rq.job import Job
from rq.serializers import JSONSerializer
from service_support import TINY_CANDIDATE, TINY_REFERENCE, redis_settings

from triton_referee.service.app import create_app
from triton_referee.service.queue import JOB_FUNCTION
from triton_referee.service.schemas import EvaluationRequest
from triton_referee.worker.models import EvalConfig, EvaluationJob, Problem, RewardConfig, Submission


def test_the_queued_job_is_the_evaluation_job_the_worker_validates(redis_url: str) -> None:
    referee = create_app(redis_settings(redis_url, f"job-model-{uuid.uuid4().hex[:8]}")).state.referee  # no lifespan, no sweep
    request = EvaluationRequest(
        reference=TINY_REFERENCE,
        candidate=TINY_CANDIDATE,
        name="double",
        trials=2,
        seed=7,
        reward={"preset": "fast_p"},
        timeout_s=30,
    )
    evaluation_id = referee.submit("owner", request).id
    job = Job.fetch(evaluation_id, connection=referee.queue.connection, serializer=JSONSerializer)
    assert job.func_name == JOB_FUNCTION and job.kwargs == {} and len(job.args) == 1
    assert job.timeout == int(30 + referee.settings.job_timeout_margin_s) + 1
    queued = EvaluationJob.model_validate(job.args[0])
    assert queued == EvaluationJob(
        id=evaluation_id,
        problem=Problem(source=TINY_REFERENCE, name="problem"),
        submission=Submission(source=TINY_CANDIDATE, name="double"),
        config=EvalConfig(trials=2, seed=7, timeout_s=30, reward=RewardConfig(preset="fast_p")),
    )
    assert job.args[0] == queued.model_dump(mode="json")  # nothing beside the model travels
    referee.queue.forget([evaluation_id])
