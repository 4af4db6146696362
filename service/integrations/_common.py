"""What every adapter shares: configuration, the problem spec, completion -> result -> score.

Absolute imports throughout this package: verl and OpenRLHF load an adapter file by its path, alone,
where relative imports fail.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from triton_referee.service.client import RefereeClient
from triton_referee.service.completions import Candidate, find_candidate, no_code_result
from triton_referee.worker.models import EvaluationResult, Verdict

DEFAULT_URL = "http://127.0.0.1:8000"
log = logging.getLogger("referee.integrations")


class RefereeInfrastructureError(RuntimeError):
    """Referee could not evaluate a completion (its job failed, or the server refused the item):
    there is no reward for it, and an adapter whose trainer has no "missing reward" raises this."""


@dataclass
class Scored:
    """One completion's result, and where its evaluated code stands in the completion (None: no code)."""

    result: EvaluationResult
    code_span: tuple[int, int] | None

    @property
    def failed(self) -> bool:
        """No reward: Referee's failure (infrastructure_error), never the policy's."""
        return self.result.verdict == Verdict.infrastructure_error

    def reason(self) -> str:
        return str((self.result.error or {}).get("message") or self.result.feedback)


_PROBLEM_ID = re.compile(r"^[0-9a-f]{64}$")


def problem_spec(value: Any) -> dict[str, Any]:
    """The problem part of a request from a trainer's label / ground truth:

    - a dict with `reference` or `problem_id` (and optionally `options`, merged into the request);
    - a JSON string of such a dict;
    - a 64-hex string: a problem id registered with POST /v1/problems;
    - any other string: the reference source itself."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{"):
            try:
                value = json.loads(stripped)
            except ValueError:
                pass
        elif _PROBLEM_ID.match(stripped):
            return {"problem_id": stripped}
    if isinstance(value, dict):
        spec = {k: value[k] for k in ("reference", "problem_id") if value.get(k)}
        if not spec:
            raise ValueError("the ground truth names no problem: give `reference` (source) or `problem_id`")
        return {**value.get("options", {}), **spec}
    if isinstance(value, str) and value.strip():
        return {"reference": value}
    raise ValueError(f"cannot read a problem from {type(value).__name__} {str(value)[:80]!r}")


class ScorerSettings(BaseSettings):
    """The trainer side's settings, read from the environment when a scorer is made from it."""

    model_config = SettingsConfigDict(env_prefix="REFEREE_", extra="ignore", env_ignore_empty=True)

    url: str = Field(default=DEFAULT_URL, validation_alias=AliasChoices("REFEREE_URL", "REFEREE_SERVER"))
    api_key: str | None = None
    options: dict[str, Any] = Field(default_factory=dict, description="a JSON object: options of every request")
    concurrency: int = Field(default=16, ge=1, description="evaluations in flight for a batch of completions")


@dataclass
class RefereeScorer:
    """Completions in, result documents out, through one Referee server.

    `options` go into every request (trials, reward preset, timeout_s, ...); `concurrency` bounds
    the evaluations in flight for a batch of completions."""

    url: str = DEFAULT_URL
    api_key: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    concurrency: int = 16
    timeout: float = 900.0

    def scored(self, completions: Sequence[str], problems: Sequence[Any]) -> list[Scored]:
        """One result per completion (same order), with the evaluated code's span. Completions
        without code never reach the server. Raises `RefereeUnavailable` when no evaluation can get
        through (auth, server or queue down, after the client's retries); an item Referee failed on
        comes back as an `infrastructure_error` result, and is logged as a warning."""
        if len(completions) != len(problems):
            raise ValueError(f"{len(completions)} completions but {len(problems)} problems")
        candidates: list[Candidate | None] = [find_candidate(c) for c in completions]
        scored: list[Scored | None] = [None if c is not None else Scored(no_code_result(), None) for c in candidates]
        found = {i: c for i, c in enumerate(candidates) if c is not None}
        pending = list(found)
        bodies = [{**self.options, **problem_spec(problems[i]), "candidate": found[i].source} for i in pending]
        if bodies:
            with RefereeClient(self.url, self.api_key, timeout=60.0) as client:
                for i, result in zip(
                    pending, client.evaluate_many(bodies, concurrency=self.concurrency, timeout=self.timeout), strict=True
                ):
                    candidate = candidates[i]
                    assert candidate is not None
                    scored[i] = Scored(result, (candidate.start, candidate.end))
        done = [s for s in scored if s is not None]
        for index, item in enumerate(done):
            if item.failed:
                log.warning("Referee could not evaluate completion %d (no reward for it): %s", index, item.reason())
        return done

    def results(self, completions: Sequence[str], problems: Sequence[Any]) -> list[EvaluationResult]:
        """`scored` without the spans."""
        return [s.result for s in self.scored(completions, problems)]

    def result(self, completion: str, problem: Any) -> EvaluationResult:
        return self.results([completion], [problem])[0]


def scorer_from_env(**overrides: Any) -> RefereeScorer:
    """REFEREE_URL (or REFEREE_SERVER), REFEREE_API_KEY, REFEREE_OPTIONS (a JSON object), REFEREE_CONCURRENCY
    (`ScorerSettings`); the overrides that are not None win."""
    values: dict[str, Any] = ScorerSettings().model_dump()
    values.update({k: v for k, v in overrides.items() if v is not None})
    return RefereeScorer(**values)


def components(result: EvaluationResult, code_span: tuple[int, int] | None = None) -> dict[str, Any]:
    """The reward and its parts, flat (what trainers log next to the score); the code's character
    span in the completion as `code_start`/`code_end` (-1 when there is no code)."""
    speedup = result.performance.speedup
    start, end = code_span if code_span is not None else (-1, -1)
    return {
        "score": float(result.reward),
        "correctness": float(result.rewards.correctness),
        "speedup_reward": float(result.rewards.speedup),
        "speedup": float(speedup) if speedup is not None else 0.0,
        "compiled": float(result.compiled),
        "correct": float(result.correct),
        "cheating": float(result.verdict == Verdict.cheating),
        "verdict": result.verdict.value,
        "feedback": result.feedback,
        "code_start": start,
        "code_end": end,
    }
