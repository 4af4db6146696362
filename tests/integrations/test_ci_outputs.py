"""`referee check --junit FILE` and `--format github`, run as the CI would: the real command line."""

from __future__ import annotations

import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.integrations.integration_support import CANDIDATE, CHEAT, COMPILE_ERROR, REFERENCE
from triton_referee.service.reports import Case, github_annotations, junit_xml
from triton_referee.worker.models import EvaluationResult, Verdict

ROOT = Path(__file__).resolve().parents[2]
ANNOTATION = re.compile(
    r"^::(error|warning|notice) file=(?P<file>[^,:]+)(,line=(?P<line>\d+))?(,title=(?P<title>[^:]*))?::(?P<message>.*)$"
)


def _check(tmp_path: Path, candidate: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    (tmp_path / "reference.py").write_text(REFERENCE)
    path = tmp_path / "candidate.py"
    path.write_text(candidate)
    command = [
        sys.executable,
        "-m",
        "triton_referee.service.cli",
        "check",
        str(tmp_path / "reference.py"),
        str(path),
        "--device",
        "cpu",
        "--trials",
        "1",
        *args,
    ]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240), path


def _junit(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return suites[0]


def test_compile_error_gives_a_junit_failure_and_an_annotation_on_the_kernel_line(tmp_path: Path) -> None:
    junit = tmp_path / "report.xml"
    completed, candidate = _check(tmp_path, COMPILE_ERROR, "--junit", str(junit), "--format", "github")
    assert completed.returncode == 1, completed.stderr
    suite = _junit(junit)
    assert suite.get("tests") == "1" and suite.get("failures") == "1" and suite.get("errors") == "0"
    (case,) = suite.findall("testcase")
    assert case.get("name") == str(candidate) and float(case.get("time")) > 0
    failure = case.find("failure")
    assert failure is not None and failure.get("type") == "compile_error" and "scale" in failure.text
    assert case.find("system-out") is not None
    assert EvaluationResult.model_validate_json(case.find("system-out").text).verdict == Verdict.compile_error

    annotations = [ANNOTATION.match(line) for line in completed.stdout.splitlines()]
    assert annotations and all(annotations), completed.stdout
    kernel_line = next(i for i, line in enumerate(COMPILE_ERROR.splitlines(), 1) if "* scale" in line)
    assert {int(a["line"]) for a in annotations} >= {kernel_line}
    first = annotations[0]
    assert first.group(1) == "error" and first["file"] == str(candidate) and first["title"] == "referee%3A compile_error"
    assert "\n" not in first["message"] and "%0A" in first["message"]  # multi-line feedback escaped as the runner wants


def test_correct_candidate_passes_the_junit_suite(tmp_path: Path) -> None:
    junit = tmp_path / "report.xml"
    completed, _ = _check(tmp_path, CANDIDATE, "--junit", str(junit), "--format", "github")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    suite = _junit(junit)
    assert suite.get("failures") == "0" and suite.get("errors") == "0"
    (case,) = suite.findall("testcase")
    assert case.find("failure") is None and case.find("error") is None
    assert {p.get("name"): p.get("value") for p in case.iter("property")}["verdict"] == "correct"
    assert completed.stdout.startswith("::notice file=")


def test_a_fired_rule_is_annotated_on_the_line_that_does_the_work(tmp_path: Path) -> None:
    completed, _ = _check(tmp_path, CHEAT, "--format", "github")
    assert completed.returncode == 1
    annotations = [ANNOTATION.match(line) for line in completed.stdout.splitlines()]
    assert annotations and all(annotations), completed.stdout
    torch_line = next(i for i, line in enumerate(CHEAT.splitlines(), 1) if "return x * 2" in line)
    assert "no_triton_launch" in annotations[0]["title"]
    # `x * 2` dispatches aten::mul, which the source spells `*`: the annotation goes on forward's return.
    assert [int(a["line"]) for a in annotations] == [torch_line]
    assert "torch ops seen in forward: mul x1" in annotations[0]["message"]


def test_junit_for_several_cases_and_escaping() -> None:
    results = [
        EvaluationResult(id="a", verdict=Verdict.correct, feedback="ok"),
        EvaluationResult(id="b", verdict=Verdict.infrastructure_error, feedback='broke <&> "here"'),
        EvaluationResult(id="c", verdict=Verdict.timeout, feedback="slow"),
    ]
    xml = junit_xml([Case(name=f"k{i}", problem="p", result=r) for i, r in enumerate(results)])
    suite = ET.fromstring(xml.encode()).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "1", "1")
    assert suite.findall("testcase")[1].find("error").text == 'broke <&> "here"'
    line = github_annotations(EvaluationResult(id="d", verdict=Verdict.timeout, feedback="100% stuck,\nline two"), "a,b:c.py")[0]
    assert line == "::error file=a%2Cb%3Ac.py,line=1,title=referee%3A timeout::100%25 stuck,%0Aline two"
