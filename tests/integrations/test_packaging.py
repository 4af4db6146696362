"""How Referee installs (issue 19, item 5). A trainer installs the client and the adapters alone: a fresh venv with
only the base install (pydantic, pydantic-settings, httpx, tenacity from the package index) imports every adapter, and
none of them pulls in the server stack, which is indeed absent there. The installed import names are
triton_referee.service, .worker and .sandbox: a user's own `service/`, `worker/` and `sandbox/` in the working
directory neither hide Referee's nor are hidden by them. The wheel holds every module of the repository's three
folders (pyproject.toml lists the packages one by one) and the native recorder's C source."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_STACK = [
    "fastapi",
    "uvicorn",
    "starlette",
    "rq",
    "redis",
    "prometheus_client",
    "typer",
    "rich",
    "yaml",
    "torch",
]
PACKAGES = ("service", "worker", "sandbox")
CHECK = f"""
import sys
import triton_referee.service.client, triton_referee.service.completions, triton_referee.service.integrations
import triton_referee.service.integrations.trl, triton_referee.service.integrations.verl
import triton_referee.service.integrations.openrlhf_reward, triton_referee.service.integrations.tokens
# the working directory (first on sys.path) has the user's own packages of the same names: each side gets its own
import service, worker, sandbox
for package in (service, worker, sandbox):
    assert getattr(package, "USERS_OWN", False), f"{{package.__name__}} is not the user's: {{package.__file__}}"
for module in (triton_referee.service.client, triton_referee.service.integrations.verl):
    assert module.__file__.startswith(sys.prefix), f"{{module.__name__}} is not the installed one: {{module.__file__}}"
loaded = [name for name in {SERVER_STACK!r} if name in sys.modules]
assert not loaded, f"the client side imported {{loaded}}"
try:
    import fastapi
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("fastapi is installed: the base install pulled the server stack")
try:
    import triton_referee.service.integrations.openrlhf  # the server's endpoint: needs the [server] extra
except ModuleNotFoundError as exc:
    print("server side absent:", exc.name)
print("client ok")
"""


def _source_copy(into: Path) -> Path:
    """What the Dockerfiles copy, and nothing else: an in-tree build would reuse a `build/` folder left
    by an earlier build of the checkout (an old layout's top-level packages included)."""
    source = into / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in (*PACKAGES, "triton_referee"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o"))
    return source


def test_the_base_install_runs_the_adapters_without_the_server_stack(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    source = _source_copy(tmp_path)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("triton_referee-*.whl")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"triton_referee/{path.relative_to(ROOT).as_posix()}"
        for name in PACKAGES
        for path in (ROOT / name).rglob("*")
        if path.suffix in (".py", ".c") and "__pycache__" not in path.parts
    }
    assert "triton_referee/sandbox/harness/native/recorder.c" in shipped
    assert shipped | {"triton_referee/__init__.py"} <= in_wheel, sorted(shipped - in_wheel)
    assert not any(name.split("/")[0] in PACKAGES for name in in_wheel), "the wheel installs a top-level service/worker/sandbox"
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    for name in PACKAGES:  # a user's project with packages of the same names, where the trainer runs
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("USERS_OWN = True\n")
    checked = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "client ok" in checked.stdout and "server side absent: fastapi" in checked.stdout
    # The console script says what it needs instead of a traceback.
    command = subprocess.run([str(env_dir / "bin" / "referee"), "--help"], capture_output=True, text=True, timeout=60)
    assert command.returncode == 2 and "pip install 'triton-referee[server]'" in command.stderr, command.stderr
    assert "Traceback" not in command.stderr
