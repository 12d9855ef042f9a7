"""The edge holds under abuse: each fault is produced for real, over real sockets.

The proxy is served as ``tollhouse serve`` serves it (uvloop, the edge protocol,
its limits from settings), with small limits so that the faults are cheap to make.
"""

from __future__ import annotations

import json
import logging
import resource
import select
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import ProxyFactory
from tests.servers import bound_socket, serve
from tollhouse.app import Tollhouse, edge_limits, server_config
from tollhouse.config.settings import Settings
from tollhouse.proxy.edge import (
    Edge,
    EdgeLimits,
    default_max_connections,
    files_needed,
    raise_open_files_limit,
)

GET = b"GET /v1/assistants HTTP/1.1\r\nHost: tollhouse\r\n\r\n"


class Upstream:
    """An upstream that counts the requests it received whole."""

    def __init__(self) -> None:
        self.received = 0
        self.arrived = threading.Event()  # a request's head arrived
        self.app = Starlette(routes=[Route("/{path:path}", self._answer, methods=["GET", "POST"])])

    async def _answer(self, request: Request) -> Response:
        self.arrived.set()
        await request.body()
        self.received += 1
        return JSONResponse({"object": "list", "data": [], "has_more": False})


@dataclass
class EdgeProxy:
    upstream: Upstream
    port: int

    @contextmanager
    def connection(self) -> Iterator[socket.socket]:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            yield sock


@contextmanager
def edge_proxy(**settings: Any) -> Iterator[EdgeProxy]:
    """tollhouse in front of a counting upstream, served with ``serve``'s own wiring."""
    upstream = Upstream()
    with ExitStack() as stack:
        upstream_server = stack.enter_context(serve(upstream.app))
        state = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        config = Settings(
            upstream_url=upstream_server.url + "/v1",
            database_url=f"sqlite:///{state}/ledger.db",
            spool_path=state / "ledger.spool",
            **settings,
        )
        tollhouse = Tollhouse(config)
        limits = edge_limits(config, raise_open_files_limit())
        server = uvicorn.Server(server_config(tollhouse, limits, lifespan="on"))
        sock = stack.enter_context(bound_socket())
        loop = uvloop.new_event_loop()
        thread = threading.Thread(
            target=loop.run_until_complete, args=(server.serve([sock]),), daemon=True
        )
        thread.start()
        try:
            yield EdgeProxy(upstream, sock.getsockname()[1])
        finally:
            server.should_exit = True
            thread.join(10)
            loop.close()


def answer(sock: socket.socket, request: bytes = b"") -> tuple[HTTPResponse, dict[str, Any]]:
    """Send ``request`` (if any) and read one whole response; its JSON body too."""
    if request:
        sock.sendall(request)
    response = HTTPResponse(sock)
    response.begin()
    body = response.read()
    return response, json.loads(body) if body else {}


