"""Raw model completions -> the candidate source.

A policy's completion is rarely just code: thinking blocks (`<think>…</think>`, `<thinking>`,
`<reasoning>`), prose, several fenced blocks (a sketch, the answer, a usage example), language
tags (```python, ```py, ```triton, none). `extract_candidate` picks the block to evaluate:

1. thinking blocks are dropped (an unclosed one swallows the rest: nothing was answered);
2. of the fenced blocks (``` or ~~~), the last one that defines `class ModelNew` and has a
   `@triton.jit` kernel; else the last defining `ModelNew`; else the last with `@triton.jit`;
   else the last python(-ish) block;
3. without fences, the text itself when it defines `ModelNew` (a bare source).

Nothing found -> `None`, and `no_code_result()` is the `invalid_submission` result to give back.
`find_candidate` also gives the character span of the chosen code (the block's body, without its
fences) in the completion as given: what a trainer needs to assign the code reward to its tokens.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from triton_referee.worker.models import EvaluationResult, Verdict
from triton_referee.worker.unjudged import unjudged_result

THINK_TAGS = ("think", "thinking", "reasoning", "thought", "scratchpad")
_TAGS = "|".join(THINK_TAGS)
_CLOSED_THINK = re.compile(rf"<({_TAGS})\b[^>]*>.*?</\1\s*>", re.S | re.I)
_OPEN_THINK = re.compile(rf"<({_TAGS})\b[^>]*>.*\Z", re.S | re.I)
_STRAY_CLOSE = re.compile(rf"\A.*</({_TAGS})\s*>", re.S | re.I)
# An opening fence at the start of a line: ``` or ~~~ (3+), an optional info string, then the body
# up to a closing fence of the same kind and at least the same length on its own line.
_FENCE = re.compile(
    r"^(?P<indent>[ \t]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)^[ \t]{0,3}(?P=fence)[`~]*[ \t]*$",
    re.S | re.M,
)
PYTHON_TAGS = {"", "python", "python3", "py", "triton", "pytorch", "torch", "cuda-python", "ipython"}
_MODEL_NEW = re.compile(r"^\s*class\s+ModelNew\b", re.M)
_TRITON_JIT = re.compile(r"@\s*triton\s*\.\s*(jit|autotune)\b")

NO_CODE_MESSAGE = (
    "no Python code found in the completion: put the whole candidate (class ModelNew and its "
    "@triton.jit kernels) in one ```python fenced block"
)


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    start: int = 0  # the body's character span in the text the block was found in
    end: int = 0


@dataclass(frozen=True)
class Candidate:
    """The source to evaluate and where it stands in the completion: `completion[start:end]` is the
    code as written (before a fence's indentation is removed or `\r\n` becomes `\n`)."""

    source: str
    start: int
    end: int


class _Cleaned:
    """The completion with parts deleted, remembering where each kept character came from."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.origin = list(range(len(text) + 1))  # origin[i]: index in the original of text[i]; last: the end

    def delete(self, pattern: re.Pattern[str]) -> None:
        kept_text: list[str] = []
        kept_origin: list[int] = []
        position = 0
        for match in pattern.finditer(self.text):
            kept_text.append(self.text[position : match.start()])
            kept_origin.extend(self.origin[position : match.start()])
            position = match.end()
        kept_text.append(self.text[position:])
        kept_origin.extend(self.origin[position:])
        self.text = "".join(kept_text)
        self.origin = [*kept_origin, self.origin[-1]]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original span of text[start:end] (its first kept character to its last)."""
        if end <= start:
            return self.origin[start], self.origin[start]
        return self.origin[start], self.origin[end - 1] + 1


_CARRIAGE_RETURN = re.compile(r"\r(?=\n)")


def _cleaned(completion: str) -> _Cleaned:
    cleaned = _Cleaned(completion)
    cleaned.delete(_CARRIAGE_RETURN)
    cleaned.delete(_CLOSED_THINK)
    cleaned.delete(_STRAY_CLOSE)  # a template that put the opening tag in the prompt
    cleaned.delete(_OPEN_THINK)
    return cleaned


def strip_thinking(text: str) -> str:
    text = _CLOSED_THINK.sub("", text)
    text = _STRAY_CLOSE.sub("", text)  # a template that put the opening tag in the prompt
    return _OPEN_THINK.sub("", text)


def fenced_blocks(text: str) -> list[Block]:
    blocks = []
    for match in _FENCE.finditer(text):
        info = match.group("info").strip().split()
        language = info[0].lower().lstrip("{.").rstrip("}") if info else ""
        body = match.group("body")
        indent = match.group("indent")
        if indent:
            body = "\n".join(line[len(indent) :] if line.startswith(indent) else line for line in body.split("\n"))
        blocks.append(Block(language, body, match.start("body"), match.end("body")))
    return blocks


def _score(block: Block) -> int:
    return 2 * bool(_MODEL_NEW.search(block.code)) + bool(_TRITON_JIT.search(block.code))


def find_candidate(completion: str) -> Candidate | None:
    """The candidate in a raw completion and its character span there, or None when there is none."""
    cleaned = _cleaned(completion)
    text = cleaned.text
    blocks = [b for b in fenced_blocks(text) if b.code.strip()]
    chosen: Block | None = None
    if blocks:
        best = max(range(len(blocks)), key=lambda i: (_score(blocks[i]), i))
        if _score(blocks[best]) > 0:
            chosen = blocks[best]
        else:
            python = [b for b in blocks if b.language in PYTHON_TAGS]
            chosen = python[-1] if python else None
        return Candidate(chosen.code, *cleaned.span(chosen.start, chosen.end)) if chosen else None
    if _MODEL_NEW.search(text):
        stripped = text.strip("\n")
        start = text.index(stripped)
        return Candidate(stripped + "\n", *cleaned.span(start, start + len(stripped)))
    return None


def extract_candidate(completion: str) -> str | None:
    """The candidate source in a raw completion, or None when there is none."""
    candidate = find_candidate(completion)
    return candidate.source if candidate else None


_MODEL = re.compile(r"^\s*class\s+Model\s*\(", re.M)


def reference_in_prompt(prompt: str | None) -> str | None:
    """The last fenced block of a prompt that defines `class Model` with `get_inputs` (KernelBench
    prompts quote the reference so), or None."""
    for block in reversed(fenced_blocks(prompt or "")):
        if _MODEL.search(block.code) and "get_inputs" in block.code:
            return block.code
    return None


def no_code_result(message: str = NO_CODE_MESSAGE) -> EvaluationResult:
    """The `invalid_submission` result for a completion without code (nothing is sent to a server)."""
    return unjudged_result(f"local-{uuid.uuid4().hex[:12]}", Verdict.invalid_submission, message)
