"""What KernelBench users and CI logs get from the CLI (issue 19, items 6 and 8): `referee batch` on a
KernelBench run folder as KernelBench writes it, pass@k and fast_p over several samples per problem,
errors that name the folder that is missing, `--device cuda` without a GPU, `check-kernels` running
candidates at once, and tables that keep their names in a log.

The KernelBench-shaped fixtures are made here (a `level1/` dataset folder with `N_Name.py` problems
and a run folder of `level_1_problem_N_sample_K_kernel.py` files); everything runs for real on the
CPU (an embedded server started by `referee batch --embedded`, Triton's interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.tiny_problem import CANDIDATE_TEMPLATE, REFERENCE
from triton_referee.service.reports import pass_at_k, summarize
from triton_referee.worker.evaluate import detect_device
from triton_referee.worker.models import EvaluationResult, Verdict

ROOT = Path(__file__).resolve().parents[2]
HONEST = CANDIDATE_TEMPLATE.replace("FACTOR", "2")
WRONG = CANDIDATE_TEMPLATE.replace("FACTOR", "3")
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("REFEREE_") and k != "COLUMNS"}}


def _referee(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triton_referee.service.cli", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def kernelbench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """level1/ with problems 3 and 19; a run folder with three samples of 19 (two correct) and one of 3."""
    root = tmp_path_factory.mktemp("kernelbench")
    level, run = root / "KernelBench" / "level1", root / "runs" / "my_model"
    level.mkdir(parents=True)
    run.mkdir(parents=True)
    (level / "19_Double.py").write_text(REFERENCE)
    (level / "3_Double_again.py").write_text(REFERENCE)
    (level / "42_Unsampled.py").write_text(REFERENCE)
    for sample, source in enumerate((HONEST, WRONG, HONEST)):
        (run / f"level_1_problem_19_sample_{sample}_kernel.py").write_text(source)
    (run / "level_1_problem_3_sample_0_kernel.py").write_text(WRONG)
    (run / "level_2_problem_19_sample_0_kernel.py").write_text(HONEST)  # another level: not level 1's problem 19
    return level, run


@pytest.fixture(scope="module")
def scored(
    kernelbench_run: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path]:
    level, run = kernelbench_run
    out = tmp_path_factory.mktemp("report")
    completed = _referee(
        "batch", str(run), "--kernelbench-level", str(level), "--embedded", "--device", "cpu", "--trials", "1", "--out", str(out)
    )
    return completed, out


def test_a_kernelbench_run_folder_is_scored_as_kernelbench_wrote_it(
    scored: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    completed, out = scored
    assert completed.returncode == 0, completed.stdout + completed.stderr
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    found = [(line["problem"], line["name"], line["result"]["verdict"]) for line in lines]
    # Numeric problem order, samples in order, level 2's file left alone, the unsampled problem absent.
    assert found == [
        ("3_Double_again", "sample_0", "incorrect"),
        ("19_Double", "sample_0", "correct"),
        ("19_Double", "sample_1", "incorrect"),
        ("19_Double", "sample_2", "correct"),
    ]
    assert all(line["candidate_path"].endswith("_kernel.py") and "/level_1_" in line["candidate_path"] for line in lines)


def test_the_summary_has_pass_at_k_and_best_sample_fast_p(scored: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    completed, out = scored
    summary = json.loads((out / "summary.json").read_text())
    per_problem = summary["per_problem"]
    assert (per_problem["problems"], per_problem["samples_min"], per_problem["samples_max"]) == (2, 1, 3)
    # Problem 3: 0 of 1 correct; problem 19: 2 of 3 -> pass@1 = (0 + 2/3) / 2.
    assert per_problem["pass_at_k"] == {"1": pytest.approx(1 / 3)}
    assert per_problem["fast_p"]["0"] == 0.5 and per_problem["fast_p"]["1"] is None  # no speedups on the CPU
    assert summary["fast_p"]["0"] == 0.5  # over items: 2 of 4
    assert "pass@1=0.333" in completed.stdout and "best sample per problem: fast_0=0.500" in completed.stdout
    assert "pass@1: 0.333" in (out / "report.html").read_text()


def test_pass_at_k_is_the_unbiased_estimator() -> None:
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(4, 3, 2) == 1.0  # fewer wrong samples than k: a draw of 2 always holds a correct one

    def result(verdict: Verdict) -> EvaluationResult:
        return EvaluationResult(id="x", verdict=verdict)

    summary = summarize(
        [result(Verdict.correct), result(Verdict.incorrect), result(Verdict.incorrect)] * 2, ["a", "a", "a", "b", "b", "b"]
    )
    assert summary["per_problem"]["pass_at_k"] == {"1": pytest.approx(1 / 3), "3": 1.0}


def test_missing_folders_are_named(kernelbench_run: tuple[Path, Path], tmp_path: Path) -> None:
    level, run = kernelbench_run
    missing = _referee("batch", str(level), "--candidates", str(tmp_path / "no-such-run"), "--server", "http://127.0.0.1:9")
    assert missing.returncode == 2
    assert f"candidates folder {tmp_path / 'no-such-run'} does not exist" in " ".join(missing.stderr.split())
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "level_1_problem_77_sample_0_kernel.py").write_text(HONEST)  # a problem the level does not have
    nothing = _referee("batch", str(empty), "--kernelbench-level", str(level), "--server", "http://127.0.0.1:9")
    assert nothing.returncode == 2
    message = " ".join(nothing.stderr.split())
    assert f"candidates folder {empty} has no candidate for any of the 3 problems in {level}" in message
    assert "level_1_problem_N_sample_K_kernel.py" in message
    no_problems = _referee("batch", str(run), "--kernelbench-level", str(tmp_path / "nowhere"), "--server", "http://127.0.0.1:9")
    assert no_problems.returncode == 2 and "problems folder" in no_problems.stderr and "nowhere" in no_problems.stderr


def test_device_cuda_without_a_gpu_is_a_usage_error(tmp_path: Path) -> None:
    assert detect_device() == "cpu", "this test is for machines without an NVIDIA GPU"
    (tmp_path / "reference.py").write_text(REFERENCE)
    (tmp_path / "candidate.py").write_text(HONEST)
    for command in (
        ["check", str(tmp_path / "reference.py"), str(tmp_path / "candidate.py")],
        ["check-kernels", str(tmp_path / "candidate.py")],
    ):
        completed = _referee(*command, "--device", "cuda", timeout=60)
        assert completed.returncode == 2, completed.stdout + completed.stderr
        assert "no NVIDIA GPU" in completed.stderr


def _harness_processes(root: int) -> int:
    """Candidate and reference harness processes under ROOT now."""
    children: dict[int, list[int]] = {}
    command: dict[int, bytes] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    command[int(entry)] = handle.read()
            except OSError:
                continue
            children.setdefault(parent, []).append(int(entry))
    count, stack = 0, [root]
    while stack:
        pid = stack.pop()
        count += b"\0--role\0" in command.get(pid, b"")
        stack.extend(children.get(pid, []))
    return count


def test_check_kernels_runs_candidates_at_once_and_keeps_names_in_logs(tmp_path: Path) -> None:
    files = []
    for index in range(2):
        folder = tmp_path / f"problem_with_a_rather_long_folder_name_{index}"
        folder.mkdir()
        (folder / "reference.py").write_text(REFERENCE)
        name = folder / f"candidate_with_a_long_descriptive_file_name_number_{index}.py"
        name.write_text(HONEST if index == 0 else WRONG)
        files.append(name)
    process = subprocess.Popen(
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
            "--jobs",
            "2",
            "--isolation",
            "process",
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    most = 0

    def watch() -> None:
        nonlocal most
        while process.poll() is None:
            most = max(most, _harness_processes(process.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    stdout, stderr = process.communicate(timeout=300)
    watcher.join()
    assert process.returncode == 1, stdout + stderr
    assert "checked 2 candidate(s): 1 correct" in stderr
    assert most == 4, f"at most {most} harness processes at once: the two evaluations did not overlap"
    # Output is not a terminal: whole paths on one line each, in the order given, not cut to 80 columns.
    assert stdout.index(str(files[0])) < stdout.index(str(files[1]))
    assert all(len(line) <= 240 for line in stdout.splitlines()) and any(len(line) > 80 for line in stdout.splitlines())
