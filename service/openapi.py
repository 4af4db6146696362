"""The committed `openapi.yaml`: generated from the app (`referee openapi > openapi.yaml`)."""

from __future__ import annotations

from typing import Any

import yaml

from .app import create_app
from .settings import Settings


def document() -> dict[str, Any]:
    # The schema does not depend on settings; an embedded app needs no Redis to build it.
    return create_app(Settings(redis_url=None, auth="off")).openapi()


def to_yaml(doc: dict[str, Any] | None = None) -> str:
    return yaml.safe_dump(doc or document(), sort_keys=False, allow_unicode=True, width=120)
