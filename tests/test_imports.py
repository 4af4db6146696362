"""Import boundaries: the harness imports only the standard library, torch, triton, numpy and
itself; the engine and the CLI never import torch (DESIGN.md, "Shape")."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "sandbox" / "harness"
HARNESS_FILES = sorted(HARNESS.glob("*.py"))
ALLOWED_THIRD_PARTY = {"torch", "triton", "numpy"}


def _imports(path: Path) -> list[tuple[int, str, int]]:
    """(level, module, line) for every import statement in the file, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((0, alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", node.lineno))
    return found


def test_the_harness_has_modules_to_check():
    names = {path.name for path in HARNESS_FILES}
    assert {"protocol.py", "tensors.py", "compare.py", "candidate.py", "reference.py", "__main__.py"} <= names


@pytest.mark.parametrize("path", HARNESS_FILES, ids=lambda p: p.name)
def test_harness_imports_only_stdlib_torch_triton_numpy_and_itself(path):
    bad = []
    for level, module, line in _imports(path):
        if level:
            if level != 1:  # `from .. import x` would reach the engine package
                bad.append(f"line {line}: relative import above the harness package (level {level})")
            continue
        top = module.split(".")[0]
        if top not in sys.stdlib_module_names and top not in ALLOWED_THIRD_PARTY:
            bad.append(f"line {line}: import {module}")
    assert not bad, f"{path.name}: " + "; ".join(bad)


def test_protocol_is_stdlib_only():
    """The parent, which never imports torch, shares protocol.py with the harness."""
    tops = {module.split(".")[0] for level, module, _ in _imports(HARNESS / "protocol.py") if not level}
    assert tops <= set(sys.stdlib_module_names), tops


def test_the_import_check_would_catch_a_project_import(tmp_path):
    offender = tmp_path / "offender.py"
    offender.write_text("from sandbox.models import Verdict\nfrom .. import evaluate\nimport pydantic\n")
    found = _imports(offender)
    assert (0, "sandbox.models", 1) in found and (2, "", 2) in found and (0, "pydantic", 3) in found
    assert "sandbox" not in sys.stdlib_module_names and "pydantic" not in sys.stdlib_module_names


def test_engine_and_cli_do_not_import_torch():
    code = (
        "import json, sys\n"
        "import service.cli, sandbox.evaluate, sandbox.process, sandbox.models\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'triton', 'numpy'))\n"
        "print(json.dumps(heavy))\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) == []


def test_the_subprocess_check_would_see_torch():
    code = "import json, sys, torch\nprint(json.dumps('torch' in sys.modules))\n"
    completed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout) is True