def closed_by_server(sock: socket.socket) -> bool:
    """The server ended the connection (after what was read so far)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def assert_openai_error(body: dict[str, Any], code: str, kind: str) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == kind
    assert body["error"]["code"] == code
    assert body["error"]["message"]


# Limits


@pytest.fixture
def small_limits() -> Iterator[EdgeProxy]:
    with edge_proxy(max_header_bytes=4096, max_headers=20) as proxy:
        yield proxy


def test_a_request_within_the_limits_is_forwarded(small_limits: EdgeProxy) -> None:
    headers = b"".join(b"X-Header-%d: %s\r\n" % (i, b"v" * 100) for i in range(18))
    with small_limits.connection() as sock:
        response, body = answer(sock, GET.replace(b"\r\n\r\n", b"\r\n" + headers + b"\r\n"))
    assert response.status == 200
    assert body["object"] == "list"
    assert small_limits.upstream.received == 1


def test_a_header_past_the_size_cap_is_refused_with_431(small_limits: EdgeProxy) -> None:
    big = b"X-Big: " + b"a" * 5000 + b"\r\n"
    with small_limits.connection() as sock:
        response, body = answer(sock, GET.replace(b"\r\n\r\n", b"\r\n" + big + b"\r\n"))
        assert response.status == 431
        assert_openai_error(body, "request_header_fields_too_large", "invalid_request_error")
        assert "4096 bytes" in body["error"]["message"]
        assert response.getheader("connection") == "close"
        assert closed_by_server(sock)
    assert small_limits.upstream.received == 0


def test_a_head_that_never_ends_is_refused_once_past_the_cap(small_limits: EdgeProxy) -> None:
    # One header line of a megabyte, with no end: the parser never hands it over whole,
    # so only what was read can tell it is too large.
    with small_limits.connection() as sock:
        sock.sendall(b"GET /v1/assistants HTTP/1.1\r\nX-Big: " + b"a" * (1 << 20))
        response, body = answer(sock)
        assert response.status == 431
        assert_openai_error(body, "request_header_fields_too_large", "invalid_request_error")
        assert closed_by_server(sock)
    assert small_limits.upstream.received == 0


def test_a_head_split_across_reads_is_counted_whole(small_limits: EdgeProxy) -> None:
    # Each part is under the cap, together they are past it.
    with small_limits.connection() as sock:
        sock.sendall(b"GET /v1/assistants HTTP/1.1\r\nX-One: " + b"a" * 3000 + b"\r\n")
        sock.sendall(b"X-Two: " + b"b" * 3000 + b"\r\n\r\n")
        response, body = answer(sock)
        assert response.status == 431
        assert_openai_error(body, "request_header_fields_too_large", "invalid_request_error")
    assert small_limits.upstream.received == 0


def test_a_body_read_with_its_head_is_no_part_of_the_head(small_limits: EdgeProxy) -> None:
    content = json.dumps({"name": "x" * 100_000}).encode()
    request = (
        b"POST /v1/assistants HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(content)
    )
    with small_limits.connection() as sock:
        response, _ = answer(sock, request + content)
    assert response.status == 200
    assert small_limits.upstream.received == 1


def test_a_long_url_counts_against_the_header_cap(small_limits: EdgeProxy) -> None:
    with small_limits.connection() as sock:
        response, _ = answer(
            sock, b"GET /v1/assistants?q=" + b"x" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
        )
    assert response.status == 431
    assert small_limits.upstream.received == 0


def test_too_many_headers_are_refused_with_431(small_limits: EdgeProxy) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(21))
    with small_limits.connection() as sock:
        response, body = answer(sock, GET.replace(b"\r\n\r\n", b"\r\n" + headers + b"\r\n"))
        assert response.status == 431
        assert_openai_error(body, "too_many_headers", "invalid_request_error")
        assert "more than 20 headers" in body["error"]["message"]
        assert closed_by_server(sock)
    assert small_limits.upstream.received == 0


# Slow heads


@pytest.fixture
def short_head_timeout() -> Iterator[EdgeProxy]:
    with edge_proxy(header_timeout=0.3) as proxy:
        yield proxy


def test_a_head_sent_too_slowly_gets_408_and_is_dropped(short_head_timeout: EdgeProxy) -> None:
    with short_head_timeout.connection() as sock:
        sock.sendall(b"GET /v1/assistants HTTP/1.1\r\nHost: tollhouse\r\nX-Slow: ")
        response, body = answer(sock)  # blocks until the server answers
        assert response.status == 408
        assert_openai_error(body, "request_timeout", "invalid_request_error")
        assert closed_by_server(sock)
    assert short_head_timeout.upstream.received == 0


def test_a_connection_that_sends_nothing_is_closed(short_head_timeout: EdgeProxy) -> None:
    with short_head_timeout.connection() as sock:
        assert closed_by_server(sock)


def test_the_next_head_on_a_kept_alive_connection_has_the_deadline_too(
    short_head_timeout: EdgeProxy,
) -> None:
    with short_head_timeout.connection() as sock:
        assert answer(sock, GET)[0].status == 200
        sock.sendall(b"GET /v1/assistants HTTP/1.1\r\nHost: tollhouse\r\n")
        response, _ = answer(sock)
        assert response.status == 408
        assert closed_by_server(sock)
    assert short_head_timeout.upstream.received == 1


def test_an_idle_kept_alive_connection_outlives_the_head_deadline(
    short_head_timeout: EdgeProxy,
) -> None:
    with short_head_timeout.connection() as sock:
        assert answer(sock, GET)[0].status == 200
        # Three head deadlines long, well within uvicorn's keep-alive timeout (5 s):
        # the server neither answers nor closes.
        readable, _, _ = select.select([sock], [], [], 1.0)
        assert readable == []
        assert answer(sock, GET)[0].status == 200
    assert short_head_timeout.upstream.received == 2


# The connection cap


def test_connections_past_the_cap_get_503_while_open_ones_keep_working() -> None:
    with edge_proxy(max_client_connections=2) as proxy, ExitStack() as stack:
        first = stack.enter_context(proxy.connection())
        second = stack.enter_context(proxy.connection())
        assert answer(first, GET)[0].status == 200
        assert answer(second, GET)[0].status == 200
        for _ in range(3):
            with proxy.connection() as refused:
                response, body = answer(refused, GET)
                assert response.status == 503
                assert_openai_error(body, "too_many_connections", "server_error")
                assert response.getheader("retry-after") == "1"
                assert closed_by_server(refused)
        assert answer(first, GET)[0].status == 200
        assert answer(second, GET)[0].status == 200
        assert proxy.upstream.received == 4


def test_the_default_cap_leaves_room_for_an_upstream_connection_each() -> None:
    for open_files in (1024, 20000, 65536, 1 << 20):
        cap = default_max_connections(open_files)
        assert files_needed(cap) <= open_files
        assert cap <= 10_000
    assert default_max_connections(1024) == 341


def test_limits_come_from_settings_and_a_cap_past_the_open_files_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="tollhouse.app")
    derived = edge_limits(Settings(max_headers=50, header_timeout=3), open_files=1024)
    assert (derived.max_connections, derived.max_headers, derived.header_timeout) == (341, 50, 3)
    assert derived.max_header_bytes == 65536
    assert caplog.records == []
    assert edge_limits(Settings(max_client_connections=5000), 1024).max_connections == 5000
    (warning,) = caplog.records
    assert "TOLLHOUSE_MAX_CLIENT_CONNECTIONS" in warning.getMessage()
    assert "limit of 1024" in warning.getMessage()


def test_serving_raises_the_open_files_limit_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard // 2), hard))
    assert raise_open_files_limit() == hard
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def test_a_flood_of_refusals_makes_one_log_line_per_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    edge = Edge(EdgeLimits(max_connections=8))
    caplog.set_level(logging.WARNING, logger="tollhouse.edge")
    for now in (0.0, 1.0, 2.0, 9.9, 10.0, 10.5):
        edge.note("connections", now, "cap reached")
    edge.note("timeout", 10.6, "slow head")
    assert [r.getMessage() for r in caplog.records] == [
        "refused a client connection: cap reached (1 of these since the last such line)",
        "refused a client connection: cap reached (4 of these since the last such line)",
        "refused a client connection: slow head (1 of these since the last such line)",
    ]


# Malformed HTTP


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="no-request-line"),
        pytest.param(b"GET /v1/assistants HTTP/9.9\r\nHost: t\r\n\r\n", id="bad-version"),
        pytest.param(b"GET /v1/assistants HTTP/1.1\r\nHo st: t\r\n\r\n", id="space-in-name"),
        pytest.param(b"GET /v1/assistants HTTP/1.1\r\nX-A: a\x01b\r\n\r\n", id="control-byte"),
        pytest.param(
            b"POST /v1/assistants HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"POST /v1/assistants HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
            id="chunk-without-crlf",
        ),
        pytest.param(
            b"POST /v1/assistants HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
            id="length-and-chunked",
        ),
    ],
)
def test_malformed_http_gets_an_openai_shaped_400(
    small_limits: EdgeProxy, request_bytes: bytes
) -> None:
    with small_limits.connection() as sock:
        response, body = answer(sock, request_bytes)
        assert response.status == 400
        assert response.getheader("content-type") == "application/json"
        assert_openai_error(body, "invalid_http_request", "invalid_request_error")
        assert closed_by_server(sock)
    assert small_limits.upstream.received == 0


def test_a_body_that_breaks_its_framing_later_gets_a_400(small_limits: EdgeProxy) -> None:
    # The head and a good chunk first: the request is under way when the framing breaks.
    with small_limits.connection() as sock:
        sock.sendall(
            b"POST /v1/assistants HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n"
        )
        assert small_limits.upstream.arrived.wait(10)  # forwarded as it streams in
        response, body = answer(sock, b"nothex\r\n}\r\n0\r\n\r\n")
        assert response.status == 400
        assert_openai_error(body, "invalid_http_request", "invalid_request_error")
        assert closed_by_server(sock)
    assert small_limits.upstream.received == 0


# Upstream details stay in the log


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_502_names_no_upstream_and_the_log_has_it_under_the_request_id(
    make_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    port = closed_port()
    caplog.set_level(logging.WARNING, logger="tollhouse.forward")
    with make_proxy(f"http://127.0.0.1:{port}/v1") as proxy:
        with pytest.raises(openai.InternalServerError) as caught:
            proxy.client().beta.assistants.list()
    error = caught.value
    assert error.status_code == 502
    raw = error.response.text
    for detail in ("127.0.0.1", str(port), "http://", "/v1", "localhost", "ssl", "certificate"):
        assert detail not in raw.lower()
    message = error.response.json()["error"]["message"]
    assert "try again" in message.lower()
    assert error.request_id is not None
    assert error.request_id in message
    logged = [r.getMessage() for r in caplog.records if error.request_id in r.getMessage()]
    assert len(logged) == 1
    assert f"127.0.0.1:{port}" in logged[0]
