"""Completion parsing: known sources wrapped in generated prose, thinking, tags and decoy blocks
must come back exactly."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integrations.integration_support import CANDIDATE, CHEAT, WRONG, completion
from triton_referee.service.completions import extract_candidate, no_code_result, strip_thinking
from triton_referee.worker.models import Verdict

# Prose that cannot open or close a fence or a tag by itself.
PROSE = st.text(alphabet=st.characters(blacklist_characters="`~<>\r", blacklist_categories=("Cs",)), max_size=80)
LANG = st.sampled_from(["python", "py", "Python", "python3", "triton", ""])
THINK = st.sampled_from(["think", "thinking", "reasoning", "THINK"])
SOURCES = st.sampled_from([CANDIDATE, WRONG, CHEAT])
DECOYS = [
    "```python\nout = model(x)\n```",  # a usage example after the answer
    "```\npip install triton\n```",  # a shell line without a tag
    "```bash\npython run.py\n```",
    "```python\nclass ModelNew:  # idea\n    pass\n```",  # a sketch defining ModelNew without a kernel
    "~~~text\nspeedup: 1.4x\n~~~",
]
DECOY_BLOCKS = st.sampled_from(DECOYS)


@st.composite
def messy(draw: st.DrawFn) -> tuple[str, str]:
    source = draw(SOURCES)
    parts = [draw(PROSE)]
    if draw(st.booleans()):
        tag = draw(THINK)
        inner = draw(PROSE) + "\n```python\n" + draw(SOURCES).replace("ModelNew", "ModelDraft") + "```\n" + draw(PROSE)
        parts.append(f"<{tag}>{inner}</{tag}>")
    parts += [draw(DECOY_BLOCKS) for _ in range(draw(st.integers(0, 2)))]
    fence = draw(st.sampled_from(["```", "````", "~~~"]))
    parts.append(f"{fence}{draw(LANG)}\n{source}{fence}")
    parts += [draw(DECOY_BLOCKS) for _ in range(draw(st.integers(0, 2)))]
    parts.append(draw(PROSE))
    separator = draw(st.sampled_from(["\n", "\n\n", "\r\n"]))
    return separator.join(parts), source


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messy())
def test_the_candidate_round_trips_through_messy_completions(case: tuple[str, str]) -> None:
    text, source = case
    assert extract_candidate(text) == source


@given(PROSE)
def test_prose_without_code_has_no_candidate(prose: str) -> None:
    assert extract_candidate(prose) is None
    assert extract_candidate(f"<think>```python\n{CANDIDATE}```</think>{prose}") is None  # code only inside the thinking


def test_choice_rules() -> None:
    # The block with ModelNew and @triton.jit wins over later ones; without such a block, the last python block.
    assert extract_candidate(completion(CANDIDATE)) == CANDIDATE
    assert extract_candidate("```python\nx = 1\n```\ntext\n```py\ny = 2\n```\n```bash\nls\n```") == "y = 2\n"
    assert extract_candidate("```bash\nls\n```") is None
    # A bare source (no fences) defining ModelNew is taken as is.
    assert extract_candidate(CANDIDATE) == CANDIDATE.strip("\n") + "\n"
    # An unclosed thinking block hides everything after it; a stray closing tag ends the thinking.
    assert extract_candidate(f"<think>```python\n{CANDIDATE}```") is None
    assert extract_candidate(f"still thinking```python\n{WRONG}```</think>\n```python\n{CANDIDATE}```") == CANDIDATE
    assert strip_thinking("a<reasoning x='1'>b</reasoning>c") == "ac"
    # Indented fences (in a list item) are dedented.
    indented = (
        "1. the code:\n   ```python\n" + "".join(f"   {line}\n" if line else "\n" for line in CANDIDATE.splitlines()) + "   ```\n"
    )
    assert extract_candidate(indented) == CANDIDATE


def test_no_code_is_an_invalid_submission_saying_so() -> None:
    result = no_code_result()
    assert result.verdict == Verdict.invalid_submission and result.reward == 0.0
    assert "no Python code found in the completion" in result.feedback and result.error["kind"] == "invalid_submission"
