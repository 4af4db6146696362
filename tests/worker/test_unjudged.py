"""Results nothing was judged for come from one constructor (`worker/unjudged.py`), whoever finds
out: the worker, the service, the HTTP client or the completion parser. Each path's document is
rebuilt here from its own verdict and error with that constructor and must come out identical;
its feedback is the engine's writer's."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from tests.tiny_problem import CANDIDATE, REFERENCE
from triton_referee.service.app import create_app
from triton_referee.service.client import ApiError, no_result_in_time, refused_result
from triton_referee.service.completions import no_code_result
from triton_referee.service.queue import Outcome
from triton_referee.service.settings import Settings
from triton_referee.worker.feedback import write_feedback
from triton_referee.worker.jobs import run_evaluation
from triton_referee.worker.models import EvaluationJob, EvaluationResult, Problem, Submission, Verdict
from triton_referee.worker.unjudged import unjudged_result

# Fails when the worker imports it: only running the reference shows it (the API's static checks pass it).
FAILING_REFERENCE = REFERENCE + "\nraise RuntimeError('the data set is not there')\n"


def _as_constructed(document: dict[str, Any]) -> dict[str, Any]:
    """What the one constructor gives for this document's id, verdict and error."""
    error = dict(document["error"])
    kind, message = error.pop("kind"), error.pop("message")
    rebuilt = unjudged_result(
        document["id"], Verdict(document["verdict"]), message, kind=kind, reward_preset=document["reward_preset"], **error
    )
    return rebuilt.model_dump(mode="json")


def _service_documents() -> dict[str, dict[str, Any]]:
    """A crashed job, a job lost from the queue and an expired record, finalised by the real service
    (embedded store; no workers started, the outcomes are what a queue reports)."""
    referee = create_app(Settings(redis_url=None)).state.referee
    old = time.time() - 3600
    records = {
        name: {"id": uuid.uuid4().hex, "owner": "o", "created_at": old, "name": None, "digest": name, "reward_preset": "fast_p"}
        for name in ("crashed", "lost")
    }
    referee.store.put_evaluations_and_claim("o", list(records.values()), list(records))
    documents = {
        "crashed": referee._finalize(
            records["crashed"], Outcome("failed", error="RuntimeError: the GPU fell off the bus (attempt 1)")
        ),
        "lost": referee._finalize(records["lost"], Outcome("missing")),
    }
    batch_id = uuid.uuid4().hex
    referee.store.put_batch(
        {"id": batch_id, "owner": "o", "name": None, "created_at": old, "items": ["gone"], "deduplicated": [False]}
    )
    documents["expired"] = referee.batch_view("o", batch_id)["items"][0]["result"]
    return documents


def test_every_path_builds_its_unjudged_result_with_the_one_constructor() -> None:
    documents = {
        **_service_documents(),
        "no result in time": no_result_in_time("e1", 30.0, "started").model_dump(mode="json"),
        "refused": refused_result(3, ApiError(422, "the reference is not a usable problem")).model_dump(mode="json"),
        "no code": no_code_result().model_dump(mode="json"),
    }
    for path, document in documents.items():
        assert document == _as_constructed(document), path
        result = EvaluationResult.model_validate(document)
        assert result.feedback == write_feedback(result), path  # written by the engine's writer, not reworded
        assert (result.reward, result.rewards.correctness, result.rewards.speedup) == (0.0, 0.0, 0.0), path
    # The same shape: every key of the result document, with the same error keys where nothing was refused.
    assert len({tuple(d) for d in documents.values()}) == 1
    assert {frozenset(d["error"]) for name, d in documents.items() if name != "refused"} == {frozenset({"kind", "message"})}


def test_failures_of_referee_say_so_and_invite_another_try() -> None:
    crashed = _service_documents()["crashed"]
    assert (crashed["verdict"], crashed["status"], crashed["reward_preset"]) == ("infrastructure_error", "failed", "fast_p")
    assert (
        crashed["error"]["message"] == "the evaluation could not be completed: RuntimeError: the GPU fell off the bus (attempt 1)"
    )
    assert crashed["feedback"] == (
        "Referee failed to evaluate this submission (not your fault): the evaluation could not be completed: "
        "RuntimeError: the GPU fell off the bus (attempt 1) This says nothing about the candidate: submit it again."
    )
    refused = refused_result(0, ApiError(413, "the candidate is too large"))
    assert refused.error == {"kind": "rejected", "message": "the candidate is too large", "status": 413}
    assert refused.feedback == (
        "Referee failed to evaluate this submission (not your fault): the server refused this item: HTTP 413: "
        "the candidate is too large"
    )  # no invitation: the same request would be refused again
    no_code = no_code_result()
    assert (no_code.verdict, no_code.status, no_code.error["kind"]) == (
        Verdict.invalid_submission,
        "completed",
        "invalid_submission",
    )
    assert no_code.feedback.startswith("Invalid submission: no Python code found in the completion")


def test_a_reference_that_fails_when_run_gets_the_constructed_problem_error() -> None:
    job = EvaluationJob(
        id="p1",
        problem=Problem(source=FAILING_REFERENCE),
        submission=Submission(source=CANDIDATE),
        config={"device": "cpu", "trials": 1, "timing_sets": 1, "max_timing_seconds": 0.05},
    )
    document = run_evaluation(job.model_dump(mode="json"))
    assert (document["verdict"], document["error"]["kind"]) == ("invalid_submission", "problem_error")
    assert "the data set is not there" in document["error"]["message"]
    assert document == _as_constructed(document)
    assert document["feedback"].startswith("The reference problem could not be used, so the candidate was not judged: ")


def test_the_job_function_refuses_a_job_that_does_not_validate_before_anything_runs() -> None:
    good = EvaluationJob(id="j", problem=Problem(source=REFERENCE), submission=Submission(source=CANDIDATE)).model_dump(
        mode="json"
    )
    for broken in (
        {**good, "problem": {"source": ""}},
        {**good, "surprise": 1},
        {k: v for k, v in good.items() if k != "submission"},
        {**good, "config": {**good["config"], "trials": 0}},
    ):
        with pytest.raises(ValidationError):
            run_evaluation(broken)
