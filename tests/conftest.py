"""Shared fixtures for the engine tests.

Every evaluation starts two Python processes that import torch (2-4 s on the CPU), so the suite
keeps their number small: tiny problems, `trials=2`, and a session cache for results that several
tests inspect. Everything runs for real (Triton's interpreter on the CPU); nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# The engine picks the harness interpreter from this variable; the suite must use its own python.
os.environ.pop("REFEREE_HARNESS_PYTHON", None)

# `make test` hands pytest-xdist's workers one test file at a time, in collection order. These folders
# hold the files that take minutes (every isolation backend, the compose stack): first, so that neither
# worker idles at the end while the other is still in one of them.
SLOW_FOLDERS_FIRST = ("tests/security/", "tests/deploy/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: not item.path.relative_to(ROOT).as_posix().startswith(SLOW_FOLDERS_FIRST))


# A 1-D ReLU problem small enough for the interpreter to run in milliseconds. `n` is read only by
# get_inputs, so the engine derives three input sets: n=1000, n=250 and n=501.
TINY_REFERENCE = textwrap.dedent(
    """
    import torch
    import torch.nn as nn


    class Model(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, x):
            return torch.relu(x)


    n = 1000


    def get_inputs():
        return [torch.randn(n)]


    def get_init_inputs():
        return []
    """
)

# Header and kernel shared by the tiny candidates; a test appends `class ModelNew` (and anything
# else it needs) with `tiny_candidate(forward_body)`.
TINY_KERNEL = textwrap.dedent(
    """
    import os
    import sys

    import torch
    import torch.nn as nn
    import triton
    import triton.language as tl


    @triton.jit
    def relu_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0)
        tl.store(out_ptr + offs, tl.where(x > 0, x, 0.0), mask=mask)


    def launch_relu(x, out):
        n = x.numel()
        relu_kernel[(triton.cdiv(n, 1024),)](x, out, n, BLOCK=1024)
        return out
    """
)


def tiny_candidate(forward_body: str, prelude: str = "") -> str:
    """The tiny kernel plus `prelude` (module level) and a ModelNew whose forward(x) is `forward_body`."""
    body = textwrap.indent(textwrap.dedent(forward_body).strip(), " " * 8)
    return (
        TINY_KERNEL
        + textwrap.dedent(prelude)
        + "\n\nclass ModelNew(nn.Module):\n    def __init__(self):\n        super().__init__()\n\n"
        + "    def forward(self, x):\n"
        + body
        + "\n"
    )


HONEST_TINY_CANDIDATE = tiny_candidate(
    """
    x = x.contiguous()
    return launch_relu(x, torch.empty_like(x))
    """
)


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def tiny_reference() -> str:
    return TINY_REFERENCE


@pytest.fixture(scope="session")
def honest_tiny_candidate() -> str:
    return HONEST_TINY_CANDIDATE


@pytest.fixture(scope="session")
def make_tiny_candidate() -> Callable[..., str]:
    return tiny_candidate


def _run_check(
    reference: Path | str, candidate: Path | str, *extra_args: str, env: dict[str, str] | None = None, timeout: float = 180
) -> tuple[int, str, str]:
    """Run `referee check REFERENCE CANDIDATE --device cpu EXTRA...`; return (exit code, stdout, stderr)."""
    command = [
        sys.executable,
        "-m",
        "triton_referee.service.cli",
        "check",
        str(reference),
        str(candidate),
        "--device",
        "cpu",
        *extra_args,
    ]
    completed = subprocess.run(
        command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout
    )
    return completed.returncode, completed.stdout, completed.stderr


@pytest.fixture(scope="session")
def run_check() -> Callable[..., tuple[int, str, str]]:
    return _run_check


@pytest.fixture
def write_pair(tmp_path: Path) -> Callable[..., tuple[Path, Path]]:
    """Write a reference/candidate pair (str or bytes) to tmp_path; return their paths."""

    def write(reference: str | bytes, candidate: str | bytes, name: str = "case") -> tuple[Path, Path]:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        paths = folder / "reference.py", folder / "candidate.py"
        for path, content in zip(paths, (reference, candidate), strict=True):
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return paths

    return write


@pytest.fixture(scope="session")
def evaluate_source() -> Callable[..., Any]:
    """evaluate(Problem, Submission, EvalConfig(device="cpu", trials=2, **config)) in-process, cached
    per (reference, candidate, config) for the session: several tests read the same result."""
    from triton_referee.worker.evaluate import evaluate
    from triton_referee.worker.models import EvalConfig, Problem, Submission

    cache: dict[tuple[str, str, str], Any] = {}

    def run(reference: str, candidate: str, *, python: str | None = None, cache_result: bool = True, **config: Any) -> Any:
        settings = {"device": "cpu", "trials": 2, **config}
        key = (reference, candidate, repr(sorted(settings.items())) + repr(python))
        if cache_result and key in cache:
            return cache[key]
        result = evaluate(Problem(source=reference), Submission(source=candidate), EvalConfig(**settings), python=python)
        if cache_result:
            cache[key] = result
        return result

    return run


@pytest.fixture(scope="session")
def relu_correct_result(evaluate_source: Callable[..., Any]) -> Any:
    """The honest examples/relu candidate, evaluated once for the session."""
    return evaluate_source((EXAMPLES / "relu" / "reference.py").read_text(), (EXAMPLES / "relu" / "candidate.py").read_text())


def _lacks_torch(python: str) -> bool:
    try:
        probe = subprocess.run([python, "-I", "-c", "import torch"], capture_output=True, timeout=60)
    except OSError:
        return False
    return probe.returncode != 0 and b"torch" in probe.stderr


@pytest.fixture(scope="session")
def python_without_torch(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A working Python interpreter that cannot import torch (a system one, or a fresh bare venv)."""
    for python in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if Path(python).is_file() and _lacks_torch(python):
            return python
    venv = tmp_path_factory.mktemp("bare-venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    assert _lacks_torch(python), "a fresh venv without packages should not import torch"
    return python


@pytest.fixture(scope="session")
def redis_binary() -> str:
    """redis-server, installed when missing (tests/machine.py)."""
    from tests.machine import redis_server

    return redis_server()


@pytest.fixture(scope="session")
def warm_pool() -> Any:
    """A real warm pool (zygote with torch and triton imported) for the tests that evaluate many
    candidates: the production path, and a fraction of the cost of fresh processes."""
    from triton_referee.worker.pool import WarmPool

    with WarmPool("cpu", spares=2) as pool:
        yield pool.client
