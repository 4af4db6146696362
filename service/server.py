"""Running the app under uvicorn: in the foreground (`referee serve`), or in a background thread
for the length of a `with` block (`referee demo`, tests)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from .app import create_app
from .settings import Settings


def settings_environment(settings: Settings) -> dict[str, str]:
    """The variables from which `Settings()` reads these settings again (uvicorn's worker processes
    build their apps from the environment)."""
    return {
        f"REFEREE_{name.upper()}": ",".join(value) if isinstance(value, list) else str(value)
        for name, value in settings.model_dump().items()
        if value is not None
    }


def serve(settings: Settings, log_level: str = "info", processes: int = 1) -> None:
    """Serve in the foreground. With `processes` > 1 (Redis mode only), uvicorn starts that many API
    processes on one socket: one Python process is GIL-bound near 250 submissions/s on a small CPU."""
    if processes <= 1:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)
        return
    if settings.embedded:
        raise ValueError("several API processes need Redis: in embedded mode each would have its own queue and results")
    # Each process builds its app from the environment, so hand it the settings there.
    os.environ.update(settings_environment(settings))
    uvicorn.run(
        "triton_referee.service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        workers=processes,
    )


@contextmanager
def background_server(settings: Settings, log_level: str = "warning") -> Iterator[str]:
    """Serve on a free loopback port in a thread; yield the base URL; stop on exit."""
    app = create_app(settings)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="referee-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the embedded server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
