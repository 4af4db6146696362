"""The documentation stays true to the repository: every repository path that README.md and docs/*.md
cite exists, every relative link resolves, nothing points outside the repository, and the README
starts with the two commands that work on a fresh machine (`make demo`, `make test`)."""

from __future__ import annotations

import fnmatch
import glob
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# Single-name spans that look like files but name something outside this repository on purpose.
NOT_REPOSITORY_FILES = {
    "level_1_problem_19_sample_0_kernel.py": "KernelBench's naming of a generated sample",
    "level_L_problem_N_sample_K_kernel.py": "KernelBench's naming pattern",
    "N_Name.py": "KernelBench's naming of problem N",
}
# Where a file named in a document lives: an earlier project layout kept design notes outside the
# repository; a user's clone has none of them.
OUTSIDE_REFERENCES = ("../shared", "/work/", "DESIGN" + ".md", "ANTICHEAT" + ".md", "NEWS" + ".md")

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
# A code span, as CommonMark reads it: a run of backticks up to the next run of the same length,
# possibly across a line break (never a blank line).
INLINE = re.compile(r"(?<!`)(`+)(?!`)((?:(?!\n\s*\n).)+?)(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$", re.M)
FILE_SUFFIXES = (".py", ".md", ".yaml")


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [line for line in listed.stdout.splitlines() if (ROOT / line).exists()]


def top_level_names(files: list[str]) -> set[str]:
    return {name.split("/", 1)[0] for name in files}


def _expand_braces(token: str) -> list[str]:
    match = re.search(r"\{([^{}]*,[^{}]*)\}", token)
    if not match:
        return [token]
    head, tail = token[: match.start()], token[match.end() :]
    return [expanded for part in match.group(1).split(",") for expanded in _expand_braces(head + part + tail)]


def _exists(path: str, root: Path) -> bool:
    path = path.replace("…", "*")
    if any(char in path for char in "*?["):
        return bool(glob.glob(str(root / path), recursive=True))
    return (root / path).exists()


def cited_paths(text: str, top_level: set[str]) -> list[tuple[str, bool]]:
    """(path, bare) for every span that names a repository path: a token whose first component is a
    top-level entry of the repository (inline code and fenced blocks alike), or an inline span that
    is one bare file name ending in .py, .md or .yaml (`bare`: found by its name anywhere)."""
    found: list[tuple[str, bool]] = []
    spans = [(block.group(0), False) for block in FENCE.finditer(text)]
    spans += [(match.group(2), True) for match in INLINE.finditer(FENCE.sub("", text))]
    for span, inline in spans:
        tokens = span.split()
        for raw in tokens:
            token = raw.strip("\"'(),;:[]<>").split("::", 1)[0].rstrip(".")
            if "://" in token or token.startswith(("/", "-", "$", "~")):
                continue
            first = token.split("/", 1)[0]
            if "/" in token and first in top_level:
                found.extend((path, False) for path in _expand_braces(token))
            elif inline and len(tokens) == 1 and "/" not in token and token.endswith(FILE_SUFFIXES):
                found.append((token, True))
    return found


def missing_paths(text: str, files: list[str], root: Path = ROOT) -> list[str]:
    names = {Path(name).name for name in files}
    missing = []
    for path, bare in cited_paths(text, top_level_names(files)):
        if bare:
            placeholder = Path(path).stem.isupper()  # REFERENCE.py, CAND.py: a name the reader picks
            if not (placeholder or path in NOT_REPOSITORY_FILES or fnmatch.filter(names, path)):
                missing.append(path)
        elif not _exists(path, root):
            missing.append(path)
    return missing


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def broken_links(document: Path, text: str) -> list[str]:
    broken = []
    for target in LINK.findall(FENCE.sub("", text)):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md":
            anchors = {_slug(heading) for heading in HEADING.findall(FENCE.sub("", resolved.read_text()))}
            if anchor not in anchors:
                broken.append(target)
    return broken


@pytest.fixture(scope="module")
def files() -> list[str]:
    return tracked_files()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_cited_repository_path_exists(document: Path, files: list[str]) -> None:
    text = document.read_text()
    assert cited_paths(text, top_level_names(files)), "the check found no paths at all: the parser is broken"
    assert missing_paths(text, files) == []


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(document: Path) -> None:
    assert broken_links(document, document.read_text()) == []


def test_the_path_check_catches_what_is_missing(files: list[str], tmp_path: Path) -> None:
    text = (
        "The engine is `worker/evaluate.py`; the old one was `sandbox/evaluate.py`.\n"
        "```\nbash bench/gpu_session.sh && python3 bench/no_such_benchmark.py --out DIR\n```\n"
        "See `compare.py`, `no_such_module.py`, `REFERENCE.py` and `docs/{design,nowhere}.md`; run `bash\n"
        "bench/gone.sh --fast` (``a `quoted` tests/nothing.py``).\n"
        "Elsewhere: `/usr/lib`, `POST /v1/evaluations`, `KernelBench/level1`, `pkg://triton_referee.service.integrations.verl`.\n"
    )
    assert sorted(missing_paths(text, files)) == [
        "bench/gone.sh",
        "bench/no_such_benchmark.py",
        "docs/nowhere.md",
        "no_such_module.py",
        "sandbox/evaluate.py",
        "tests/nothing.py",
    ]
    document = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# A heading\n")
    links = "[a](other.md) [b](other.md#a-heading) [c](other.md#no-heading) [d](gone.md) [e](https://example.org)"
    assert broken_links(document, links) == ["other.md#no-heading", "gone.md"]


@pytest.mark.parametrize(
    "path", [*DOCUMENTS, *sorted((ROOT / "tests").rglob("*.py"))], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_nothing_points_outside_the_repository(path: Path) -> None:
    if path == Path(__file__).resolve():
        return
    text = path.read_text(errors="replace")
    assert [name for name in OUTSIDE_REFERENCES if name in text] == []


def test_the_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    before_first_section = readme.split("\n## ", 1)[0]
    block = FENCE.search(before_first_section)
    assert block, "the README's first lines must be a code block with the two commands"
    commands = [line.split("#", 1)[0].strip() for line in block.group(0).splitlines()[1:-1] if line.strip()]
    assert commands[:2] == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
