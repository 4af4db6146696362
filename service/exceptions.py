"""The errors the service refuses a request with. Domain code raises them; one handler
(`service/app.py`) answers each with its HTTP status, `{"detail": ...}` and its headers, and counts
it in `referee_requests_rejected` under its `reason`.

Nothing here knows HTTP beyond the status number each kind maps to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar


class RefereeError(Exception):
    """A request the service refuses. `detail` is what the client reads; `reason`, when set, is the
    label the refusal is counted under (a lookup that finds nothing is not counted)."""

    status: ClassVar[int] = 500

    def __init__(self, detail: str, *, reason: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reason = reason
        self.headers = dict(headers or {})

    def about(self, prefix: str) -> RefereeError:
        """The same refusal, its detail saying which part of the request it is about (e.g. "item 3: ")."""
        return type(self)(prefix + self.detail, reason=self.reason, headers=self.headers)


class BadRequest(RefereeError):
    """The request is malformed in a way the schema cannot say (an Idempotency-Key out of bounds)."""

    status = 400


class Unauthorized(RefereeError):
    """No API key, or one the server does not know."""

    status = 401


class NotFound(RefereeError):
    """No such evaluation, batch or problem for this API key."""

    status = 404


class TooLarge(RefereeError):
    """A source or a batch over its configured limit."""

    status = 413


class Unprocessable(RefereeError):
    """Well-formed but unusable: a reference that is not a usable problem, an Idempotency-Key reused
    with another body, a label the server cannot use."""

    status = 422


class QueueFull(RefereeError):
    """Too many evaluations queued or running for this API key."""

    status = 429


class Unavailable(RefereeError):
    """The queue cannot take or finish work now; the client should retry."""

    status = 503
