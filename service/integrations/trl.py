"""TRL: a reward function for `GRPOTrainer(reward_funcs=[...])`, and token-level rewards for
trainers that take them.

    from triton_referee.service.integrations.trl import make_reward_function
    reward = make_reward_function(url="http://referee:8000", reference_column="reference")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=dataset, ...)

TRL calls it with the completions (strings, or chat messages in conversational data sets) and
every data set column as keyword arguments; the problem comes from `reference_column` (the
reference source, a registered problem id, or a JSON spec). Returns one float per completion, the
Referee reward, or `None` where Referee could not evaluate the completion (TRL leaves such a
completion out of its group's baseline and gives it no advantage); each is logged as a warning.
When no evaluation can get through (wrong or missing API key, server or queue down after the
retries) it raises `RefereeUnavailable`: a run must not go on without a learning signal.
`referee_reward` is the same function configured from the environment (REFEREE_URL,
REFEREE_API_KEY, REFEREE_OPTIONS).

`token_level_rewards(completion_ids, tokenizer, problems)` is for TRL-style trainers
with per-token rewards (TritonRL's hierarchical assignment): correctness on the code block's
tokens, speedup on the plan's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from triton_referee.service.integrations._common import RefereeScorer, scorer_from_env
from triton_referee.service.integrations.tokens import token_rewards_for_ids


def completion_text(completion: Any) -> str:
    """A standard completion is a string; a conversational one a list of messages (the last assistant turn counts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, list):
        assistant = [m for m in completion if isinstance(m, dict) and m.get("role", "assistant") == "assistant"]
        return completion_text(assistant[-1]) if assistant else ""
    return str(completion)


def make_reward_function(
    url: str | None = None,
    api_key: str | None = None,
    options: dict[str, Any] | None = None,
    reference_column: str = "reference",
    concurrency: int | None = None,
    name: str = "referee_reward",
) -> Callable[..., list[float | None]]:
    def reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
        if reference_column not in kwargs:
            raise KeyError(f"the data set has no {reference_column!r} column (columns: {sorted(kwargs)})")
        scorer: RefereeScorer = scorer_from_env(url=url, api_key=api_key, options=options, concurrency=concurrency)
        problems = list(kwargs[reference_column])
        scored = scorer.scored([completion_text(c) for c in completions], problems)
        return [None if s.failed else float(s.result.reward) for s in scored]

    reward.__name__ = reward.__qualname__ = name
    return reward


def referee_reward(completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Configured from the environment; the problem comes from the `reference` column."""
    return make_reward_function()(completions, **kwargs)


def token_level_rewards(
    completion_ids: Sequence[Sequence[int]],
    tokenizer: Any,
    problems: Sequence[Any],
    scorer: RefereeScorer | None = None,
    skip_special_tokens: bool = True,
) -> list[list[float] | None]:
    """Per completion, one reward per token of `completion_ids` (TRL passes them to reward functions):
    `rewards.correctness` on the tokens of the evaluated code block, `rewards.speedup` on the plan;
    `None` where Referee could not evaluate it. The completion is read from the ids
    (`tokenizer.decode`), so the character span and the tokens agree."""
    texts = [tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens) for ids in completion_ids]
    scored = (scorer or scorer_from_env()).scored(texts, list(problems))
    return [
        None if s.failed else token_rewards_for_ids(tokenizer, ids, s.code_span, s.result, skip_special_tokens, text)
        for s, ids, text in zip(scored, completion_ids, texts, strict=True)
    ]
