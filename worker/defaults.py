"""Every setting's default, in one module (as rq's `defaults.py`). The settings objects
(`worker/settings.py` for the worker and the judge, `service/settings.py` for the API) take their
defaults from here; docs/settings.md lists them with their variables.

Plain constants, no I/O: importing this creates nothing and reads no environment.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Final

from triton_referee.sandbox.docker_backend import DEFAULT_IMAGE
from triton_referee.worker import models

# --- how harness processes are confined (worker and embedded server; `referee check` has options) ---
ISOLATION = "auto"  # docker when a daemon and the image answer, then bwrap, then unshare
LOCKDOWN = "on"  # every layer the kernel offers (landlock and seccomp) under every backend but `process`
UNSAFE_NO_AUDIT_HOOK = False  # the operator's test switch; never for production
ALLOW_NATIVE_CODE = False  # candidates may build and load native code (the native_code rule off)
HARNESS_PYTHON: str | None = None  # None: the interpreter running the worker
DOCKER_IMAGE = DEFAULT_IMAGE  # defined beside the docker backend, which cannot import this module
DOCKER_PYTHON: str | None = None  # None: the host's own interpreter path (images made from the host's runtime)
DOCKER_HARNESS_LIB: str | None = None  # None: the host's harness package, bind-mounted read-only
DOCKER_STATE_DIR = Path(tempfile.gettempdir()) / "referee-docker"

# --- caches (one directory per host, shared by its workers) ---
REFERENCE_CACHE = True  # reference timings and (with the next) reference data
REFERENCE_DATA_CACHE = True  # reference inputs and expected outputs
REFERENCE_CACHE_DIR = Path.home() / ".cache" / "triton-referee" / "reference"  # a path only: made when a worker starts
REFERENCE_DATA_MAX_USES = 200  # evaluations served by one salt's data before a new salt replaces it
REFERENCE_DATA_TTL_S = 3600.0
REFERENCE_DATA_MAX_BYTES = 256 << 20  # larger problems take the live path

# --- the timing lock and the warm pool ---
LOCK_DIR = Path("/tmp/referee-locks")
EXCLUSIVE_TIMING = True  # off: only the timers are kept apart
WARM_POOL = True
POOL_SPARES = 2  # harness processes forked ahead of demand (at least two per concurrent evaluation)

# --- `referee worker` (RQ) ---
QUEUE_NAME = "referee"
MONITORING_INTERVAL_S = 10  # RQ checks the horse and refreshes the job's heartbeat this often
HEARTBEAT_GRACE_S = 60  # a heartbeat this late makes the job count as abandoned (RQ's fixed grace is 60 s)
REGISTRY_MAINTENANCE_INTERVAL_S = 600  # RQ's own registry sweeps
WORKER_TTL_S = 420  # how long a worker stays registered without a heartbeat
WORKER_CONCURRENCY = 1  # RQ workers on one GPU, sharing its warm pool and timing lock
LOG_LEVEL = "INFO"

# --- the API server (`referee serve`) ---
HOST = "127.0.0.1"
PORT = 8000
AUTH: Final = "auto"  # on with Redis (a shared service), off in embedded mode (one user, one machine)
MAX_SOURCE_BYTES = models.MAX_SOURCE_BYTES  # a request's own limit (worker/models.py)
MAX_BATCH_ITEMS = 1000
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_QUEUED_PER_KEY = 2000
MAX_WAIT_S = 600.0
RESULT_TTL_S = 7 * 24 * 3600
JOB_RETRIES = 1
JOB_TIMEOUT_MARGIN_S = 60.0
MAINTENANCE_INTERVAL_S = 5.0  # the API's abandoned-job sweep and result collection
WORKER_STALE_S = 480.0
EMBEDDED_WORKERS = 1
