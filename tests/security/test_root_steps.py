"""The sandbox root's binds: a runtime path inside a directory already bound (CUDA_HOME as a
symlink under /usr, as on the GPU hosts) is not bound again. Found on an H100 host, where it made
every unshare start fail with FileExistsError."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from triton_referee.sandbox.isolation import Limits, UnshareIsolation, root_steps
from triton_referee.worker.evaluate import evaluate
from triton_referee.worker.models import EvalConfig, Problem, Submission, Verdict

from ..tiny_problem import CANDIDATE, REFERENCE


@pytest.fixture
def cuda_home_symlink(monkeypatch: pytest.MonkeyPatch) -> str:
    link = Path("/usr/local") / f"referee-test-cuda-{os.getpid()}"
    link.symlink_to("/usr/local/lib")
    monkeypatch.setenv("CUDA_HOME", str(link))
    yield str(link)
    link.unlink()


def test_paths_under_a_bound_directory_are_not_bound_again(cuda_home_symlink: str, tmp_path: Path) -> None:
    targets = [step[2] for step in root_steps(sys.executable, tmp_path, "cpu", Limits()) if step[0] == "ro"]
    assert "/usr" in targets
    assert cuda_home_symlink not in targets


def test_unshare_starts_with_cuda_home_a_symlink_under_usr(cuda_home_symlink: str) -> None:
    result = evaluate(
        Problem(source=REFERENCE), Submission(source=CANDIDATE), EvalConfig(device="cpu", trials=1), isolation=UnshareIsolation()
    )
    assert result.verdict == Verdict.correct, result.error


def test_the_private_tmp_comes_before_binds_below_it(tmp_path: Path) -> None:
    """A checkout or virtualenv under /tmp (CI clones there) is bound on top of the private /tmp,
    not hidden by it."""
    steps = root_steps(sys.executable, tmp_path / "job", "cpu", Limits())
    mounts = [step[2] if step[0] == "ro" else step[1] for step in steps if step[0] in ("ro", "tmpfs")]
    assert mounts[0] == "/tmp"
    assert mounts.count("/tmp") == 1
