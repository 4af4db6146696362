"""Import boundaries (docs/design.md, "Layout"): imports flow service -> worker -> sandbox; the
in-box harness imports only the standard library, torch, triton, numpy and itself; the judge and
the command line never import torch; no package has import cycles. The rules are import-linter
contracts in pyproject.toml, checked here and by `make test`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(cwd: Path, python_path: list[Path]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, python_path))}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    completed = _lint_imports(ROOT, [ROOT])
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "4 kept, 0 broken" in completed.stdout


def _contracts_config() -> str:
    """The [tool.importlinter] tables of this project's pyproject.toml."""
    text = (ROOT / "pyproject.toml").read_text()
    start = text.index("[tool.importlinter]")
    end = text.index("[tool.pytest.ini_options]")
    return text[start:end]


def test_the_contracts_would_catch_each_kind_of_offence(tmp_path):
    """A copy of the contracts, run on a small tree that breaks each of them once."""
    files = {
        "service/__init__.py": "",
        "service/api.py": "import worker.judge\n",
        "worker/__init__.py": "",
        "worker/judge.py": "import sandbox.box\nimport worker.cycle_a\n",
        "worker/cycle_a.py": "import worker.cycle_b\n",
        "worker/cycle_b.py": "import worker.cycle_a\n",
        "worker/heavy.py": "import torch\n",
        "sandbox/__init__.py": "",
        "sandbox/box.py": "import service.api\n",
        # the modules the real contracts name, as they are (the adapters may import torch)
        "service/integrations/__init__.py": "",
        "service/integrations/verl.py": "import torch\n",
        "service/integrations/openrlhf_reward.py": "import torch\n",
        **{f"sandbox/{name}.py": "" for name in ("isolation", "selection", "launch", "docker_backend")},
        "sandbox/harness/__init__.py": "",
        "sandbox/harness/inside.py": "import json\nimport torch\nfrom . import other\nimport pydantic\nfrom sandbox import box\n",
        "sandbox/harness/other.py": "import numpy\n",
        "torch/__init__.py": "",
        "numpy/__init__.py": "",
        "pydantic/__init__.py": "",
    }
    for name, body in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(body)
    (tmp_path / "pyproject.toml").write_text(_contracts_config())
    completed = _lint_imports(tmp_path, [tmp_path, ROOT])
    report = completed.stdout
    assert completed.returncode == 1, report + completed.stderr
    assert "0 kept, 4 broken" in report, report
    assert "triton_referee.sandbox.harness.inside imports pydantic" in report
    assert "triton_referee.sandbox.harness.inside imports sandbox.box" in report
    assert "triton_referee.sandbox.harness.other imports numpy" not in report and "imports json" not in report
    assert "worker.heavy -> torch" in report
    assert "cycle_a" in report and "cycle_b" in report
    assert "sandbox.box -> service.api" in report
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
