"""Engine-side judgement of what a comparison can and cannot say (docs/judging.md).

- Triton's CPU interpreter computes with numpy, which has no bfloat16 or fp8: a kernel that does
  arithmetic in those types can be right on a GPU and wrong in the interpreter. An `incorrect`
  result on the interpreter with such a dtype among the inputs or outputs is reported as
  `infrastructure_error` with `error.kind = "interpreter_limitation"` (not the candidate's fault,
  reward 0, CLI exit 3), never as `incorrect`.
- A problem whose output barely depends on its inputs cannot judge a candidate: the reference
  process refuses it as a problem error (sandbox/harness/hardening.py), so no candidate is judged
  on it (CLI exit 2; a worker's result is `invalid_submission` with `error.kind = "problem_error"`).
"""

from __future__ import annotations

from typing import Any

from .models import EvalConfig, Verdict

# dtypes the interpreter cannot compute faithfully (numpy has no such type)
INTERPRETER_UNFAITHFUL_DTYPES = frozenset(
    {
        "bfloat16",
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
    }
)


def dtypes_in(description: Any) -> set[str]:
    """The tensor dtypes named in an encoded value's description (tensors.encode)."""
    found: set[str] = set()
    if isinstance(description, dict):
        if description.get("t") == "tensor":
            found.add(str(description.get("dtype")))
        for item in description.get("items", []) or []:
            found |= dtypes_in(item)
    elif isinstance(description, list):
        for item in description:
            found |= dtypes_in(item)
    return found


def interpreter_limitation(
    verdict: Verdict, error: dict[str, Any] | None, interpreter: bool | None, dtypes: set[str]
) -> tuple[Verdict, dict[str, Any] | None]:
    """An `incorrect` verdict in the interpreter with a dtype it cannot compute is not a verdict."""
    unfaithful = sorted(dtypes & INTERPRETER_UNFAITHFUL_DTYPES)
    if verdict != Verdict.incorrect or not interpreter or not unfaithful:
        return verdict, error
    return Verdict.infrastructure_error, {
        "kind": "interpreter_limitation",
        "dtypes": unfaithful,
        "message": f"Triton's CPU interpreter cannot compute {', '.join(unfaithful)} faithfully (numpy has no such type), "
        "so a mismatch here says nothing about the kernel; check it on a GPU",
    }


def setup_options(config: EvalConfig) -> dict[str, Any]:
    """What the reference's setup needs of the request: the mode, and the tolerance it judges degenerate
    problems and value ranges at (when the request sets one)."""
    options: dict[str, Any] = {"mode": config.mode}
    if config.value_ranges is not None:
        options["value_ranges"] = list(config.value_ranges)
    if config.atol is not None:
        options["atol"] = config.atol
    if config.rtol is not None:
        options["rtol"] = config.rtol
    return options


def problem_key(problem_sha256: str, config: EvalConfig) -> str:
    """The problem's identity for the reference caches: another mode (or choice of value ranges) draws
    other parameters and inputs."""
    key = problem_sha256 if config.mode == "strict" else f"{problem_sha256}:{config.mode}"
    return key if config.value_ranges is None else f"{key}:{','.join(config.value_ranges)}"


def planned_sets(input_sets: list[dict[str, int]], config: EvalConfig) -> list[dict[str, int]]:
    """The KernelBench-compatible mode checks the published inputs only (unless the request names sets)."""
    if config.mode == "kernelbench" and config.input_sets is None:
        return input_sets[:1]
    return input_sets
