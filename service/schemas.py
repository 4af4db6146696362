"""Request and response bodies of the HTTP API (pydantic v2). The result document itself is the
engine's `worker.models.EvaluationResult`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from triton_referee.worker.models import EvalConfig


def _utf8(value: str | None) -> str | None:
    """JSON may carry lone surrogates (`"\\ud800"`) that no file or hash can encode: refuse them here (422)."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"the text is not valid Unicode (a lone surrogate at index {exc.start}); send UTF-8 source"
            ) from None
    return value


class EvaluationRequest(EvalConfig):
    """A candidate and its problem (inline `reference`, or a registered `problem_id`), plus the
    engine's options (trials, timeout_s, seed, atol, rtol, input_sets, reward, ...)."""

    reference: str | None = Field(default=None, description="KernelBench-format reference source")
    problem_id: str | None = Field(default=None, description="id of a problem registered with POST /v1/problems")
    candidate: str = Field(description="candidate source defining ModelNew with @triton.jit kernels")
    name: str | None = Field(default=None, max_length=200, description="a label kept with the evaluation")

    _encodable = field_validator("reference", "problem_id", "candidate", "name")(_utf8)

    @model_validator(mode="after")
    def _one_problem(self) -> EvaluationRequest:
        if (self.reference is None) == (self.problem_id is None):
            raise ValueError("give exactly one of `reference` (source) or `problem_id`")
        return self

    def config(self) -> EvalConfig:
        return EvalConfig.model_validate(self.model_dump(include=set(EvalConfig.model_fields)))


Status = Literal["queued", "started", "completed"]


class EvaluationStatus(BaseModel):
    """An evaluation that has no result yet (a completed one is answered with its result document)."""

    id: str
    status: Status
    deduplicated: bool = Field(default=False, description="an identical earlier submission's job was returned")
    created_at: float
    name: str | None = None


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[EvaluationRequest] = Field(min_length=1)
    name: str | None = Field(default=None, max_length=200)

    _encodable = field_validator("name")(_utf8)


class BatchItem(BaseModel):
    index: int
    id: str
    status: Status
    deduplicated: bool = False
    result: dict[str, Any] | None = Field(default=None, description="the result document, once completed")


class Batch(BaseModel):
    id: str
    name: str | None = None
    status: Literal["running", "completed"]
    total: int
    completed: int
    verdicts: dict[str, int] = Field(description="completed items per verdict")
    created_at: float
    items: list[BatchItem] | None = Field(default=None, description="left out with ?results=false")


class ProblemRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, description="KernelBench-format reference source")
    name: str = Field(default="problem", max_length=200)

    _encodable = field_validator("source", "name")(_utf8)


class Problem(BaseModel):
    id: str = Field(description="sha256 of the source")
    name: str
    input_sets: list[dict[str, int]] = Field(description="the input-set overrides the engine will use ({} is the original)")
    created_at: float
    source: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class WorkerState(BaseModel):
    name: str
    state: str
    last_heartbeat: float | None = None
    current_job: str | None = None


class Readiness(BaseModel):
    ready: bool
    queue: Literal["redis", "embedded"]
    queue_reachable: bool
    queue_depth: int | None = None
    workers: list[WorkerState] = []
    reason: str | None = None


class ErrorBody(BaseModel):
    detail: str
