"""Real HTTP servers for tests: an ASGI app served by uvicorn on a loopback port.

The socket is bound and listening before the server thread starts, so a client
can connect at once (the kernel queues the connection); nothing has to wait for
the server to "come up".
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(512)
    sock.setblocking(False)
    return sock


class ServerThread:
    """Serves one ASGI app from a thread with its own event loop."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.sock = bound_socket()
        host, port = self.sock.getsockname()
        self.url = f"http://{host}:{port}"
        self.port = port
        self.server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", **config)
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))
        finally:
            self.loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
        self.sock.close()


@contextmanager
def serve(app: Any, **config: Any) -> Iterator[ServerThread]:
    server = ServerThread(app, **config).start()
    try:
        yield server
    finally:
        server.stop()
