"""TritonRL's hierarchical reward on tokens (issue 19, item 9): the code block's character span in
the completion, and correctness/speedup assigned through a real tokenizer's offset mapping (a BPE
tokenizer trained here with the `tokenizers` package: nothing is downloaded)."""

from __future__ import annotations

import json

import pytest

from tests.integrations.trainer_packages import ensure_trainers

ensure_trainers()  # tokenizers and transformers come with the trainers, installed on first run

from tokenizers import Tokenizer, models, pre_tokenizers, trainers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from tests.integrations.integration_support import CANDIDATE, CHEAT, FAST, REFERENCE, completion  # noqa: E402
from triton_referee.service.completions import find_candidate  # noqa: E402
from triton_referee.service.integrations import trl  # noqa: E402
from triton_referee.service.integrations.tokens import code_token_mask, code_token_range, token_rewards, token_rewards_for_ids  # noqa: E402
from triton_referee.worker.models import EvaluationResult, Rewards, Verdict  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the completions of this test (as a model's tokenizer would split them)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    bpe.decoder = decoders.ByteLevel()
    corpus = [completion(CANDIDATE), completion(CHEAT), REFERENCE, "Plan: one program per block; mask the tail."] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe)


def test_the_span_is_the_evaluated_block_as_written_in_the_completion() -> None:
    text = completion(CANDIDATE)
    found = find_candidate(text)
    assert found is not None and found.source == CANDIDATE
    assert text[found.start : found.end] == CANDIDATE  # the answer block, not the sketch before it
    # Thinking, CRLF line ends and an indented fence: the span still points at the original characters.
    crlf = (
        "<think>```python\nclass ModelNew: pass\n```</think>\r\nSee:\r\n  ```python\r\n"
        + "".join("  " + line + "\r\n" for line in CANDIDATE.splitlines())
        + "  ```\r\nDone."
    )
    found = find_candidate(crlf)
    assert found is not None and found.source == CANDIDATE
    written = crlf[found.start : found.end]
    assert "\n".join(line[2:] for line in written.replace("\r\n", "\n").split("\n")) == CANDIDATE
    bare = "\n\n" + CANDIDATE
    found = find_candidate(bare)
    assert found is not None and bare[found.start : found.end] == CANDIDATE.strip("\n")
    assert find_candidate("I could not do it.") is None


def _result(verdict: Verdict, correctness: float, speedup: float, reward: float) -> EvaluationResult:
    return EvaluationResult(id="t", verdict=verdict, reward=reward, rewards=Rewards(correctness=correctness, speedup=speedup))


def test_offset_mapping_puts_correctness_on_code_tokens_and_speedup_on_the_plan(tokenizer: PreTrainedTokenizerFast) -> None:
    text = completion(CANDIDATE)
    found = find_candidate(text)
    assert found is not None
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = encoded["offset_mapping"]
    mask = code_token_mask(offsets, (found.start, found.end))
    code_text = "".join(text[s:e] for (s, e), is_code in zip(offsets, mask, strict=True) if is_code)
    assert CANDIDATE.strip() in code_text and "The reference doubles x" not in code_text
    assert len(code_text) - len(CANDIDATE) < 8  # at most the tokens straddling the fence's edges
    rewards = token_rewards(offsets, (found.start, found.end), _result(Verdict.correct, 1.0, 1.7, 1.7))
    assert {r for r, m in zip(rewards, mask, strict=True) if m} == {1.0}
    assert {r for r, m in zip(rewards, mask, strict=True) if not m} == {1.7}
    assert sum(mask) < len(mask)  # there are plan tokens
    cheat = token_rewards(offsets, (found.start, found.end), _result(Verdict.cheating, 0.0, 0.0, -1.0))
    assert set(cheat) == {-1.0}  # the penalty on the whole answer
    assert set(token_rewards(offsets, None, _result(Verdict.invalid_submission, 0.0, 0.0, 0.0))) == {0.0}


def test_generated_ids_map_to_the_same_tokens_by_offsets_or_by_decoding_prefixes(tokenizer: PreTrainedTokenizerFast) -> None:
    text = completion(CANDIDATE)
    found = find_candidate(text)
    assert found is not None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    exact = code_token_range(tokenizer, ids, (found.start, found.end))
    # A raw `tokenizers.Tokenizer` is not callable with offsets: the prefix-decoding path.
    by_prefix = code_token_range(tokenizer.backend_tokenizer, ids, (found.start, found.end))
    assert exact == by_prefix and exact[1] - exact[0] > 10
    decoded = tokenizer.decode(ids[exact[0] : exact[1]])
    assert CANDIDATE.strip() in decoded
    rewards = token_rewards_for_ids(tokenizer, ids, (found.start, found.end), _result(Verdict.correct, 1.0, 2.0, 2.0))
    assert rewards[: exact[0]] == [2.0] * exact[0] and rewards[exact[0] : exact[1]] == [1.0] * (exact[1] - exact[0])


def test_trl_token_level_rewards_against_the_server(
    server_url: str, tokenizer: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFEREE_URL", server_url)
    monkeypatch.setenv("REFEREE_OPTIONS", json.dumps(FAST))
    texts = [completion(CANDIDATE), "no code at all"]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    per_token = trl.token_level_rewards(ids, tokenizer, [REFERENCE, REFERENCE])
    first, second = per_token
    assert first is not None and second is not None
    assert len(first) == len(ids[0]) and len(second) == len(ids[1])
    start, stop = code_token_range(tokenizer, ids[0], (find_candidate(texts[0]).start, find_candidate(texts[0]).end))
    assert first[start:stop] == [1.0] * (stop - start)  # correct: correctness 1 on the code
    assert set(first[:start]) == {0.0}  # rewards.speedup on the plan: 0 on the CPU, which times nothing
    assert set(second) == {0.0}
