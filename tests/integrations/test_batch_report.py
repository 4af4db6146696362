"""`referee batch` with a JSONL manifest against the embedded server (results JSONL, summary, HTML
report), and the report rendered by headless Chromium with the histogram checked in the pixels."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from tests.integrations.integration_support import CANDIDATE, CHEAT, REFERENCE, WRONG, completion
from tests.machine import chromium
from triton_referee.service.reports import BAR_COLOUR, Case, html_report, summarize
from triton_referee.worker.models import AntiCheat, EvaluationResult, Performance, Severity, StageTimings, Verdict, Violation

ROOT = Path(__file__).resolve().parents[2]
GPU_CORPUS = ROOT / "bench" / "results" / "gpu-corpus-nvidia-h100-80gb-hbm3-2026-11-25.json"


def test_batch_manifest_writes_results_summary_and_report(server_url: str, tmp_path: Path) -> None:
    (tmp_path / "double").mkdir()
    (tmp_path / "double" / "reference.py").write_text(REFERENCE)
    for name, source in (("honest", CANDIDATE), ("wrong", WRONG), ("cheat", CHEAT)):
        (tmp_path / "double" / f"{name}.py").write_text(source)
    options = {"trials": 1, "timing_sets": 1, "max_timing_seconds": 0.05}
    lines = [
        {"reference": "double/reference.py", "candidate": "double/honest.py", "expected": "correct", "options": options},
        {"reference": "double/reference.py", "candidate": "double/wrong.py", "expected": "incorrect", "options": options},
        {"reference": "double/reference.py", "candidate": "double/cheat.py", "expected": "cheating", "options": options},
        {
            "reference_source": REFERENCE,
            "problem": "double",
            "name": "from-completion",
            "completion": completion(CANDIDATE),
            "options": options,
        },
        {
            "reference_source": REFERENCE,
            "problem": "double",
            "name": "prose-only",
            "completion": "I cannot.",
            "expected": "invalid_submission",
        },
    ]
    manifest = tmp_path / "run.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "triton_referee.service.cli",
        "batch",
        str(manifest),
        "--server",
        server_url,
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    completed = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"}
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(5))
    verdicts = [EvaluationResult.model_validate(r["result"]).verdict.value for r in records]
    assert verdicts == ["correct", "incorrect", "cheating", "correct", "invalid_submission"]
    assert records[3]["name"] == "from-completion" and records[0]["candidate_path"].endswith("honest.py")

    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"] == 5
    assert summary["verdicts"]["correct"] == 2 and summary["verdicts"]["cheating"] == 1
    assert summary["fast_p"]["0"] == pytest.approx(0.4)
    assert summary["fast_p"]["1"] is None and summary["geomean_speedup"] is None  # no speedups on the CPU
    assert summary["violations_by_rule"]["no_triton_launch"] == 1
    assert "fast_0=0.400" in completed.stdout and "no_triton_launch 1" in completed.stdout

    report = (out / "report.html").read_text()
    assert report.startswith("<!DOCTYPE html>")
    assert not any(ref in report for ref in ("src=", "href=", "url(", "@import")), "the report must load nothing from outside"
    assert "from-completion" in report and "No speedups measured" in report
    table = report[report.index("<table id='results'>") :]
    table = table[: table.index("</table>") + len("</table>")]
    assert len(ET.fromstring(table).findall("tr")) == 6  # header + one row per item

    # An unexpected verdict makes the exit code 1.
    manifest.write_text(json.dumps({**lines[1], "expected": "correct"}) + "\n")
    surprised = subprocess.run(command[:-2], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert surprised.returncode == 1 and "1 candidate(s) got an unexpected verdict" in surprised.stderr


def test_batch_refuses_a_malformed_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text('{"reference": "missing.py", "candidate": "x.py"}\n')
    completed = subprocess.run(
        [sys.executable, "-m", "triton_referee.service.cli", "batch", str(manifest), "--server", "http://127.0.0.1:9"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2 and "cannot read reference" in completed.stderr


def _gpu_corpus_results() -> list[Case]:
    """The H100 corpus run (bench/results): real verdicts, rules and speedups measured on the GPU."""
    cases = []
    for row in json.loads(GPU_CORPUS.read_text()):
        correct = row["verdict"] == "correct"
        speedup = row["speedup"] if correct else None
        result = EvaluationResult(
            id=row["file"],
            verdict=Verdict(row["verdict"]),
            correct=correct,
            compiled=True,
            reward=speedup or (0.0 if correct else -1.0),
            performance=Performance(speedup=speedup, meaningful=speedup is not None),
            anti_cheat=AntiCheat(violations=[Violation(rule=r, severity=Severity.fatal, message=r) for r in row["rules"]]),
            timings_ms=StageTimings(total=row["wall_ms"]),
        )
        cases.append(Case(name=Path(row["file"]).stem, problem=str(Path(row["file"]).parent), result=result))
    return cases


def read_png(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit non-interlaced PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    idat = b""
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        body = data[position + 8 : position + 8 + length]
        if kind == b"IDAT":
            idat += body
        else:
            chunks.setdefault(kind, body)
        position += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    channels = 3 if colour == 2 else 4
    stride = width * channels
    raw = zlib.decompress(idat)
    rows, previous = [], bytearray(stride)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            corner = previous[x - channels] if x >= channels else 0
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line) if channels == 3 else bytes(b for i, b in enumerate(line) if i % 4 != 3))
        previous = line
    return width, height, rows


def test_report_histogram_renders_in_headless_chromium(tmp_path: Path) -> None:
    cases = _gpu_corpus_results()
    summary = summarize([c.result for c in cases])
    honest = sum(1 for row in json.loads(GPU_CORPUS.read_text()) if row["verdict"] == "correct" and row["speedup"])
    assert summary["speedups_measured"] == honest >= 10 and summary["geomean_speedup"] > 1.5
    assert summary["verdicts"]["cheating"] > 30 and summary["fast_p"]["2"] < summary["fast_p"]["1"] <= summary["fast_p"]["0"]
    report = tmp_path / "report.html"
    report.write_text(html_report(cases, summary, "H100 corpus"))
    screenshot = tmp_path / "shot.png"
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    try:
        completed = subprocess.run(
            [
                chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                f"--screenshot={screenshot}",
                "--window-size=1200,900",
                report.as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert screenshot.is_file(), completed.stderr[-2000:]
    width, height, rows = read_png(screenshot)
    assert (width, height) == (1200, 900)
    bar = bytes.fromhex(BAR_COLOUR.lstrip("#"))
    hits = [(y, x // 3) for y, row in enumerate(rows) for x in range(0, len(row), 3) if row[x : x + 3] == bar]
    assert len(hits) > 500, f"only {len(hits)} pixels of the bar colour {BAR_COLOUR}"
    columns = sorted({x for _, x in hits})
    gaps = sum(1 for a, b in itertools.pairwise(columns) if b - a > 1)
    assert gaps >= 2, "the histogram should show several separate bars"
