"""TRL: a reward function for `GRPOTrainer(reward_funcs=[...])`.

    from service.integrations.trl import make_reward_function
    reward = make_reward_function(url="http://referee:8000", reference_column="reference")
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], train_dataset=dataset, ...)

TRL calls it with the completions (strings, or chat messages in conversational data sets) and
every data set column as keyword arguments; the problem comes from `reference_column` (the
reference source, a registered problem id, or a JSON spec). Returns one float per completion:
the Referee reward. `referee_reward` is the same function configured from the environment
(REFEREE_URL, REFEREE_API_KEY, REFEREE_OPTIONS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._common import RefereeScorer, scorer_from_env


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


def make_reward_function(url: str | None = None, api_key: str | None = None, options: dict[str, Any] | None = None,
                         reference_column: str = "reference", concurrency: int | None = None,
                         name: str = "referee_reward") -> Callable[..., list[float]]:
    def reward(completions: list[Any], **kwargs: Any) -> list[float]:
        if reference_column not in kwargs:
            raise KeyError(f"the data set has no {reference_column!r} column (columns: {sorted(kwargs)})")
        scorer: RefereeScorer = scorer_from_env(url=url, api_key=api_key, options=options, concurrency=concurrency)
        problems = list(kwargs[reference_column])
        results = scorer.results([completion_text(c) for c in completions], problems)
        return [float(r.reward) for r in results]

    reward.__name__ = reward.__qualname__ = name
    return reward


def referee_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """Configured from the environment; the problem comes from the `reference` column."""
    return make_reward_function()(completions, **kwargs)
