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
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from sandbox.models import EvaluationResult, Verdict

THINK_TAGS = ("think", "thinking", "reasoning", "thought", "scratchpad")
_TAGS = "|".join(THINK_TAGS)
_CLOSED_THINK = re.compile(rf"<({_TAGS})\b[^>]*>.*?</\1\s*>", re.S | re.I)
_OPEN_THINK = re.compile(rf"<({_TAGS})\b[^>]*>.*\Z", re.S | re.I)
_STRAY_CLOSE = re.compile(rf"\A.*</({_TAGS})\s*>", re.S | re.I)
# An opening fence at the start of a line: ``` or ~~~ (3+), an optional info string, then the body
# up to a closing fence of the same kind and at least the same length on its own line.
_FENCE = re.compile(r"^(?P<indent>[ \t]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)^[ \t]{0,3}(?P=fence)[`~]*[ \t]*$",
                    re.S | re.M)
PYTHON_TAGS = {"", "python", "python3", "py", "triton", "pytorch", "torch", "cuda-python", "ipython"}
_MODEL_NEW = re.compile(r"^\s*class\s+ModelNew\b", re.M)
_TRITON_JIT = re.compile(r"@\s*triton\s*\.\s*(jit|autotune)\b")

NO_CODE_MESSAGE = ("no Python code found in the completion: put the whole candidate (class ModelNew and its "
                   "@triton.jit kernels) in one ```python fenced block")


@dataclass(frozen=True)
class Block:
    language: str
    code: str


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
            body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in body.split("\n"))
        blocks.append(Block(language, body))
    return blocks


def _score(block: Block) -> int:
    return 2 * bool(_MODEL_NEW.search(block.code)) + bool(_TRITON_JIT.search(block.code))


def extract_candidate(completion: str) -> str | None:
    """The candidate source in a raw completion, or None when there is none."""
    text = strip_thinking(completion.replace("\r\n", "\n"))
    blocks = [b for b in fenced_blocks(text) if b.code.strip()]
    if blocks:
        best = max(range(len(blocks)), key=lambda i: (_score(blocks[i]), i))
        if _score(blocks[best]) > 0:
            return blocks[best].code
        python = [b for b in blocks if b.language in PYTHON_TAGS]
        return python[-1].code if python else None
    if _MODEL_NEW.search(text):
        return text.strip("\n") + "\n"
    return None


def no_code_result(message: str = NO_CODE_MESSAGE) -> EvaluationResult:
    """The `invalid_submission` result for a completion without code (nothing is sent to a server)."""
    return EvaluationResult(id=f"local-{uuid.uuid4().hex[:12]}", verdict=Verdict.invalid_submission,
                            error={"kind": "invalid_submission", "message": message},
                            feedback=f"Invalid submission: {message}")
