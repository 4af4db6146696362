"""One embedded Referee server (in-process queue, two worker threads, no auth) for this package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.server import background_server
from service.settings import Settings


@pytest.fixture(scope="package")
def server_url() -> Iterator[str]:
    with background_server(Settings(redis_url=None, auth="off", embedded_workers=2, maintenance_interval_s=0.5)) as url:
        yield url
