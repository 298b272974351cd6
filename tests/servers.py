"""A real uvicorn server on a free port, in its own thread and event loop.

Clients in the test (sync or async) talk to it over real HTTP, as they would to
`loopchat serve`; the server's loop is not shared with the test's.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.conftest import ADMIN


@contextmanager
def running_server(settings: Any, engine: Any = None, ready_timeout: float = 60.0) -> Iterator[str]:
    """Serve `create_app(settings, engine)`; yield its base URL once /readyz says ready."""
    import uvicorn

    from service.app import create_app, server_options

    config = uvicorn.Config(
        create_app(settings, engine=engine),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        **server_options(),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + ready_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError("the server did not start")
            time.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        while httpx.get(f"{base}/readyz", headers=ADMIN).status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError("the server did not become ready")
            time.sleep(0.05)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=30)
