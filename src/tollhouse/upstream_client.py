"""A small HTTP/1.1 client for upstream origins: keep-alive pools, bodies streamed both ways.

Requests and responses pass through byte for byte: the method, target and headers
go out as given (only ``Host`` and the body's framing are added) and the status,
raw headers and body come back undecoded. Every failure is one of the
``HTTPClientError`` classes (in ``upstream_response``); the caller maps them to its own
errors. The wire itself is ``upstream_connection``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

from tollhouse.upstream_connection import Connection, request_head
from tollhouse.upstream_response import (
    IDEMPOTENT,
    Body,
    ConnectError,
    ConnectTimeout,
    Headers,
    HTTPClientError,
    IncompleteResponse,
    LocalProtocolError,
    Origin,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
    Response,
    ServerDisconnected,
)

__all__ = [
    "Client",
    "ConnectError",
    "ConnectTimeout",
    "HTTPClientError",
    "IncompleteResponse",
    "LocalProtocolError",
    "Origin",
    "PoolTimeout",
    "ReadTimeout",
    "RemoteProtocolError",
    "Response",
    "ServerDisconnected",
]


class Pool:
    """The connections to one origin: at most ``max_connections``, idle ones reused."""

    def __init__(self, client: Client, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.origin = origin
        self.loop = loop
        self.read_timeout = client.read_timeout
        self.host_line = b"Host: " + origin.host_header + b"\r\n"
        self._ssl = client.ssl_context() if origin.scheme == "https" else None
        self._idle: deque[Connection] = deque()  # oldest on the left
        self._connections: set[Connection] = set()
        self._size = 0  # connections open or being opened
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._idle_timer: asyncio.TimerHandle | None = None

    async def request(self, method: str, head: bytes, body: Body, length: int | None) -> Response:
        head_only = method == "HEAD"
        conn = await self._acquire()
        try:
            return await conn.exchange(head, body, length, head_only)
        except ServerDisconnected as exc:
            replayable = body is None or isinstance(body, bytes)
            safe = not exc.sent or (method in IDEMPOTENT and replayable)
            if not (conn.reused and not exc.answered and safe):
                raise
        # The server closed a connection that sat idle here; the others may be gone too.
        self.close_idle()
        conn = await self._acquire()
        return await conn.exchange(head, body, length, head_only)

    async def _acquire(self) -> Connection:
        idle = self._idle
        if idle:
            deadline = self.loop.time() - self.client.idle_timeout
            while idle:
                conn = idle.pop()
                conn.idle = False
                if conn.idle_since > deadline and not conn.stale():
                    return conn
                conn.close()
        if self._size >= self.client.max_connections:
            given = await self._wait()
            if given is not None:
                return given
        else:
            self._size += 1
        try:
            return await self._connect()
        except BaseException:
            self._size -= 1
            self._grant()
            raise

    async def _wait(self) -> Connection | None:
        """A connection released by another request, or None: a free slot to connect."""
        waiter: asyncio.Future[Connection | None] = self.loop.create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.client.connect_timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                given = waiter.result()  # granted as we gave up: pass it on
                if given is not None:
                    self.release(given)
                else:
                    self._size -= 1
                    self._grant()
            else:
                waiter.cancel()
            if isinstance(exc, TimeoutError):
                raise PoolTimeout(
                    f"{self.origin}: all {self.client.max_connections} connections busy "
                    f"for {self.client.connect_timeout:g}s"
                ) from None
            raise

    async def _connect(self) -> Connection:
        origin = self.origin
        try:
            async with asyncio.timeout(self.client.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: Connection(self),
                    origin.host,
                    origin.port,
                    ssl=self._ssl,
                    server_hostname=origin.host if self._ssl is not None else None,
                )
        except TimeoutError:
            raise ConnectTimeout(
                f"{origin}: no connection in {self.client.connect_timeout:g}s"
            ) from None
        except OSError as exc:  # refused, unreachable, name resolution, TLS (ssl.SSLError)
            raise ConnectError(f"{origin}: {exc}") from exc
        if conn.closed:  # lost before we got it; discard() did not count it
            raise ConnectError(f"{origin}: connection closed as soon as it opened")
        self._connections.add(conn)
        return conn

    def release(self, conn: Connection) -> None:
        """A connection whose exchange ended cleanly, for the next request."""
        conn.reused = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle = True
        conn.idle_since = now = self.loop.time()
        self._idle.append(conn)
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(now + self.client.idle_timeout, self._expire)

    def discard(self, conn: Connection) -> None:
        """A connection that closed: its slot goes to a waiter, if any."""
        if conn.idle:
            conn.idle = False
            self._idle.remove(conn)
        if conn in self._connections:
            self._connections.discard(conn)
            self._size -= 1
            self._grant()

    def _grant(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._size += 1
                waiter.set_result(None)
                return

    def _expire(self) -> None:
        self._idle_timer = None
        deadline = self.loop.time() - self.client.idle_timeout
        idle = self._idle
        while idle and idle[0].idle_since <= deadline:
            idle[0].close()  # discard() takes it off the deque
        if idle:
            when = idle[0].idle_since + self.client.idle_timeout
            self._idle_timer = self.loop.call_at(when, self._expire)

    def close_idle(self) -> None:
        while self._idle:
            self._idle[0].close()

    async def aclose(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        connections = list(self._connections)
        for conn in connections:
            conn.abort()
        for conn in connections:
            await conn.wait_closed()


class Client:
    """Pools of keep-alive connections, one per origin; one request per connection at a time."""

    def __init__(
        self,
        *,
        max_connections: int = 100,
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
        idle_timeout: float = 15.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.max_connections = max_connections  # per origin
        self.connect_timeout = connect_timeout  # opening a connection, or waiting for one
        self.read_timeout = read_timeout  # longest silence from the upstream
        self.idle_timeout = idle_timeout  # an idle connection older than this is closed
        self._ssl_context = ssl_context
        self._pools: dict[Origin, Pool] = {}

    def ssl_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def request(
        self,
        origin: Origin,
        method: str,
        target: bytes,
        headers: Headers,
        body: Body = None,
    ) -> Response:
        """Send one request; returns once the response's head has arrived.

        ``target`` is the raw path and query (``/v1/x?a=1``), sent as is.
        """
        pool = self._pools.get(origin)
        if pool is None:
            pool = self._pools[origin] = Pool(self, origin, asyncio.get_running_loop())
        head, length = request_head(method, target, pool.host_line, headers, body)
        return await pool.request(method, head, body, length)

    async def aclose(self) -> None:
        """Close every connection, idle or busy."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
