"""OpenRLHF, client side: a `reward_func` file for `--remote_rm_url`.

    openrlhf.cli.train_ppo_ray ... --remote_rm_url /path/to/site-packages/triton_referee/service/integrations/openrlhf_reward.py \
        --label_key reference

OpenRLHF loads a `--remote_rm_url` ending in `.py` as a file, alone, and calls
`reward_func(queries, prompts, labels)` (queries are prompt + response). This file uses absolute
imports only, so Referee must be installed in OpenRLHF's environment. The server, key and options
come from REFEREE_URL, REFEREE_API_KEY (sent as the X-API-Key header: the way to authenticate
without putting the key in a URL) and REFEREE_OPTIONS. The problem is the label, or, without
labels, the prompt's fenced block that defines `class Model` (as the server endpoint does).

Returns what OpenRLHF reads: `rewards` (the Referee reward), `scores` (0-1: 1 when correct, for
dynamic filtering) and `extra_logs` (numbers only; OpenRLHF makes each a tensor), as float tensors.
When Referee cannot evaluate a completion it raises (logged as an error first: OpenRLHF itself logs
a failed reward at info level and then stops on the missing reward); never a 0.0 that looks like an answer.
"""

from __future__ import annotations

import logging
from typing import Any

from triton_referee.service.completions import reference_in_prompt
from triton_referee.service.integrations._common import RefereeInfrastructureError, Scored, scorer_from_env

log = logging.getLogger("referee.integrations.openrlhf")
LOG_KEYS = ("correctness", "speedup", "speedup_reward", "compiled", "correct", "cheating", "no_code")


def _logs(item: Scored) -> dict[str, float]:
    result = item.result
    speedup = result.performance.speedup
    return {
        "correctness": float(result.rewards.correctness),
        "speedup": float(speedup) if speedup is not None else 0.0,
        "speedup_reward": float(result.rewards.speedup),
        "compiled": float(result.compiled),
        "correct": float(result.verdict.value == "correct"),
        "cheating": float(result.verdict.value == "cheating"),
        "no_code": float(item.code_span is None),
    }


def reward_dict(queries: list[str], prompts: list[str], labels: list[Any] | None) -> dict[str, Any]:
    """The rewards as plain lists (what `reward_func` turns into tensors)."""
    responses = [q[len(p) :] if p and q.startswith(p) else q for q, p in zip(queries, prompts, strict=True)]
    labels = list(labels) if labels is not None else [None] * len(queries)
    problems = [label if label not in (None, "") else reference_in_prompt(p) for label, p in zip(labels, prompts, strict=True)]
    if any(problem is None for problem in problems):
        raise ValueError("no label and no `class Model` block in the prompt: pass --label_key with the reference")
    try:
        scored = scorer_from_env().scored(responses, problems)
        failed = [s for s in scored if s.failed]
        if failed:
            raise RefereeInfrastructureError(
                f"Referee could not evaluate {len(failed)} of {len(scored)} completions: {failed[0].reason()}"
            )
    except Exception:
        log.exception("Referee reward failed: no reward for this batch")
        raise
    logs = [_logs(s) for s in scored]
    return {
        "rewards": [float(s.result.reward) for s in scored],
        "scores": [float(s.result.verdict.value == "correct") for s in scored],
        "extra_logs": {key: [values[key] for values in logs] for key in LOG_KEYS},
    }


def reward_func(queries: list[str], prompts: list[str], labels: list[Any] | None = None) -> dict[str, Any]:
    """OpenRLHF's custom reward function: float tensors, one value per query."""
    import torch  # OpenRLHF's environment has it

    answer = reward_dict(queries, prompts, labels)
    return {
        "rewards": torch.tensor(answer["rewards"]),
        "scores": torch.tensor(answer["scores"]),
        "extra_logs": {key: torch.tensor(values) for key, values in answer["extra_logs"].items()},
    }
