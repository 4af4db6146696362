"""A trainer installs the client and the adapters alone (issue 19, item 5): a fresh venv with only the
base install (pydantic, pydantic-settings, httpx, tenacity from the package index) imports every adapter, and none of
them pulls in the server stack, which is indeed absent there."""

from __future__ import annotations

import subprocess
import sys
import venv
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
CHECK = f"""
import sys
import service.client, service.completions, service.integrations
import service.integrations.trl, service.integrations.verl, service.integrations.openrlhf_reward, service.integrations.tokens
loaded = [name for name in {SERVER_STACK!r} if name in sys.modules]
assert not loaded, f"the client side imported {{loaded}}"
try:
    import fastapi
except ModuleNotFoundError:
    pass
else:
    raise AssertionError("fastapi is installed: the base install pulled the server stack")
try:
    import service.integrations.openrlhf  # the server's endpoint: needs the [server] extra
except ModuleNotFoundError as exc:
    print("server side absent:", exc.name)
print("client ok")
"""


def test_the_base_install_runs_the_adapters_without_the_server_stack(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = wheels.glob("triton_referee-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)], capture_output=True, text=True, timeout=600
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    checked = subprocess.run([str(python), "-c", CHECK], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "client ok" in checked.stdout and "server side absent: fastapi" in checked.stdout
    # The console script says what it needs instead of a traceback.
    command = subprocess.run([str(env_dir / "bin" / "referee"), "--help"], capture_output=True, text=True, timeout=60)
    assert command.returncode == 2 and "pip install 'triton-referee[server]'" in command.stderr, command.stderr
    assert "Traceback" not in command.stderr
