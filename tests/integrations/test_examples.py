"""Every example in examples/integrations runs against the package's embedded server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "integrations"


@pytest.mark.parametrize(
    "script", ["verl_reward.py", "trl_reward.py", "openrlhf_reward.py", "client_evaluate_many.py", "token_rewards.py"]
)
def test_example_runs(script: str, server_url: str) -> None:
    env = {**os.environ, "REFEREE_URL": server_url}
    env.pop("REFEREE_OPTIONS", None)
    completed = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "correct" in completed.stdout or "1.0" in completed.stdout
