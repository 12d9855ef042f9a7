"""The edge: client connections held to limits before a request reaches the proxy."""

from __future__ import annotations

import asyncio
import http
import logging
import math
import resource
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tollhouse.api.errors import ErrorResponse

log = logging.getLogger(__name__)

# File descriptors kept for everything but client and upstream connections: the
# database, Redis, the spool, logs, the event loop, the admin port.
RESERVED_FILES = 256
# The derived connection cap never exceeds this: past it, memory rather than
# descriptors is what runs out first.
MAX_DEFAULT_CONNECTIONS = 10_000
LINGER_SECONDS = 2.0  # how long a refused client may go on sending before it is cut off
# ... and one refused for the cap: enough to read a small answer, short under a flood
CAP_LINGER_SECONDS = 0.5
LINGERING_SHARE = 4  # connections refused for the cap may linger, 1/4 of the cap at once
LOG_EVERY_SECONDS = 10.0  # one log line per kind of refusal and period, with a count


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    """What one client connection may do before its request reaches the application."""

    max_connections: int
    max_header_bytes: int = 65536  # request line and headers together
    max_headers: int = 100
    header_timeout: float = 10.0  # from the connection (or the head's first bytes) to its end


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard one; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit (not Linux's way) cannot be the soft one: take macOS's OPEN_MAX.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 10240)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open files limit from %d to %d: %s", soft, target, exc)
        return soft
    return target


def default_max_connections(open_files: int) -> int:
    """Client connections accepted when not configured: what the descriptors allow.

    Each client request holds at most one upstream connection, and a quarter of the
    cap more may be lingering refusals (``files_needed``).
    """
    fitting = (open_files - RESERVED_FILES) * LINGERING_SHARE // (2 * LINGERING_SHARE + 1)
    return max(16, min(MAX_DEFAULT_CONNECTIONS, fitting))


def files_needed(max_connections: int) -> int:
    """Descriptors ``max_connections`` busy clients may need, upstream and refusals included."""
    return 2 * max_connections + lingering_cap(max_connections) + RESERVED_FILES


def lingering_cap(max_connections: int) -> int:
    """Connections refused for the cap that may linger at once."""
    return max(16, max_connections // LINGERING_SHARE)


def raw_answer(error: ErrorResponse) -> bytes:
    """An error as the bytes of a whole HTTP/1.1 response that closes the connection."""
    body = error.body()
    lines = [f"HTTP/1.1 {error.status} {http.HTTPStatus(error.status).phrase}".encode()]
    lines += [name + b": " + value for name, value in error.asgi_headers(body)]
    lines += [b"connection: close", b"", b""]
    return b"\r\n".join(lines) + body


def headers_too_large(limit: int) -> ErrorResponse:
    return ErrorResponse(
        status=431,
        message=(
            f"The request's headers are larger than {limit} bytes, the most tollhouse "
            "accepts. Send fewer or shorter headers; data belongs in the request body."
        ),
        type="invalid_request_error",
        code="request_header_fields_too_large",
    )


def too_many_headers(limit: int) -> ErrorResponse:
    return ErrorResponse(
        status=431,
        message=(
            f"The request has more than {limit} headers, the most tollhouse accepts. "
            "Send fewer headers."
        ),
        type="invalid_request_error",
        code="too_many_headers",
    )


def head_timed_out(seconds: float) -> ErrorResponse:
    return ErrorResponse(
        status=408,
        message=(
            f"The request's headers did not arrive within {seconds:g} seconds. Send the "
            "request line and headers at once, and check the network between the client "
            "and tollhouse."
        ),
        type="invalid_request_error",
        code="request_timeout",
    )


def too_many_connections() -> ErrorResponse:
    return ErrorResponse(
        status=503,
        message=(
            "tollhouse has as many client connections open as it accepts. Retry in a "
            "moment; clients should keep connections open and reuse them rather than "
            "open one per request."
        ),
        type="server_error",
        code="too_many_connections",
        headers=[(b"retry-after", b"1")],
    )


def malformed_request(reason: str) -> ErrorResponse:
    return ErrorResponse(
        status=400,
        message=(
            f"tollhouse could not read this HTTP request ({reason}): the request line, "
            "header bytes or chunked body framing do not follow HTTP/1.1. Check the "
            "client or anything rewriting requests between it and tollhouse."
        ),
        type="invalid_request_error",
        code="invalid_http_request",
    )


class HeadTooLarge(Exception):
    """Raised from a parser callback: the head is past a limit; carries the answer."""

    def __init__(self, answer: bytes) -> None:
        super().__init__()
        self.answer = answer


class Edge:
    """The state one server's connections share: limits, prepared answers, refusals."""

    def __init__(self, limits: EdgeLimits) -> None:
        self.limits = limits
        self.headers_too_large = raw_answer(headers_too_large(limits.max_header_bytes))
        self.too_many_headers = raw_answer(too_many_headers(limits.max_headers))
        self.head_timed_out = raw_answer(head_timed_out(limits.header_timeout))
        self.too_many_connections = raw_answer(too_many_connections())
        self.lingering = 0  # connections refused for the cap, lingering now
        self.max_lingering = lingering_cap(limits.max_connections)
        self._counts: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}

    def note(self, reason: str, now: float, detail: str) -> None:
        """Log a refusal; a flood of them makes one line per period, with its count."""
        count = self._counts.get(reason, 0) + 1
        if now - self._logged_at.get(reason, -math.inf) >= LOG_EVERY_SECONDS:
            log.warning(
                "refused a client connection: %s (%d of these since the last such line)",
                detail,
                count,
            )
            self._logged_at[reason] = now
            count = 0
        self._counts[reason] = count


