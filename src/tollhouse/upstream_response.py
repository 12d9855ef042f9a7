"""What the upstream client hands back: its error classes, origins and responses."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tollhouse.upstream_connection import Connection

Headers = list[tuple[bytes, bytes]]
Body = bytes | AsyncIterable[bytes] | None

# Response bytes buffered for a consumer that is behind: reading from the socket
# stops above the high mark and starts again once the consumer is down to the low one.
HIGH_WATER = 512 * 1024
LOW_WATER = 128 * 1024
# Methods a request may be repeated for (RFC 9110 §9.2.2) when a pooled connection
# turns out to have been closed by the server while it sat idle.
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
# A bytes body up to this size goes out in the same write as the head.
JOIN_BODY = 64 * 1024
FRAMING = frozenset({b"host", b"transfer-encoding"})


class HTTPClientError(Exception):
    """Base of everything this client raises for a failed exchange."""


class ConnectError(HTTPClientError):
    """No connection could be opened (name resolution, refused, TLS handshake)."""


class ConnectTimeout(HTTPClientError):
    """Opening the connection took longer than the connect timeout."""


class PoolTimeout(HTTPClientError):
    """Every connection of the pool stayed busy for the whole connect timeout."""


class ReadTimeout(HTTPClientError):
    """The upstream made no progress, in either direction, for the read timeout."""


class ServerDisconnected(HTTPClientError):
    """The connection closed before the response's head was complete."""

    def __init__(self, message: str, *, sent: bool = True, answered: bool = False) -> None:
        super().__init__(message)
        self.sent = sent  # some of the request was handed to the socket
        self.answered = answered  # some of a response had arrived


class IncompleteResponse(HTTPClientError):
    """The connection closed or broke in the middle of a response's body."""


class RemoteProtocolError(HTTPClientError):
    """The upstream answered something that is not valid HTTP/1.1."""


class LocalProtocolError(HTTPClientError):
    """The request cannot be framed: its body does not match its Content-Length."""


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        default = 443 if parts.scheme == "https" else 80
        return cls(parts.scheme, parts.hostname, parts.port or default)

    @property
    def host_header(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        text = host if self.port == default else f"{host}:{self.port}"
        return text.encode("ascii") if text.isascii() else text.encode("idna")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host_header.decode()}"


class Response:
    """A response whose head arrived; its body is read with ``read`` or ``chunks``.

    Once the body has been received in full, the connection goes back to the pool
    (or is closed) by itself, whether or not the body was consumed; ``close``
    drops the connection when it was not.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_eof",
        "_error",
        "_waiter",
        "content_length",
        "headers",
        "status",
    )

    def __init__(
        self, conn: Connection, status: int, headers: Headers, content_length: int | None
    ) -> None:
        self.status = status
        self.headers = headers  # raw names and values, in order, duplicates kept
        self.content_length = content_length
        self._conn: Connection | None = conn  # until the body is complete
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._eof = False
        self._error: HTTPClientError | None = None
        self._waiter: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        """The whole body."""
        parts: list[bytes] = []
        while True:
            if self._chunks:
                parts.extend(self._chunks)
                self._chunks.clear()
                self._taken(self._buffered)
            if self._error is not None:
                raise self._error
            if self._eof:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await self._wait()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; bytes received before a failure come out first."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._taken(len(chunk))
                yield chunk
            elif self._error is not None:
                raise self._error
            elif self._eof:
                return
            else:
                await self._wait()

    def close(self) -> None:
        """Drop the connection unless the body was received in full."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._error = IncompleteResponse("the response was closed before its end")
            conn.abort()

    async def _wait(self) -> None:
        conn = self._conn
        assert conn is not None, "a response without a connection is at its end"
        self._waiter = waiter = conn.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def _taken(self, size: int) -> None:
        self._buffered -= size
        conn = self._conn
        if conn is not None and conn.reading_paused and self._buffered <= LOW_WATER:
            conn.resume_reading()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, chunk: bytes) -> int:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self._wake()
        return self._buffered

    def _end(self, error: HTTPClientError | None) -> None:
        self._conn = None
        if error is None:
            self._eof = True
        elif not self._eof:
            self._error = error
        self._wake()
