"""API keys in the X-API-Key header. Each key is an owner: it sees only what it submitted."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from .client import API_KEY_HEADER
from .exceptions import Unauthorized

ANONYMOUS = "anonymous"

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER, auto_error=False, description="required unless auth is off (embedded mode default)"
)


def owner_of(key: str) -> str:
    """Records carry a digest of the key, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def require_owner(request: Request, key: str | None = Security(api_key_header)) -> str:
    settings = request.app.state.settings
    if not settings.auth_enabled:
        return ANONYMOUS
    # Compare against every key in constant time, so timing says nothing about which is close.
    if key and any([hmac.compare_digest(key.encode(), known.encode()) for known in settings.api_keys]):
        return owner_of(key)
    raise Unauthorized(
        f"missing or unknown API key: send a valid key in the {API_KEY_HEADER} header",
        reason="auth",
        headers={"WWW-Authenticate": API_KEY_HEADER},
    )
