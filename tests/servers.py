"""Real HTTP servers for tests: an ASGI app served by uvicorn on a loopback port.

The socket is bound and listening before the server thread starts, so a client
can connect at once (the kernel queues the connection); nothing has to wait for
the server to "come up".
"""

from __future__ import annotations

import asyncio
import os
import re
import signal as signal_module
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn


def bound_socket() -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only
    # then; with proto 0, keep-alive responses stall 40 ms on the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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
        """Start serving; returns once the app's lifespan startup is done (or it failed), so
        a test can use the app's objects at once, not only send it requests."""
        self._thread.start()
        waiting = threading.Event()
        for _ in range(6000):  # the server's thread flips these; at most a minute
            if self.server.started or not self._thread.is_alive():
                break
            waiting.wait(0.01)
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


@dataclass
class TollhouseProcess:
    """``tollhouse serve`` as a real process; ``log`` collects what it writes."""

    process: subprocess.Popen[str]
    url: str
    admin_url: str
    log: list[str]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait_for_log(self, text: str, timeout: float = 10.0) -> bool:
        """Block until a log line containing ``text`` arrives (or the time is up)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: any(text in line for line in self.log), timeout)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._arrived:
                self.log.append(line)
                self._arrived.notify_all()


LISTENING = re.compile(r"tollhouse listening: proxy (\S+) admin (\S+)")


@contextmanager
def tollhouse_process(*args: str, env: dict[str, str] | None = None) -> Iterator[TollhouseProcess]:
    """Start ``tollhouse serve`` on free ports; yields once it has bound its sockets."""
    command = [sys.executable, "-m", "tollhouse", "serve", "--port", "0", "--admin-port", "0"]
    state = tempfile.TemporaryDirectory()
    defaults = {
        "TOLLHOUSE_DATABASE_URL": f"sqlite:///{state.name}/ledger.db",
        "TOLLHOUSE_SPOOL_PATH": f"{state.name}/ledger.spool",
    }
    process = subprocess.Popen(
        [*command, *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **defaults, **(env or {})},
    )
    assert process.stderr is not None
    log: list[str] = []
    for line in process.stderr:
        log.append(line)
        if match := LISTENING.search(line):
            break
    else:
        process.wait()
        raise RuntimeError("tollhouse serve exited before listening:\n" + "".join(log))
    running = TollhouseProcess(process, match.group(1), match.group(2), log)
    drain = threading.Thread(target=running._drain, daemon=True)
    drain.start()
    try:
        yield running
    finally:
        process.send_signal(signal_module.SIGTERM)
        process.wait(15)
        drain.join(5)
        process.stderr.close()
        state.cleanup()
