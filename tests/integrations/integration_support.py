"""Sources shared by the integration tests: a y = 2x problem and candidates for it."""

from __future__ import annotations

from tests.tiny_problem import CANDIDATE, REFERENCE
from tests.tiny_problem import CANDIDATE_TEMPLATE as _HEADER

__all__ = ["CANDIDATE", "CHEAT", "COMPILE_ERROR", "FAST", "REFERENCE", "WRONG", "completion"]
WRONG = _HEADER.replace("FACTOR", "3")  # every element off by x
COMPILE_ERROR = _HEADER.replace("FACTOR", "scale")  # an undefined name inside the kernel
# A candidate that computes with torch and launches nothing: cheating (no_triton_launch, torch_fallback).
CHEAT = _HEADER.replace(
    "double_kernel[(triton.cdiv(x.numel(), 256),)](x, out, x.numel(), BLOCK=256)\n        return out", "return x * 2"
).replace("FACTOR", "2")
assert CHEAT != CANDIDATE and "return x * 2" in CHEAT

FAST = {"trials": 1, "timing_sets": 1, "max_timing_seconds": 0.05, "device": "cpu"}


def completion(source: str, lang: str = "python") -> str:
    """A typical completion: thinking, prose, a sketch block, the answer block."""
    return (
        f"<think>\nThe reference doubles x. ```python\nprint('draft')\n```\nI'll write a kernel.\n</think>\n"
        f"Here is a sketch of the launch:\n\n```python\ngrid = (triton.cdiv(n, 256),)\n```\n\n"
        f"And the full solution:\n\n```{lang}\n{source}```\n\nThis should be fast."
    )
