"""`referee check-kernels` (what the pre-commit hook and the GitHub Action run), the action's
changed-kernel discovery run as the runner would (bash, a real git repository), and the hook file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from tests.integrations.integration_support import CANDIDATE, REFERENCE, WRONG

ROOT = Path(__file__).resolve().parents[2]


def _kernels(tmp_path: Path) -> Path:
    for name, candidate in (("double", CANDIDATE), ("double_wrong", WRONG)):
        folder = tmp_path / "kernels" / name
        folder.mkdir(parents=True)
        (folder / "reference.py").write_text(REFERENCE)
        (folder / "candidate.py").write_text(candidate)
    (tmp_path / "kernels" / "orphan").mkdir()
    (tmp_path / "kernels" / "orphan" / "candidate.py").write_text(CANDIDATE)
    return tmp_path / "kernels"


def test_check_kernels_checks_each_candidate_against_its_reference(tmp_path: Path) -> None:
    kernels = _kernels(tmp_path)
    junit = tmp_path / "junit.xml"
    files = [
        kernels / "double" / "candidate.py",
        kernels / "double_wrong" / "candidate.py",
        kernels / "orphan" / "candidate.py",
        kernels / "double" / "reference.py",
    ]
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "triton_referee.service.cli",
            "check-kernels",
            *map(str, files),
            "--trials",
            "1",
            "--device",
            "cpu",
            "--format",
            "github",
            "--junit",
            str(junit),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert f"skipped {files[2]}: no reference.py beside it" in completed.stderr.replace("\n", "")
    assert "checked 2 candidate(s): 1 correct" in completed.stderr
    lines = completed.stdout.splitlines()
    assert lines[0].startswith(f"::notice file={files[0]}")
    assert any(line.startswith(f"::error file={files[1]},line=") and "incorrect" in line for line in lines)
    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    assert [c.get("classname") for c in suite.findall("testcase")] == ["double", "double_wrong"]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        },
    ).stdout.strip()


def _run_step(step: dict, repo: Path, env: dict[str, str], output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env, "GITHUB_OUTPUT": str(output)},
    )


def test_action_finds_changed_kernels_with_references(tmp_path: Path) -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    steps = {step.get("id"): step for step in action["runs"]["steps"]}
    assert all(step.get("shell") == "bash" for step in action["runs"]["steps"] if "run" in step)
    assert "referee check-kernels" in steps["check"]["run"] and "--format github" in steps["check"]["run"]
    assert "${{" not in steps["changed"]["run"] + steps["check"]["run"], "inputs reach scripts through env only (no injection)"

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    _kernels(repo)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    base = _git(repo, "rev-parse", "HEAD")
    (repo / "kernels" / "double_wrong" / "candidate.py").write_text(WRONG + "\n# faster\n")
    (repo / "kernels" / "double" / "reference.py").write_text(REFERENCE + "\n")  # a reference is not a candidate
    (repo / "README.md").write_text("x\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "change")
    inputs = {name: str(spec.get("default", "")) for name, spec in action["inputs"].items()}
    env = {"KERNELS": inputs["kernels"], "REFERENCE_NAME": inputs["reference-name"], "ALL": "false", "BASE": base}

    output = tmp_path / "out1"
    completed = _run_step(steps["changed"], repo, env, output)
    assert completed.returncode == 0, completed.stderr
    assert (repo / "referee-kernels.txt").read_text() == "kernels/double_wrong/candidate.py\n"
    assert output.read_text() == "count=1\n"

    output = tmp_path / "out2"  # every candidate with a reference beside it (the orphan has none)
    completed = _run_step(steps["changed"], repo, {**env, "ALL": "true"}, output)
    assert completed.returncode == 0, completed.stderr
    assert (repo / "referee-kernels.txt").read_text() == "kernels/double/candidate.py\nkernels/double_wrong/candidate.py\n"
    output = tmp_path / "out3"  # a first push: `before` is all zeros
    completed = _run_step(steps["changed"], repo, {**env, "BASE": "0" * 40}, output)
    assert output.read_text() == "count=2\n"


def test_pre_commit_hook_definition() -> None:
    (hook,) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "referee-check" and hook["language"] == "python" and hook["pass_filenames"] is True
    assert hook["entry"].split()[:2] == ["referee", "check-kernels"]
    files = re.compile(hook["files"])
    assert files.search("kernels/relu/candidate.py") and files.search("candidate_fast.py")
    assert not files.search("kernels/relu/reference.py") and not files.search("kernels/candidate/helper.py")
