"""One HTTP/1.1 connection to an upstream origin: an asyncio protocol with httptools.

It carries one exchange at a time: writes the request (the body streamed, with flow
control) and parses the response into a ``Response`` whose body is read as it comes.
"""

from __future__ import annotations

import asyncio
import select
import socket
from collections.abc import AsyncIterable
from typing import TYPE_CHECKING, cast

import httptools

from tollhouse.upstream_response import (
    FRAMING,
    HIGH_WATER,
    JOIN_BODY,
    Body,
    Headers,
    HTTPClientError,
    IncompleteResponse,
    LocalProtocolError,
    ReadTimeout,
    RemoteProtocolError,
    Response,
    ServerDisconnected,
)

if TYPE_CHECKING:
    from tollhouse.upstream_client import Pool


def request_head(
    method: str, target: bytes, host_line: bytes, headers: Headers, body: Body
) -> tuple[bytes, int | None]:
    """The request line and headers, and the body's length when it is sent as is.

    ``Host`` is added; a bytes body gets a Content-Length unless it has one, a
    streamed body without one is sent chunked. The caller's headers must not hold
    ``Host`` or ``Transfer-Encoding``: framing is this client's job.
    """
    if not target or b" " in target or " " in method:
        raise ValueError(f"invalid request line {method} {target!r}")
    length: int | None = None
    lines = [method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n", host_line]
    for name, value in headers:
        folded = name.lower()
        if folded == b"content-length":
            length = int(value)
        elif folded in FRAMING:
            raise ValueError(f"the client sets {name.decode('latin-1')} itself")
        lines += (name, b": ", value, b"\r\n")
    breaks = len(headers) + 3  # the request line, Host, the headers and the blank line
    if isinstance(body, bytes):
        if length is None:
            length = len(body)
            lines.append(b"Content-Length: %d\r\n" % length)
            breaks += 1
        elif length != len(body):
            raise LocalProtocolError(f"request body of {len(body)} bytes, Content-Length {length}")
    elif body is None:
        if length:
            raise LocalProtocolError(f"no request body, Content-Length {length}")
    elif length is None:
        lines.append(b"Transfer-Encoding: chunked\r\n")
        breaks += 1
    lines.append(b"\r\n")
    head = b"".join(lines)
    # Any other line break came from a name, a value or the target: it would split
    # the request, so it is refused rather than sent.
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks:
        raise ValueError("line break in the request target or a header")
    return head, length


class Connection(asyncio.Protocol):
    """One connection, one exchange at a time; ``httptools`` parses what comes back."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self._poll: select.poll | None = None
        self.closed = False
        self.reused = False
        self.idle = False
        self.idle_since = 0.0
        self.reading_paused = False
        self._parser = httptools.HttpResponseParser(self)
        self._lost: asyncio.Future[None] | None = None
        # the exchange in progress
        self._active = False
        self._head: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._head_only = False
        self._informational = False
        self._headers: Headers = []
        self._content_length: int | None = None
        self._chunked = False
        self._answered = False
        self._done = False
        self._keep_alive = False
        self._broken = False
        self._stale_parser = False
        self._sending = False
        self._blocked = False
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        # between-bytes timeout: one timer, moved on only when it fires
        self._timer: asyncio.TimerHandle | None = None
        self._activity = 0.0
        self._generation = 0

    # -- the exchange -----------------------------------------------------------------

    async def exchange(
        self, head: bytes, body: Body, length: int | None, head_only: bool
    ) -> Response:
        if self.closed:
            raise ServerDisconnected(f"{self.pool.origin}: connection closed", sent=False)
        if self._stale_parser:
            self._parser = httptools.HttpResponseParser(self)
            self._stale_parser = False
        self._active = True
        self._generation = generation = self._generation + 1
        head_future: asyncio.Future[Response] = self.loop.create_future()
        self._head = head_future
        self._response = None
        self._head_only = head_only
        self._informational = False
        self._headers = []
        self._content_length = None
        self._chunked = False
        self._answered = False
        self._done = False
        self._broken = False
        self._activity = now = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_at(now + self.pool.read_timeout, self._on_timer)
        transport = self.transport
        assert transport is not None
        try:
            if body is None:
                transport.write(head)
            elif isinstance(body, bytes):
                if len(body) <= JOIN_BODY:
                    transport.write(head + body)
                else:
                    transport.write(head)
                    transport.write(body)
            else:
                transport.write(head)
                await self._send_stream(body, length)
            return await head_future
        except BaseException:
            # Cancelled, or the body's source failed: the exchange is void. (If its
            # response had already ended, the connection may be another request's now.)
            if self._generation == generation and self._active:
                self.abort()
            if head_future.done() and not head_future.cancelled():
                head_future.exception()  # retrieved: it is the error being raised, or moot
            raise

    async def _send_stream(self, body: AsyncIterable[bytes], length: int | None) -> None:
        transport = self.transport
        assert transport is not None
        sent = 0
        self._sending = True
        iterator = aiter(body)
        while not self.closed:
            self._blocked = True  # waiting on our own source is not the upstream's delay
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                break
            finally:
                self._blocked = False
                self._activity = self.loop.time()
            if self.closed:
                break  # the upstream answered early or went away: the head says which
            if not chunk:
                continue
            if length is None:
                transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                sent += len(chunk)
                if sent > length:
                    raise LocalProtocolError(f"request body longer than Content-Length {length}")
                transport.write(chunk)
            if self._write_paused:
                await self._drain()
        if self.closed:
            return
        if length is None:
            transport.write(b"0\r\n\r\n")
        elif sent != length:
            raise LocalProtocolError(f"request body of {sent} bytes, Content-Length {length}")
        self._sending = False

    async def _drain(self) -> None:
        self._drained = drained = self.loop.create_future()
        try:
            await drained
        finally:
            self._drained = None

    def _finish(self) -> None:
        """The response is complete: hand the connection back or close it."""
        response = self._response
        assert response is not None
        self._active = False
        self._response = None
        self._head = None
        if self.reading_paused:
            self.resume_reading()
        response._end(None)
        if self._broken or self._sending:
            self.abort()  # unread bytes from the server, or unsent ones of ours
        elif self._keep_alive and not self.closed:
            self.pool.release(self)
        else:
            self.close()

    def _fail(self, error: HTTPClientError) -> None:
        """The exchange cannot complete: tell whoever waits, then drop the connection."""
        self._shut(abort=True, error=error)

    # -- closing ----------------------------------------------------------------------

    def close(self) -> None:
        self._shut(abort=False)

    def abort(self) -> None:
        self._shut(abort=True)

    def _shut(self, abort: bool, error: HTTPClientError | None = None) -> None:
        if self.closed:
            return
        self.closed = True
        if self._active:
            self._active = False
            head, response = self._head, self._response
            self._head = self._response = None
            if response is not None:
                response._end(error or IncompleteResponse(f"{self.pool.origin}: connection closed"))
            elif head is not None and not head.done():
                head.set_exception(
                    error or ServerDisconnected(f"{self.pool.origin}: connection closed")
                )
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        self.pool.discard(self)
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def stale(self) -> bool:
        """Whether an idle connection has something to read: the server's close, usually.

        The loop may not have seen it yet; the socket has. Catching it here saves a
        request that could not be retried from being sent into a closing connection.
        """
        if self.closed:
            return True
        return self._poll is not None and bool(self._poll.poll(0))

    async def wait_closed(self) -> None:
        if self.transport is None:  # connection_lost has run
            return
        if self._lost is None:
            self._lost = self.loop.create_future()
        await self._lost

    # -- flow control -----------------------------------------------------------------

    def resume_reading(self) -> None:
        self.reading_paused = False
        self._activity = self.loop.time()  # the pause was the consumer's, not the upstream's
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._activity = self.loop.time()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._active or self.closed:
            return  # the next exchange arms it again
        now = self.loop.time()
        timeout = self.pool.read_timeout
        if self.reading_paused or self._blocked:
            deadline = now + timeout
        else:
            deadline = self._activity + timeout
        if deadline > now:
            self._timer = self.loop.call_at(deadline, self._on_timer)
            return
        self._fail(ReadTimeout(f"{self.pool.origin}: no data for {timeout:g}s"))

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poll = select.poll()
            self._poll.register(sock.fileno(), select.POLLIN)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self._active:
            self.abort()  # bytes nobody asked for: the connection cannot be trusted
            return
        self._activity = self.loop.time()
        self._answered = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._response is None:
                self._fail(RemoteProtocolError(f"{self.pool.origin}: unexpected upgrade"))
                return
            self._done, self._keep_alive = True, False  # 101: nothing of ours follows
        except httptools.HttpParserError as exc:
            self._fail(RemoteProtocolError(f"{self.pool.origin}: invalid HTTP response: {exc}"))
            return
        if self._done:
            self._finish()

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost says what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        why = f": {exc}" if exc else ""
        if self.closed:
            pass  # we closed it, and told the exchange why
        elif not self._active:
            self.close()  # an idle connection the server closed
        elif self._response is None:
            self._fail(
                ServerDisconnected(
                    f"{self.pool.origin}: connection closed before the response{why}",
                    answered=self._answered,
                )
            )
        elif exc is None and self._until_eof():
            self._done, self._keep_alive = True, False  # the end of a read-until-close body
            self._finish()
        else:
            self._fail(IncompleteResponse(f"{self.pool.origin}: response cut short{why}"))
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def _until_eof(self) -> bool:
        return self._content_length is None and not self._chunked and not self._head_only

    # -- httptools callbacks ----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._done or self._response is not None:
            self._broken = True  # a second message for one request
        self._headers = []
        self._content_length = None
        self._chunked = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._response is not None:
            return  # a chunked body's trailer: the head has been handed out already
        self._headers.append((name, value))
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            self._content_length = int(value)
        elif size == 17 and name.lower() == b"transfer-encoding":
            self._chunked = value.rstrip().lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        if self._done or self._response is not None:
            return
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            self._informational = True  # 100 Continue, 103 Early Hints: the answer follows
            return
        length = None if self._chunked else self._content_length
        self._response = response = Response(self, status, self._headers, length)
        if self._head_only:
            # The parser does not know the request was HEAD; it is replaced before reuse.
            self._stale_parser = True
            self._done = True
            self._keep_alive = self._parser.should_keep_alive()
        head = self._head
        if head is not None and not head.done():
            head.set_result(response)

    def on_body(self, body: bytes) -> None:
        response = self._response
        if response is None or self._done:
            self._broken = True
            return
        if response._feed(body) > HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        if self._response is None or self._done:
            return  # a message nobody asked for; on_message_begin marked it
        self._done = True
        self._keep_alive = self._parser.should_keep_alive()
