"""OpenRLHF: the remote reward model endpoint, `POST /v1/openrlhf/reward`.

    openrlhf.cli.train_ppo_ray ... --remote_rm_url http://referee:8000/v1/openrlhf/reward --label_key reference

OpenRLHF posts `{"query": [prompt + response, ...], "prompts": [prompt, ...], "labels": [...]}` and
reads `{"rewards": [...]}`. The response is the query with its prompt cut off; the problem is the
item's label (the reference source, a registered problem id, or a JSON spec), or, without labels,
the fenced block of the prompt that defines `class Model` (KernelBench prompts quote it).
Completions without code get reward 0 without reaching the queue; a problem the server refuses
(422/413) gets 0 too and its reason in `extra_logs.errors`, so one bad item never fails a step.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ..auth import require_owner
from ..completions import NO_CODE_MESSAGE, extract_candidate, fenced_blocks
from ..routes import ERRORS, _wait_for
from ..schemas import EvaluationRequest
from ._common import problem_spec

router = APIRouter()
_MODEL = re.compile(r"^\s*class\s+Model\s*\(", re.M)


class OpenRLHFRewardRequest(BaseModel):
    query: list[str] = Field(description="prompt + response, as OpenRLHF sends them")
    prompts: list[str] | None = Field(default=None, description="the prompts, cut off the front of each query")
    labels: list[Any] | None = Field(default=None, description="per item: reference source, problem id or JSON spec")
    options: dict[str, Any] = Field(default_factory=dict, description="engine options for every item (trials, reward, ...)")


class OpenRLHFRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float] = Field(description="the same as rewards (newer OpenRLHF reads this key)")
    extra_logs: dict[str, list[Any]] = Field(description="per item: verdict, correctness, speedup, errors")


def response_of(query: str, prompt: str | None) -> str:
    if prompt and query.startswith(prompt):
        return query[len(prompt):]
    return query


def reference_in_prompt(prompt: str | None) -> str | None:
    for block in reversed(fenced_blocks(prompt or "")):
        if _MODEL.search(block.code) and "get_inputs" in block.code:
            return block.code
    return None


@router.post("/v1/openrlhf/reward", response_model=OpenRLHFRewardResponse, tags=["integrations"],
             responses={**{k: ERRORS[k] for k in (400, 401, 413)}, 422: {"description": "malformed request"}})
async def openrlhf_reward(body: OpenRLHFRewardRequest, request: Request,
                          owner: Annotated[str, Depends(require_owner)]) -> OpenRLHFRewardResponse:
    """Score a batch of OpenRLHF rollouts; answers when every item has its result (or the wait cap passed)."""
    n = len(body.query)
    for what, values in (("prompts", body.prompts), ("labels", body.labels)):
        if values is not None and len(values) != n:
            raise HTTPException(422, f"{len(values)} {what} for {n} queries")
    referee = request.app.state.referee
    verdicts: list[str] = ["invalid_submission"] * n
    errors: list[str] = [""] * n
    ids: dict[int, str] = {}
    for i, query in enumerate(body.query):
        prompt = body.prompts[i] if body.prompts else None
        candidate = extract_candidate(response_of(query, prompt))
        if candidate is None:
            errors[i] = NO_CODE_MESSAGE
            continue
        try:
            label = body.labels[i] if body.labels else reference_in_prompt(prompt)
            if label is None:
                raise ValueError("no label and no `class Model` block in the prompt: pass --label_key with the reference")
            evaluation = EvaluationRequest.model_validate({**body.options, **problem_spec(label), "candidate": candidate})
            ids[i] = (await run_in_threadpool(referee.submit, owner, evaluation)).id
        except HTTPException as exc:
            if exc.status_code in (401, 429, 503):
                raise
            verdicts[i], errors[i] = "rejected", str(exc.detail)
        except ValueError as exc:  # pydantic's ValidationError is one
            verdicts[i], errors[i] = "rejected", str(exc).splitlines()[0]
    wait = request.app.state.settings.max_wait_s
    views = await asyncio.gather(*(_wait_for(referee, owner, evaluation_id, wait) for evaluation_id in ids.values()))
    rewards = [0.0] * n
    correctness = [0.0] * n
    speedups = [0.0] * n
    for i, view in zip(ids, views, strict=True):
        if view is None or "verdict" not in view:
            verdicts[i], errors[i] = "infrastructure_error", f"no result within {wait:g} s"
            continue
        verdicts[i] = view["verdict"]
        rewards[i] = float(view.get("reward", 0.0))
        correctness[i] = float(view.get("rewards", {}).get("correctness", 0.0))
        speedups[i] = float(view.get("performance", {}).get("speedup") or 0.0)
        errors[i] = "" if view["verdict"] == "correct" else str(view.get("feedback", ""))[:500]
    return OpenRLHFRewardResponse(rewards=rewards, scores=rewards,
                                  extra_logs={"verdict": verdicts, "correctness": correctness, "speedup": speedups, "errors": errors})
