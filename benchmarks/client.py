"""A blocking HTTP/1.1 client for the timed one-at-a-time measurements: SSE and big bodies.

Blocking sockets and ``httptools`` keep the client's own cost small and steady,
so what it times is the server's. Bodies are generated and discarded on the fly:
no request or response is ever held whole in memory.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import httptools

RECV_SIZE = 256 * 1024
KEEP_HEAD = 64 * 1024
BLOCK = b"\xa5" * (1024 * 1024)
BOUNDARY = "tollhouse-benchmark-boundary"


class ProtocolError(Exception):
    """The server closed the connection or answered something that is not HTTP."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body_bytes: int
    head: bytes  # the body's first bytes, up to KEEP_HEAD
    first_event_seconds: float | None  # request sent -> first "\n\n" of the body
    total_seconds: float  # request sent -> last byte of the response


class _Reader:
    """httptools callbacks for one response."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.body_bytes = 0
        self.first_event: float | None = None
        self.complete = False
        self.head = b""

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if len(self.head) < KEEP_HEAD:
            self.head += body[: KEEP_HEAD - len(self.head)]
            if self.first_event is None and b"\n\n" in self.head:
                self.first_event = time.perf_counter() - self.started

    def on_message_complete(self) -> None:
        self.complete = True


class Connection:
    """One keep-alive connection to ``127.0.0.1:port``."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self._host = f"127.0.0.1:{port}"
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray(RECV_SIZE)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | Iterable[bytes | memoryview] = b"",
        content_length: int | None = None,
    ) -> Response:
        """Send one request and read its whole response; ``body`` may be a chunk stream."""
        fields = {"Host": self._host, **(headers or {})}
        if isinstance(body, bytes):
            content_length = len(body)
        if content_length:
            fields["Content-Length"] = str(content_length)
        head = f"{method} {path} HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in fields.items()) + "\r\n"
        reader = _Reader(time.perf_counter())
        if isinstance(body, bytes):
            self._sock.sendall(head.encode("latin-1") + body)
        else:
            self._sock.sendall(head.encode("latin-1"))
            for chunk in body:
                self._sock.sendall(chunk)
        parser = httptools.HttpResponseParser(reader)
        view = memoryview(self._buffer)
        while not reader.complete:
            size = self._sock.recv_into(self._buffer)
            if size == 0:
                raise ProtocolError(f"{self._host} closed the connection mid-response")
            try:
                parser.feed_data(view[:size])
            except httptools.HttpParserError as exc:
                raise ProtocolError(f"{self._host} sent an invalid response: {exc}") from exc
        return Response(
            status=parser.get_status_code(),
            body_bytes=reader.body_bytes,
            head=reader.head,
            first_event_seconds=reader.first_event,
            total_seconds=time.perf_counter() - reader.started,
        )


def generated(size: int) -> Iterator[memoryview]:
    """``size`` bytes in 1 MiB slices of one block: nothing large is ever allocated."""
    view = memoryview(BLOCK)
    while size > 0:
        chunk = view[: min(size, len(BLOCK))]
        size -= len(chunk)
        yield chunk


def multipart_upload(size: int) -> tuple[dict[str, str], int, Iterator[bytes | memoryview]]:
    """Headers, length and body of a ``POST /v1/files`` carrying ``size`` bytes of file."""
    prefix = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="benchmark.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    suffix = f"\r\n--{BOUNDARY}--\r\n".encode()

    def body() -> Iterator[bytes | memoryview]:
        yield prefix
        yield from generated(size)
        yield suffix

    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    return headers, len(prefix) + size + len(suffix), body()
