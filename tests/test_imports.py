"""Import boundaries (docs/design.md, "Layout"): imports flow service -> worker -> sandbox; the
in-box harness imports only the standard library, torch, triton, numpy and itself; the judge and
the command line never import torch; no package has import cycles. The rules are import-linter
contracts in pyproject.toml, checked here and by `make test`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.installed_layout import lint_imports

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "worker", "sandbox")


def test_the_import_contracts_hold():
    """On the package as installed (triton_referee.service, ...): tests/installed_layout.py."""
    completed = lint_imports(ROOT)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "4 kept, 0 broken" in completed.stdout


def _contracts_config() -> str:
    """The [tool.importlinter] tables of this project's pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.importlinter]")
    end = text.index("[tool.pytest.ini_options]")
    return text[start:end]


def test_the_contracts_would_catch_each_kind_of_offence(tmp_path):
    """A copy of the contracts, run on a small checkout that breaks each of them once."""
    files = {
        "triton_referee/__init__.py": (ROOT / "triton_referee" / "__init__.py").read_text(),
        "service/__init__.py": "",
        "service/api.py": "import triton_referee.worker.judge\n",
        "worker/__init__.py": "",
        "worker/judge.py": "import triton_referee.sandbox.box\nfrom triton_referee.worker import cycle_a\n",
        "worker/cycle_a.py": "from . import cycle_b\n",
        "worker/cycle_b.py": "import triton_referee.worker.cycle_a\n",
        "worker/heavy.py": "import torch\n",
        "sandbox/__init__.py": "",
        "sandbox/box.py": "from triton_referee.service import api\n",
        # the modules the real contracts name, as they are (the adapters may import torch)
        "service/integrations/__init__.py": "",
        "service/integrations/verl.py": "import torch\n",
        "service/integrations/openrlhf_reward.py": "import torch\n",
        **{f"sandbox/{name}.py": "" for name in ("isolation", "selection", "launch", "docker_backend")},
        "sandbox/harness/__init__.py": "",
        "sandbox/harness/inside.py": "import json\nimport torch\nfrom . import other\nimport pydantic\nfrom triton_referee.sandbox import box\n",
        "sandbox/harness/other.py": "import numpy\n",
        "torch/__init__.py": "",
        "numpy/__init__.py": "",
        "pydantic/__init__.py": "",
    }
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    (tmp_path / "pyproject.toml").write_text(_contracts_config())
    completed = lint_imports(tmp_path)
    report = completed.stdout
    assert completed.returncode == 1, report + completed.stderr
    assert "0 kept, 4 broken" in report, report
    assert "triton_referee.sandbox.harness.inside imports pydantic" in report
    assert "triton_referee.sandbox.harness.inside imports triton_referee.sandbox.box" in report
    assert "triton_referee.sandbox.harness.other imports numpy" not in report and "imports json" not in report
    assert "triton_referee.worker.heavy -> torch" in report
    assert "cycle_a" in report and "cycle_b" in report
    assert "triton_referee.sandbox.box -> triton_referee.service.api" in report
    assert "integrations" not in report.split("Broken contracts")[1]


def test_engine_and_cli_do_not_import_torch():
    """The contract reads the source; this runs it: importing the engine loads no torch."""
    code = (
        "import json, sys\n"
        "import triton_referee.service.cli, triton_referee.worker.evaluate, triton_referee.worker.process, triton_referee.worker.models\n"
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


def test_nothing_imports_the_old_top_level_names():
    """Installed, the packages are triton_referee.service, .worker and .sandbox: an import of a bare
    `service`, `worker` or `sandbox` works in the checkout (its root is on sys.path) and fails, or finds
    a user's own package, once installed. The in-box harness imports itself relatively."""
    import ast

    offenders = []
    for folder in ("service", "worker", "sandbox", "bench", "tests", "examples"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.is_relative_to(ROOT / "sandbox" / "harness"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                else:
                    continue
                offenders += [
                    f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names if name.split(".")[0] in PACKAGES
                ]
    assert offenders == []
