"""Service settings, read from the environment (prefix REFEREE_) by pydantic-settings."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.models import MAX_SOURCE_BYTES


def redact_url(url: str | None) -> str | None:
    """The URL with its password (and user) replaced by ***, for printing: logs are not a place for secrets."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    netloc = "***@" + (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFEREE_", extra="ignore")

    redis_url: str | None = Field(default=None, description="Redis for the queue and results; unset means embedded mode")
    queue_name: str = "referee"
    host: str = "127.0.0.1"
    port: int = 8000

    # Auth: `auto` is on with Redis (a shared service) and off in embedded mode (one user, one machine).
    auth: Literal["auto", "on", "off"] = "auto"
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, description="comma-separated in the environment")

    # Limits, each answered with a clear 413 or 429.
    max_source_bytes: int = Field(default=MAX_SOURCE_BYTES, gt=0)
    max_batch_items: int = Field(default=1000, gt=0)
    max_body_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_queued_per_key: int = Field(default=2000, gt=0)
    max_wait_s: float = Field(default=600.0, ge=0, description="cap on ?wait=")

    # Jobs: results live this long; a job that fails or whose worker dies is retried this many times.
    result_ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    job_retries: int = Field(default=1, ge=0)
    job_timeout_margin_s: float = Field(default=60.0, ge=0, description="added to the evaluation's own timeout")
    maintenance_interval_s: float = Field(default=5.0, gt=0, description="abandoned-job sweep and result collection")
    worker_stale_s: float = Field(default=480.0, gt=0, description="a worker silent this long does not count as live")

    # How workers confine harness processes (read by worker/jobs.py from REFEREE_ISOLATION): `auto` takes
    # docker when a daemon and the image answer, then bwrap, then unshare. Never set per request.
    isolation: Literal["auto", "docker", "bwrap", "unshare", "process"] = "auto"

    # Embedded mode: evaluations run in threads of the API process.
    embedded_workers: int = Field(default=1, ge=1)
    # A zygote with torch imported forks each harness process (off: a fresh process per evaluation).
    warm_pool: bool = True
    pool_spares: int = Field(default=2, ge=0, description="harness processes forked ahead of demand")

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @property
    def embedded(self) -> bool:
        return not self.redis_url

    @property
    def auth_enabled(self) -> bool:
        return self.auth == "on" or (self.auth == "auto" and not self.embedded)

    def check(self) -> None:
        """Refuse a configuration that would run an open shared service by accident."""
        if self.auth_enabled and not self.api_keys:
            raise ValueError("auth is on (the default with Redis) but no API keys are set: "
                             "set REFEREE_API_KEYS=key1,key2 or REFEREE_AUTH=off")
