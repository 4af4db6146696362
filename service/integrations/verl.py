"""verl: a custom reward function, and a reward manager with token-level (hierarchical) rewards.

verl loads `custom_reward_function.path` as a file, alone (no package around it), so this file uses
absolute imports only; Referee must be installed (importable) in verl's environment:

    custom_reward_function:
      path: pkg://triton_referee.service.integrations.verl   # where verl's load_module knows pkg:// (0.9.1 does: it imports the module)
      # path: /path/to/site-packages/triton_referee/service/integrations/verl.py   # any verl: the file itself
      name: compute_score          # per sample (NaiveRewardManager, verl's reward loop)
      # name: compute_score_batch  # whole batches with bounded concurrency (BatchRewardManager)

The data set's `reward_model.ground_truth` is the problem: the reference source, a registered
problem id, or a JSON object `{"reference"|"problem_id": ..., "options": {...}}`. The server and
options come from REFEREE_URL, REFEREE_API_KEY and REFEREE_OPTIONS (JSON), or from
`extra_info["referee"]` (`url`, `api_key`, `options`).

Returns a dict: `score` (the reward) and its components (correctness, speedup, compiled, correct,
cheating, verdict, feedback, code_start/code_end), which verl logs as reward_extra_info.

verl has no "missing reward": when Referee cannot evaluate a completion this raises
`RefereeInfrastructureError`, and `RefereeUnavailable` when nothing gets through (wrong or missing
API key, server or queue down after the client's retries). The step fails loudly; it never goes on
with 0.0 rewards that look like answers.

`RefereeRewardManager` is a reward manager of verl's `AbstractRewardManager` interface
(`__call__(data, return_dict)` -> a `[batch, response_length]` reward tensor) that assigns
TritonRL's hierarchical reward to tokens: `rewards.correctness` on the tokens of the evaluated code
block, `rewards.speedup` on the plan's (`token_level=False`: the scalar reward on the last token, as
verl's NaiveRewardManager). Importing this module where verl is imported registers it as
`referee` (e.g. `VERL_USE_EXTERNAL_MODULES=triton_referee.service.integrations.verl` with
`reward_model.reward_manager=referee`).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

from triton_referee.service.integrations._common import RefereeInfrastructureError, Scored, components, scorer_from_env
from triton_referee.service.integrations.tokens import token_rewards_for_ids


def _scorer(extra_info: dict[str, Any] | None) -> Any:
    config = dict((extra_info or {}).get("referee") or {})
    return scorer_from_env(
        url=config.get("url"), api_key=config.get("api_key"), **({"options": config["options"]} if "options" in config else {})
    )


def _checked(scored: list[Scored]) -> list[Scored]:
    failed = [(i, s) for i, s in enumerate(scored) if s.failed]
    if failed:
        index, first = failed[0]
        raise RefereeInfrastructureError(
            f"Referee could not evaluate {len(failed)} of {len(scored)} completions (no reward "
            f"for them; first: item {index}, {first.result.id}): {first.reason()}"
        )
    return scored


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None, **_: Any
) -> dict[str, Any]:
    """One completion's reward and its components."""
    (scored,) = _checked(_scorer(extra_info).scored([solution_str], [ground_truth]))
    return components(scored.result, scored.code_span)


def compute_score_batch(
    data_sources: list[str],
    solution_strs: list[str],
    ground_truths: list[Any],
    extra_infos: list[dict[str, Any] | None] | None = None,
    **_: Any,
) -> list[dict[str, Any]]:
    """A batch at once (verl's BatchRewardManager); evaluations run concurrently on the server."""
    first = (extra_infos or [None])[0]
    return [components(s.result, s.code_span) for s in _checked(_scorer(first).scored(list(solution_strs), list(ground_truths)))]


class RefereeRewardManager:
    """verl's reward-manager interface, with TritonRL's token-level assignment (see the module docstring)."""

    def __init__(
        self,
        tokenizer: Any,
        num_examine: int = 0,
        compute_score: Any = None,
        reward_fn_key: str = "data_source",
        token_level: bool = True,
        **_: Any,
    ) -> None:
        self.tokenizer, self.num_examine, self.reward_fn_key, self.token_level = (
            tokenizer,
            num_examine,
            reward_fn_key,
            token_level,
        )

    def __call__(self, data: Any, return_dict: bool = False) -> Any:
        import torch  # verl's environment has it; the rest of this module does not need it

        if "rm_scores" in data.batch.keys():  # verl's convention: scores computed upstream win
            if return_dict:
                keys = data.meta_info.get("reward_extra_keys", [])
                return {
                    "reward_tensor": data.batch["rm_scores"],
                    "reward_extra_info": {k: data.non_tensor_batch[k] for k in keys},
                }
            return data.batch["rm_scores"]
        responses = data.batch["responses"]
        prompt_length = data.batch["prompts"].shape[-1]
        lengths = data.batch["attention_mask"][:, prompt_length:].sum(dim=-1).tolist()
        ids = [responses[i, : int(n)].tolist() for i, n in enumerate(lengths)]
        texts = [self.tokenizer.decode(seq, skip_special_tokens=True) for seq in ids]
        problems = [item["ground_truth"] for item in data.non_tensor_batch["reward_model"]]
        extra_infos = data.non_tensor_batch.get("extra_info")
        scored = _checked(
            _scorer(extra_infos[0] if extra_infos is not None and len(extra_infos) else None).scored(texts, problems)
        )
        reward_tensor = torch.zeros_like(responses, dtype=torch.float32)
        extra: dict[str, list[Any]] = defaultdict(list)
        for i, (item, seq, text) in enumerate(zip(scored, ids, texts, strict=True)):
            for key, value in components(item.result, item.code_span).items():
                extra[key].append(value)
            if not seq:
                continue
            if self.token_level:
                rewards = token_rewards_for_ids(self.tokenizer, seq, item.code_span, item.result, text=text)
                reward_tensor[i, : len(seq)] = torch.tensor(rewards, dtype=torch.float32)
            else:
                reward_tensor[i, len(seq) - 1] = float(item.result.reward)
            if i < self.num_examine:
                print(f"[referee] {item.result.verdict.value} reward {item.result.reward} code chars {item.code_span}")
        if return_dict:
            return {"reward_tensor": reward_tensor, "reward_extra_info": dict(extra)}
        return reward_tensor


def register_with_verl(name: str = "referee") -> None:
    """Put `RefereeRewardManager` in verl's reward-manager registry under `name` (once per process)."""
    from verl.workers.reward_manager.registry import REWARD_MANAGER_REGISTRY

    REWARD_MANAGER_REGISTRY.setdefault(name, RefereeRewardManager)


if "verl" in sys.modules:  # loaded by verl (a path, pkg://, or VERL_USE_EXTERNAL_MODULES): register
    try:
        register_with_verl()
    except ImportError:  # verl's package is partly importable here (a stripped install): register by hand
        pass
