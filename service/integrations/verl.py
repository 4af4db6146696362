"""verl: a custom reward function (`custom_reward_function.path` / `.name` in the trainer config).

    custom_reward_function:
      path: <site-packages>/service/integrations/verl.py      # or a copy of it
      name: compute_score          # per sample (NaiveRewardManager)
      # name: compute_score_batch  # whole batches with bounded concurrency (BatchRewardManager)

The data set's `reward_model.ground_truth` is the problem: the reference source, a registered
problem id, or a JSON object `{"reference"|"problem_id": ..., "options": {...}}`. The server and
options come from REFEREE_URL, REFEREE_API_KEY and REFEREE_OPTIONS (JSON), or from
`extra_info["referee"]` (`url`, `api_key`, `options`).

Returns a dict: `score` (the reward) and its components (correctness, speedup, compiled, correct,
cheating, verdict, feedback), which verl logs as reward_extra_info.
"""

from __future__ import annotations

from typing import Any

from ._common import components, scorer_from_env


def _scorer(extra_info: dict[str, Any] | None) -> Any:
    config = dict((extra_info or {}).get("referee") or {})
    return scorer_from_env(url=config.get("url"), api_key=config.get("api_key"),
                           **({"options": config["options"]} if "options" in config else {}))


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict[str, Any] | None = None,
                  **_: Any) -> dict[str, Any]:
    """One completion's reward and its components."""
    return components(_scorer(extra_info).result(solution_str, ground_truth))


def compute_score_batch(data_sources: list[str], solution_strs: list[str], ground_truths: list[Any],
                        extra_infos: list[dict[str, Any] | None] | None = None, **_: Any) -> list[dict[str, Any]]:
    """A batch at once (verl's BatchRewardManager); evaluations run concurrently on the server."""
    first = (extra_infos or [None])[0]
    return [components(r) for r in _scorer(first).results(list(solution_strs), list(ground_truths))]
