"""The API server's settings, read once from the environment (prefix REFEREE_) by pydantic-settings
when the server starts (`referee serve`, or `create_app()` without settings), then passed down.

`Settings` extends the judge's settings (worker/settings.py): in embedded mode this process also runs
the evaluations. Defaults come from worker/defaults.py; docs/settings.md has the table."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from triton_referee.worker import defaults
from triton_referee.worker.settings import JudgeSettings


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


class Settings(JudgeSettings):
    redis_url: str | None = Field(default=None, description="Redis for the queue and results; unset means embedded mode")
    queue_name: str = defaults.QUEUE_NAME
    host: str = defaults.HOST
    port: int = Field(default=defaults.PORT, ge=0, le=65535)

    # Auth: `auto` is on with Redis (a shared service) and off in embedded mode (one user, one machine).
    auth: Literal["auto", "on", "off"] = defaults.AUTH
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, description="comma-separated in the environment")

    # Limits, each answered with a clear 413 or 429.
    max_source_bytes: int = Field(default=defaults.MAX_SOURCE_BYTES, gt=0)
    max_batch_items: int = Field(default=defaults.MAX_BATCH_ITEMS, gt=0)
    max_body_bytes: int = Field(default=defaults.MAX_BODY_BYTES, gt=0)
    max_queued_per_key: int = Field(default=defaults.MAX_QUEUED_PER_KEY, gt=0)
    max_wait_s: float = Field(default=defaults.MAX_WAIT_S, ge=0, description="cap on ?wait=")

    # Jobs: results live this long; a job that fails or whose worker dies is retried this many times.
    result_ttl_s: int = Field(default=defaults.RESULT_TTL_S, gt=0)
    job_retries: int = Field(default=defaults.JOB_RETRIES, ge=0)
    job_timeout_margin_s: float = Field(
        default=defaults.JOB_TIMEOUT_MARGIN_S, ge=0, description="added to the evaluation's own timeout"
    )
    maintenance_interval_s: float = Field(
        default=defaults.MAINTENANCE_INTERVAL_S, gt=0, description="abandoned-job sweep and result collection"
    )
    worker_stale_s: float = Field(
        default=defaults.WORKER_STALE_S, gt=0, description="a worker silent this long does not count as live"
    )

    # Embedded mode: evaluations run in threads of the API process, with the judge's settings
    # (isolation, warm pool, caches) this class inherits.
    embedded_workers: int = Field(default=defaults.EMBEDDED_WORKERS, ge=1)

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
            raise ValueError(
                "auth is on (the default with Redis) but no API keys are set: set REFEREE_API_KEYS=key1,key2 or REFEREE_AUTH=off"
            )
