"""How a harness process is started, whoever starts it (a fresh process for one evaluation, or the
warm pool's zygote): the directory that holds the `harness` package, the bootstrap command line and
the clean environment it gets. Nothing of the worker's environment passes but what the runtime needs."""

from __future__ import annotations

import os
from pathlib import Path

HARNESS_PARENT = Path(__file__).resolve().parent  # the directory that holds the `harness` package
BOOTSTRAP = (
    "import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module('harness', run_name='__main__', alter_sys=True)"
)
ZYGOTE_BOOTSTRAP = (
    "import sys, runpy; sys.path.insert(0, sys.argv.pop(1)); "
    "runpy.run_module('harness.zygote', run_name='__main__', alter_sys=True)"
)

# Of the worker's environment, only what the runtime needs passes (no secrets, no settings).
PASSED_ENV = ("PATH", "LD_LIBRARY_PATH", "CUDA_HOME", "TRITON_PTXAS_PATH", "TRITON_LIBCUDA_PATH")

# Every evaluation creates and tears down two CUDA contexts, and the driver does most of that under
# one lock (for the whole host, by a 2-GPU run's symptoms): measured on an H200, a host managed about
# 6 contexts a second however many processes asked. With one hardware work queue per context instead of eight,
# about 15 (bench/results/context-churn-*). A harness process uses one stream (the candidate may
# not make others), so the queues it gives up were idle.
CUDA_CONTEXT_ENVIRONMENT = {"CUDA_DEVICE_MAX_CONNECTIONS": "1"}


def child_environment(workdir: Path, role: str, device: str) -> dict[str, str]:
    """A clean environment: nothing of the parent's but what the runtime needs. No secrets."""
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(
        HOME=str(workdir),
        TMPDIR=str(workdir / "tmp"),
        LANG="C.UTF-8",
        # A sandbox has no /etc/passwd: without these, getpass.getuser() (torch._dynamo's cache
        # directory) asks getpwuid and fails.
        USER="referee",
        LOGNAME="referee",
        TRITON_CACHE_DIR=str(workdir / f"triton-cache-{role}"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        if "CUDA_VISIBLE_DEVICES" in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"]
        env.update(CUDA_CONTEXT_ENVIRONMENT)
    return env
