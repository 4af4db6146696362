"""OpenRLHF: the remote reward model endpoint, `POST /v1/openrlhf/reward` (server side).

    openrlhf.cli.train_ppo_ray ... --remote_rm_url http://referee:8000/v1/openrlhf/reward --label_key reference

OpenRLHF posts `{"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [...]}` and
reads `rewards` (for the advantages), `scores` (0-1, for dynamic filtering) and `extra_logs` (every
value becomes a tensor, so numbers only). The response is the query with its prompt cut off; the
problem is the item's label (the reference source, a registered problem id, or a JSON spec), or,
without labels, the fenced block of the prompt that defines `class Model` (KernelBench prompts quote it).

OpenRLHF sends no headers: in Redis mode the API key goes in the URL, `...reward?api_key=KEY`;
`KeyFromQuery` moves it into the X-API-Key header before anything reads or logs the request.
(`openrlhf_reward.py` beside this file is the client-side alternative: a `reward_func` file that
reads REFEREE_API_KEY from the environment.)

Failures are never a reward: a label the server refuses is 422 and an evaluation the queue could
not finish is 503 (OpenRLHF retries it), each with the reason. A completion without code scores 0:
that is the policy's answer, and `extra_logs.no_code` counts it.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import require_owner
from ..client import API_KEY_HEADER
from ..completions import NO_CODE_MESSAGE, extract_candidate, reference_in_prompt
from ..exceptions import RefereeError, Unavailable, Unprocessable
from ..routes import ERRORS, _wait_for
from ..schemas import EvaluationRequest
from ._common import problem_spec

router = APIRouter()
PATH = "/v1/openrlhf/reward"
LOG_KEYS = ("correctness", "speedup", "speedup_reward", "compiled", "correct", "cheating", "no_code")


class KeyFromQuery:
    """`?api_key=` on the OpenRLHF endpoint becomes the X-API-Key header and leaves the query string,
    in place, so neither the app nor uvicorn's access log sees it in the URL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and b"api_key=" in scope.get("query_string", b""):
            pairs = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            keys = [value for name, value in pairs if name == "api_key"]
            scope["query_string"] = urlencode([(n, v) for n, v in pairs if n != "api_key"]).encode("latin-1")
            header = API_KEY_HEADER.lower().encode()
            if keys[-1] and not any(name == header for name, _ in scope["headers"]):
                scope["headers"] = [*scope["headers"], (header, keys[-1].encode("latin-1"))]
        await self.app(scope, receive, send)


class OpenRLHFRewardRequest(BaseModel):
    query: list[str] = Field(description="prompt + response, as OpenRLHF sends them")
    prompts: list[str] | None = Field(default=None, description="the prompts, cut off the front of each query")
    labels: list[Any] | None = Field(default=None, description="per item: reference source, problem id or JSON spec")
    options: dict[str, Any] = Field(default_factory=dict, description="engine options for every item (trials, reward, ...)")


class OpenRLHFRewardResponse(BaseModel):
    rewards: list[float] = Field(description="the Referee reward of each item (its preset's scale)")
    scores: list[float] = Field(description="0-1 per item: 1 when correct (OpenRLHF's dynamic filtering reads this)")
    extra_logs: dict[str, list[float]] = Field(description="numbers only, per item: " + ", ".join(LOG_KEYS))
    verdicts: list[str] = Field(description="per item (OpenRLHF ignores this key)")
    feedback: list[str] = Field(description="per item, for a person or a multi-turn loop (OpenRLHF ignores this key)")


def response_of(query: str, prompt: str | None) -> str:
    if prompt and query.startswith(prompt):
        return query[len(prompt) :]
    return query


def log_values(view: dict[str, Any] | None) -> dict[str, float]:
    """The numeric logs of one result document (None: no code in the completion)."""
    if view is None:
        return {**dict.fromkeys(LOG_KEYS, 0.0), "no_code": 1.0}
    rewards = view.get("rewards", {})
    return {
        "correctness": float(rewards.get("correctness", 0.0)),
        "speedup": float(view.get("performance", {}).get("speedup") or 0.0),
        "speedup_reward": float(rewards.get("speedup", 0.0)),
        "compiled": float(bool(view.get("compiled"))),
        "correct": float(view["verdict"] == "correct"),
        "cheating": float(view["verdict"] == "cheating"),
        "no_code": 0.0,
    }


@router.post(
    PATH,
    response_model=OpenRLHFRewardResponse,
    tags=["integrations"],
    responses={
        **{k: ERRORS[k] for k in (400, 401, 413, 503)},
        422: {"description": "malformed request or a label the server refuses"},
    },
)
async def openrlhf_reward(
    body: OpenRLHFRewardRequest, request: Request, owner: Annotated[str, Depends(require_owner)]
) -> OpenRLHFRewardResponse:
    """Score a batch of OpenRLHF rollouts; answers when every item has its result."""
    n = len(body.query)
    for what, values in (("prompts", body.prompts), ("labels", body.labels)):
        if values is not None and len(values) != n:
            raise Unprocessable(f"{len(values)} {what} for {n} queries")
    referee = request.app.state.referee
    views: list[dict[str, Any] | None] = [None] * n
    ids: dict[int, str] = {}
    for i, query in enumerate(body.query):
        prompt = body.prompts[i] if body.prompts else None
        candidate = extract_candidate(response_of(query, prompt))
        if candidate is None:
            continue
        try:
            label = body.labels[i] if body.labels and body.labels[i] not in (None, "") else reference_in_prompt(prompt)
            if label is None:
                raise ValueError("no label and no `class Model` block in the prompt: pass --label_key with the reference")
            evaluation = EvaluationRequest.model_validate({**body.options, **problem_spec(label), "candidate": candidate})
        except ValueError as exc:  # pydantic's ValidationError is one
            raise Unprocessable(f"item {i}: {str(exc).splitlines()[0]}") from exc
        try:
            ids[i] = (await run_in_threadpool(referee.submit, owner, evaluation)).id
        except RefereeError as exc:
            raise exc.about(f"item {i}: ") from exc
    wait = request.app.state.settings.max_wait_s
    finished = await asyncio.gather(*(_wait_for(referee, owner, evaluation_id, wait) for evaluation_id in ids.values()))
    for i, view in zip(ids, finished, strict=True):
        if view is None or "verdict" not in view:
            raise Unavailable(f"item {i}: no result within {wait:g} s; retry", headers={"Retry-After": "5"})
        if view["verdict"] == "infrastructure_error":
            message = (view.get("error") or {}).get("message", "")
            raise Unavailable(f"item {i}: Referee failed to evaluate it: {message}; retry", headers={"Retry-After": "5"})
        views[i] = view
    logs = [log_values(view) for view in views]
    return OpenRLHFRewardResponse(
        rewards=[float(view.get("reward", 0.0)) if view else 0.0 for view in views],
        scores=[float(view is not None and view["verdict"] == "correct") for view in views],
        extra_logs={key: [values[key] for values in logs] for key in LOG_KEYS},
        verdicts=[view["verdict"] if view else "invalid_submission" for view in views],
        feedback=[str(view.get("feedback", "")) if view else NO_CODE_MESSAGE for view in views],
    )
