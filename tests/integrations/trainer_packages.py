"""The RL trainers the adapter tests run against, installed into this interpreter when missing (as
tests/machine.py installs Debian packages): TRL with its dependencies; verl and OpenRLHF with `--no-deps`
plus the few packages their reward code imports (their full dependency sets pull vllm, deepspeed
and CUDA builds of torch). Versions are the ones the tests were written against."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.machine_lock import machine_lock

WITH_DEPENDENCIES = [
    "trl==1.16.0",
    "transformers==5.24.0",
    "accelerate==1.15.0",
    "datasets==5.2.0",
    "tokenizers==0.23.3",
    "ray==2.60.0",
    "tensordict==0.15.3",
    "omegaconf==2.3.1",
    "hydra-core==1.3.8",
    "codetiming==1.4.0",
    "aiohttp>=3.9",
    "pylatexenc==2.11",
    "math-verify==0.9.0",
    "orjson>=3.9",
]
WITHOUT_DEPENDENCIES = ["verl==0.9.1", "openrlhf==0.11.2"]
MODULES = [
    "trl",
    "transformers",
    "tokenizers",
    "ray",
    "tensordict",
    "omegaconf",
    "aiohttp",
    "pylatexenc",
    "orjson",
    "verl",
    "openrlhf",
]


def _missing() -> list[str]:
    return [name for name in MODULES if importlib.util.find_spec(name) is None]


def ensure_trainers() -> None:
    if not _missing():
        return
    with machine_lock("pip"):
        if not _missing():
            return
        import torch  # keep the CPU build that is installed: nothing here may replace it

        pin = f"torch=={torch.__version__.split('+')[0]}"
        for extra, packages in (([], WITH_DEPENDENCIES), (["--no-deps"], WITHOUT_DEPENDENCIES)):
            command = [sys.executable, "-m", "pip", "install", "--quiet", *extra, *packages, pin]
            completed = subprocess.run(command, capture_output=True, text=True, timeout=900)
            if completed.returncode != 0:
                pytest.fail(f"installing the trainers failed: {' '.join(command)}\n{completed.stderr[-3000:]}")
    importlib.invalidate_caches()
    if _missing():
        pytest.fail(f"still missing after pip install: {_missing()}")