def edge_protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """The protocol class for ``uvicorn.Config(http=...)``; one per server."""
    return cast(type[EdgeProtocol], type("EdgeProtocol", (EdgeProtocol,), {"edge": Edge(limits)}))


class EdgeProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, holding every connection to its server's ``edge``.

    It adds what uvicorn leaves out: a cap on the request head's size and header count
    (431), a deadline for the head to arrive (408), a cap on open connections (503),
    and OpenAI-shaped answers in place of its plain-text 400. Every refusal is
    answered, then the connection is half-closed and what the client still sends is
    read and dropped for a moment ("lingering close"), so that the answer is not lost
    to a TCP reset. Connections refused for the cap linger on descriptors of their own,
    a quarter of the cap at most; past that they are closed at once.

    A request whose head arrives in one read costs two attribute updates and two
    comparisons more; timers are armed only for a connection's first request and for
    heads that do not arrive in one read.
    """

    edge: ClassVar[Edge]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # a request head has begun and has not ended
        self._head_first = 0  # bytes of the read the head began in (some may not be its)
        self._head_read = 0  # bytes of the reads after that one, but for the current one
        self._read_size = 0  # bytes of the current read
        self._refused = False  # answered and closing: what still arrives is dropped
        self._lingers_for_cap = False  # one of the edge's lingering refusals for the cap

    # Connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        edge = self.edge
        if len(self.connections) >= edge.limits.max_connections:
            self.transport = transport
            edge.note(
                "connections",
                self.loop.time(),
                f"{edge.limits.max_connections} connections are open, the most this port accepts",
            )
            self._refuse(edge.too_many_connections, counted=False)
            return
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(edge.limits.header_timeout, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._lingers_for_cap:
            self._lingers_for_cap = False
            self.edge.lingering -= 1
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._unset_keepalive_if_required()
        in_head = self._in_head
        self._read_size = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse_head(exc.__context__.answer)
            else:
                self._malformed(exc)
            return
        except httptools.HttpParserError as exc:
            self._malformed(exc)
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        if self._in_head:
            self._head_pending(in_head)

    def _head_pending(self, continued: bool) -> None:
        """The head did not end in this read: count it, and give it a deadline.

        The read a head began in may hold the end of the last message too, so it is not
        counted here: a head that never ends is refused past the limit and a read.
        """
        if continued:
            self._head_read += self._read_size
        else:
            self._head_first = self._read_size
        limits = self.edge.limits
        if self._head_read > limits.max_header_bytes:
            self._refuse_head(self.edge.headers_too_large)
        elif self._head_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._head_timer = self.loop.call_later(limits.header_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self._in_head:
            self.edge.note("timeout", self.loop.time(), "the request head arrived too slowly")
            self._refuse(self.edge.head_timed_out)
        elif self.cycle is None:  # not a byte since the connection was opened
            self.transport.close()

    def _refuse_head(self, answer: bytes) -> None:
        self.edge.note("head", self.loop.time(), "the request head is past a limit")
        self._refuse(answer)

    def _malformed(self, exc: httptools.HttpParserError) -> None:
        reason = str(exc).strip().rstrip(".") or type(exc).__name__
        self.edge.note("malformed", self.loop.time(), f"invalid HTTP request ({reason})")
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The body broke its framing: the application hears that the client left.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:  # an answer is on its way; nothing else can follow
                self.transport.close()
                return
        self._refuse(raw_answer(malformed_request(reason)))

    def _refuse(self, answer: bytes, counted: bool = True) -> None:
        """Answer, then stop reading requests; linger so the client gets to read it.

        A connection ``counted`` among the open ones lingers on its own descriptor; one
        refused for the cap does so only while few others do.
        """
        self._refused = True
        self._in_head = False
        self._cancel_head_timer()
        if self.flow is not None:  # a pipelined request may have paused reading
            self.flow.resume_reading()
        transport = self.transport
        transport.write(answer)
        edge = self.edge
        if not transport.can_write_eof() or (not counted and edge.lingering >= edge.max_lingering):
            transport.close()
            return
        transport.write_eof()
        linger = LINGER_SECONDS
        if not counted:
            edge.lingering += 1
            self._lingers_for_cap = True
            linger = CAP_LINGER_SECONDS
        self._linger_timer = self.loop.call_later(linger, transport.close)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    # Parser callbacks

    def on_message_begin(self) -> None:
        self._in_head = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        limits = self.edge.limits
        if len(self.headers) > limits.max_headers:
            raise HeadTooLarge(self.edge.too_many_headers)
        # The reads the head came in bound its size; only past the limit is it counted.
        read = self._head_first + self._head_read + self._read_size
        self._head_first = self._head_read = 0
        if read > limits.max_header_bytes and (
            head_size(self.url, self.headers) > limits.max_header_bytes
        ):
            raise HeadTooLarge(self.edge.headers_too_large)
        super().on_headers_complete()


def head_size(url: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """The bytes of a request head's target and header lines."""
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)
