"""TritonRL's hierarchical reward, token by token: `rewards.correctness` on the tokens of the evaluated
code block, `rewards.speedup` on the others (the plan: reasoning and prose around the code).

The code block's character span comes with each result (`Scored.code_span`, `find_candidate`); a
token belongs to the code when its characters overlap that span. Where the characters of each token
come from:

- an offset mapping (`tokenizer(text, return_offsets_mapping=True)["offset_mapping"]`, fast HF
  tokenizers and the `tokenizers` package): `token_rewards(offsets, ...)`;
- generated token ids (what a trainer holds): `token_rewards_for_ids(tokenizer, ids, ...)` uses the
  offset mapping when re-encoding the decoded text gives back the same ids, else finds the code's
  first and last token by decoding prefixes (a binary search: a few decodes per completion).

A cheating verdict puts the preset's penalty (the scalar reward) on every token: the whole answer
was the cheat. Pure Python: nothing here imports torch or a tokenizer library.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from triton_referee.worker.models import EvaluationResult, Verdict

Span = tuple[int, int]


def code_token_mask(offsets: Sequence[Sequence[int]], code_span: Span | None) -> list[bool]:
    """Per token: do its characters overlap the code span? Zero-width tokens (special tokens) never do."""
    if code_span is None:
        return [False] * len(offsets)
    start, end = code_span
    return [begin < end and stop > start and stop > begin for begin, stop in offsets]


def rewards_from_mask(mask: Sequence[bool], result: EvaluationResult) -> list[float]:
    """correctness on code tokens, speedup on plan tokens (the penalty everywhere for cheating)."""
    if result.verdict == Verdict.cheating:
        return [float(result.reward)] * len(mask)
    correctness, speedup = float(result.rewards.correctness), float(result.rewards.speedup)
    return [correctness if is_code else speedup for is_code in mask]


def token_rewards(offsets: Sequence[Sequence[int]], code_span: Span | None, result: EvaluationResult) -> list[float]:
    """One reward per token of a completion, from its offset mapping."""
    return rewards_from_mask(code_token_mask(offsets, code_span), result)


def _first(lo: int, hi: int, holds: Callable[[int], bool]) -> int:
    """The smallest k in [lo, hi] for which `holds` (monotone) is true; hi when none is."""
    while lo < hi:
        middle = (lo + hi) // 2
        if holds(middle):
            hi = middle
        else:
            lo = middle + 1
    return lo


def code_token_range(
    tokenizer: Any, ids: Sequence[int], code_span: Span | None, skip_special_tokens: bool = True, text: str | None = None
) -> tuple[int, int]:
    """[first, stop) of the tokens in `ids` that carry the code span of `decode(ids)`; (0, 0) without code."""
    if code_span is None or not ids:
        return 0, 0
    ids = list(ids)
    if text is None:
        text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    offsets = _exact_offsets(tokenizer, ids, text)
    if offsets is not None:
        mask = code_token_mask(offsets, code_span)
        inside = [i for i, is_code in enumerate(mask) if is_code]
        return (inside[0], inside[-1] + 1) if inside else (0, 0)
    start, end = code_span
    cache: dict[int, int] = {}

    def prefix_length(k: int) -> int:  # characters decoded from the first k tokens
        if k not in cache:
            cache[k] = len(tokenizer.decode(ids[:k], skip_special_tokens=skip_special_tokens))
        return cache[k]

    n = len(ids)
    first = _first(0, n, lambda i: prefix_length(i + 1) > start)  # first token whose end passes the start
    stop = _first(first, n, lambda i: prefix_length(i) >= end)  # first token that starts at or after the end
    return (first, stop) if stop > first else (0, 0)


def _exact_offsets(tokenizer: Any, ids: list[int], text: str) -> list[tuple[int, int]] | None:
    """The offset mapping of `text`, when encoding it gives back exactly `ids` (else None)."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (TypeError, ValueError, NotImplementedError):  # a slow tokenizer has no offset mapping
        return None
    if list(encoded["input_ids"]) != ids:
        return None
    return [tuple(pair) for pair in encoded["offset_mapping"]]


def token_rewards_for_ids(
    tokenizer: Any,
    ids: Sequence[int],
    code_span: Span | None,
    result: EvaluationResult,
    skip_special_tokens: bool = True,
    text: str | None = None,
) -> list[float]:
    """One reward per generated token id; `code_span` is in `tokenizer.decode(ids)` (or `text`)."""
    first, stop = code_token_range(tokenizer, ids, code_span, skip_special_tokens, text)
    mask = [first <= i < stop for i in range(len(ids))]
    return rewards_from_mask(mask, result)
