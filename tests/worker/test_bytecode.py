"""Harness processes write no bytecode. They start with `-I`, which ignores PYTHONDONTWRITEBYTECODE,
and a .pyc written into a library tree is a write the audit hook refuses: on a GPU host whose torch
had no cached bytecode for `torch.utils.cpp_extension`, an honest candidate importing it was judged
`cheating` (forbidden_call on the os.rename of the new .pyc). Both ways a candidate process starts:
fresh, and forked by the warm pool's zygote."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tiny_problem import CANDIDATE, REFERENCE
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict
from triton_referee.worker.pool import PoolClient, WarmPool

REPORTING = CANDIDATE.replace(
    "import torch\n",
    "import sys\nprint('dont_write_bytecode', sys.flags.dont_write_bytecode, sys.dont_write_bytecode)\nimport torch\n",
    1,
)


@pytest.fixture(scope="module")
def pool() -> Iterator[PoolClient]:
    with WarmPool("cpu", spares=1) as warm:
        yield warm.client


@pytest.mark.parametrize("pooled", [False, True], ids=["fresh", "warm_pool"])
def test_candidate_processes_never_write_bytecode(pooled: bool, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue("pool") if pooled else None
    result = evaluate(Problem(source=REFERENCE), Submission(source=REPORTING), EvalConfig(device="cpu", trials=1), pool=client)
    assert result.verdict == Verdict.correct, (result.verdict, result.feedback)
    assert "dont_write_bytecode 1 True" in result.output["stdout"], result.output
