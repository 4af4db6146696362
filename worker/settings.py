"""Settings of the processes that judge, read once from the environment (prefix REFEREE_) by
pydantic-settings when the process starts, then passed down.

`JudgeSettings`: how this host judges (confinement, caches, timing lock, warm pool). Every process
that runs evaluations reads it: `referee worker`, the embedded server (`service/settings.py`'s
`Settings` extends it) and `referee check`. `WorkerSettings` adds what `referee worker` needs of
Redis and RQ. Defaults come from `worker/defaults.py`; docs/settings.md has the table.

The harness (inside the box) reads none of these: what it must know travels on its command line or
in the clean environment the worker gives it (sandbox/launch.py). Operator switches (lockdown, the
audit hook) come from here, never from a request.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from triton_referee.sandbox.isolation import IsolationName, Lockdown, StrEnum

from . import defaults


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class JudgeSettings(BaseSettings):
    # An empty variable counts as unset (the worker read `os.environ.get(NAME) or default` before).
    model_config = SettingsConfigDict(env_prefix="REFEREE_", extra="ignore", env_ignore_empty=True)

    # How harness processes are confined. Never set per request.
    isolation: IsolationName = Field(
        default=IsolationName(defaults.ISOLATION), description="auto takes docker, then bwrap, then unshare"
    )
    lockdown: Lockdown = Field(default=Lockdown(defaults.LOCKDOWN), description="layers harness processes put on themselves")
    unsafe_no_audit_hook: bool = Field(
        default=defaults.UNSAFE_NO_AUDIT_HOOK,
        description="candidates run without the audit hook: testing the kernel's layer alone",
    )
    allow_native_code: bool = Field(
        default=defaults.ALLOW_NATIVE_CODE, description="candidates may build and load native code (native_code off)"
    )
    harness_python: str | None = Field(default=defaults.HARNESS_PYTHON, description="interpreter for harness processes")
    docker_image: str = defaults.DOCKER_IMAGE
    docker_python: str | None = defaults.DOCKER_PYTHON
    docker_harness_lib: str | None = defaults.DOCKER_HARNESS_LIB
    docker_state_dir: Path = defaults.DOCKER_STATE_DIR

    # Caches of the reference's timings and data, shared by this host's workers.
    reference_cache: bool = defaults.REFERENCE_CACHE
    reference_data_cache: bool = defaults.REFERENCE_DATA_CACHE
    reference_cache_dir: Path = defaults.REFERENCE_CACHE_DIR
    reference_data_max_uses: int = Field(default=defaults.REFERENCE_DATA_MAX_USES, gt=0)
    reference_data_ttl_s: float = Field(default=defaults.REFERENCE_DATA_TTL_S, gt=0)
    reference_data_max_bytes: int = Field(default=defaults.REFERENCE_DATA_MAX_BYTES, gt=0)

    # The per-GPU timing lock and the warm pool.
    lock_dir: Path = defaults.LOCK_DIR
    exclusive_timing: bool = defaults.EXCLUSIVE_TIMING
    warm_pool: bool = defaults.WARM_POOL
    pool_spares: int = Field(default=defaults.POOL_SPARES, ge=0, description="harness processes forked ahead of demand")

    @property
    def audit_hook(self) -> bool:
        return not self.unsafe_no_audit_hook

    def docker_options(self) -> dict[str, object]:
        """The DockerIsolation fields a worker sets (sandbox/docker_backend.py cannot read settings)."""
        return {
            "image": self.docker_image,
            "python": self.docker_python,
            "harness_lib": self.docker_harness_lib,
            "state_dir": self.docker_state_dir,
        }


class WorkerSettings(JudgeSettings):
    """`referee worker`: the options on its command line override these."""

    redis_url: str = Field(description="Redis holding the queue")
    queue_name: str = defaults.QUEUE_NAME
    gpu: int | None = Field(default=None, ge=0, description="pinned with CUDA_VISIBLE_DEVICES for every job")
    worker_name: str | None = Field(default=None, description="default: host, GPU and pid")
    burst: bool = False
    # RQ checks the horse and refreshes the job's heartbeat every `monitoring_interval_s`; a job whose
    # heartbeat is `heartbeat_grace_s` overdue counts as abandoned (RQ's fixed grace is 60 s).
    monitoring_interval_s: int = Field(default=defaults.MONITORING_INTERVAL_S, ge=1)
    heartbeat_grace_s: int = Field(default=defaults.HEARTBEAT_GRACE_S, ge=1)
    registry_maintenance_interval_s: int = Field(default=defaults.REGISTRY_MAINTENANCE_INTERVAL_S, ge=1)
    worker_ttl_s: int = Field(default=defaults.WORKER_TTL_S, ge=5)
    # RQ runs one job at a time per worker process: this many processes share the GPU, its warm pool
    # and its timing lock, so one job's start-up, compile and checks overlap another's timing.
    # Not REFEREE_CONCURRENCY: the trainer integrations read that one (evaluations in flight).
    worker_concurrency: int = Field(default=defaults.WORKER_CONCURRENCY, ge=1)
    log_level: LogLevel = LogLevel(defaults.LOG_LEVEL)
