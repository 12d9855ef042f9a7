"""The upstream HTTP/1.1 client against small scripted servers on loopback ports.

Each test is a coroutine run once on asyncio's own loop and once on uvloop (what
``tollhouse serve`` uses). The servers are ``asyncio.start_server`` handlers on the
same loop that say exactly what goes over the wire, including what well-behaved
servers never do.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tollhouse import upstream_response
from tollhouse.forward import (
    TRANSPORT_ERRORS,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnavailable,
    map_transport_errors,
)
from tollhouse.upstream_client import (
    Client,
    ConnectError,
    ConnectTimeout,
    IncompleteResponse,
    LocalProtocolError,
    Origin,
    PoolTimeout,
    ReadTimeout,
    RemoteProtocolError,
    ServerDisconnected,
    request_head,
)

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, T]], T]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
MB = 1024 * 1024


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner[Any]:
    def runner(coroutine: Coroutine[Any, Any, T]) -> T:
        if request.param == "uvloop":
            return uvloop.run(coroutine)
        return asyncio.run(coroutine)

    return runner


# -- a scripted server ------------------------------------------------------------------


@dataclass
class Request:
    line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes  # the head as it came, up to and including the blank line

    def header(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a connection, body and all; None when the client closed it."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    line, *rest = raw[:-4].split(b"\r\n")
    headers = [(k, v) for k, v in (item.split(b": ", 1) for item in rest)]
    request = Request(line, headers, b"", raw)
    if length := request.header(b"content-length"):
        request.body = await reader.readexactly(int(length[0]))
    elif request.header(b"transfer-encoding") == [b"chunked"]:
        parts = []
        while size := int((await reader.readuntil(b"\r\n"))[:-2], 16):
            parts.append(await reader.readexactly(size))
            assert await reader.readexactly(2) == b"\r\n"
        assert await reader.readexactly(2) == b"\r\n"
        request.body = b"".join(parts)
    return request


async def until_closed(reader: asyncio.StreamReader) -> None:
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass


def ok(body: bytes = b"ok", *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(body), body)


@dataclass
class Server:
    port: int
    connections: int = 0
    requests: list[Request] = field(default_factory=list)

    def origin(self, host: str = "127.0.0.1", scheme: str = "http") -> Origin:
        return Origin(scheme, host, self.port)


@asynccontextmanager
async def serve(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """Run ``handler(reader, writer)`` for each connection; ``Server`` counts them."""
    tasks: set[asyncio.Task[None]] = set()
    server_state = Server(0)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server_state.connections += 1
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client dropped the connection: what some tests do on purpose
        except asyncio.CancelledError:
            pass  # the test is over (asyncio's own callback chokes on a cancelled handler)
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(connected, "127.0.0.1", 0, ssl=ssl_context)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def answering(
    respond: Callable[[Request], bytes | None], server: list[Server] | None = None
) -> Handler:
    """A keep-alive server: each request gets ``respond(request)``; None closes instead."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            if server:
                server[0].requests.append(request)
            answer = respond(request)
            if answer is None:
                return
            writer.write(answer)
            await writer.drain()

    return handler


@asynccontextmanager
async def keep_alive_server(
    respond: Callable[[Request], bytes | None],
) -> AsyncIterator[Server]:
    holder: list[Server] = []
    async with serve(answering(respond, holder)) as server:
        holder.append(server)
        yield server


@asynccontextmanager
async def client(**options: Any) -> AsyncIterator[Client]:
    options.setdefault("connect_timeout", 5.0)
    options.setdefault("read_timeout", 10.0)
    http = Client(**options)
    try:
        yield http
    finally:
        await http.aclose()


async def get(
    http: Client, server: Server, target: bytes = b"/", method: str = "GET", **kw: Any
) -> tuple[int, bytes]:
    response = await http.request(
        server.origin(), method, target, kw.get("headers", []), kw.get("body")
    )
    try:
        return response.status, await response.read()
    finally:
        response.close()


# -- the request and the response pass through unchanged --------------------------------


def test_request_goes_out_exactly_as_given(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok()) as server, client() as http:
            headers = [(b"X-Mixed-Case", b"A b"), (b"x-dup", b"1"), (b"x-dup", b"2")]
            target = b"/v1/files/a%2Fb/content?include[]=x%5B*%5D&flag"
            assert await get(http, server, target, headers=headers) == (200, b"ok")
            assert await get(http, server, b"/v1/x", "POST", body=b'{"a":1}') == (200, b"ok")
        first, second = server.requests
        host = b"Host: 127.0.0.1:%d\r\n" % server.port
        assert first.raw == (
            b"GET /v1/files/a%2Fb/content?include[]=x%5B*%5D&flag HTTP/1.1\r\n"
            + host
            + b"X-Mixed-Case: A b\r\nx-dup: 1\r\nx-dup: 2\r\n\r\n"
        )
        # a bytes body gets its length, and nothing else is added
        assert second.raw == b"POST /v1/x HTTP/1.1\r\n" + host + b"Content-Length: 7\r\n\r\n"
        assert second.body == b'{"a":1}'

    run(scenario())


def test_response_comes_back_exactly_as_sent(run: Runner[None]) -> None:
    body = b"\x1f\x8b\x08\x00 not really gzip \xff"
    answer = (
        b"HTTP/1.1 201 Created\r\nX-Dup: a\r\nx-dup: b\r\nContent-Encoding: gzip\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def scenario() -> None:
        async with keep_alive_server(lambda r: answer) as server, client() as http:
            response = await http.request(server.origin(), "GET", b"/", [])
            assert response.status == 201
            assert response.headers == [
                (b"X-Dup", b"a"),
                (b"x-dup", b"b"),
                (b"Content-Encoding", b"gzip"),
                (b"content-length", b"%d" % len(body)),
            ]
            assert response.content_length == len(body)
            assert await response.read() == body  # not decompressed

    run(scenario())


@pytest.mark.parametrize(
    ("headers", "target", "error"),
    [
        ([(b"x-a", b"1\r\nx-injected: 1")], b"/", ValueError),
        ([(b"x-a\r\nx-b", b"1")], b"/", ValueError),
        ([], b"/a\r\nb", ValueError),
        ([], b"/a b", ValueError),
        ([(b"Host", b"elsewhere")], b"/", ValueError),
        ([(b"Transfer-Encoding", b"chunked")], b"/", ValueError),
        ([(b"Content-Length", b"3")], b"/", LocalProtocolError),  # the body has 2 bytes
    ],
)
def test_requests_that_cannot_be_sent_safely_are_refused(
    headers: list[tuple[bytes, bytes]], target: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        request_head("POST", target, b"Host: h\r\n", headers, b"ab")


# -- keep-alive and the pool ------------------------------------------------------------


def test_sequential_requests_share_one_connection(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok(r.line)) as server, client() as http:
            for n in range(20):
                assert await get(http, server, b"/%d" % n) == (200, b"GET /%d HTTP/1.1" % n)
        assert server.connections == 1

    run(scenario())


def test_the_pool_never_opens_more_than_its_limit(run: Runner[None]) -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        arrived = asyncio.Condition()
        waiting = 0

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal waiting
            while await read_request(reader) is not None:
                async with arrived:
                    waiting += 1
                    arrived.notify_all()
                await release.wait()
                writer.write(ok())
                await writer.drain()

        async with serve(handler) as server, client(max_connections=2) as http:
            requests = asyncio.gather(*(get(http, server) for _ in range(6)))
            async with arrived:
                await arrived.wait_for(lambda: waiting == 2)
            assert server.connections == 2
            release.set()
            assert await requests == [(200, b"ok")] * 6
        assert server.connections == 2

    run(scenario())


def test_waiting_for_a_pooled_connection_is_bounded_by_the_connect_timeout(
    run: Runner[None],
) -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        arrived = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader) is not None:
                arrived.set()
                await release.wait()
                writer.write(ok())

        async with serve(handler) as server, client(max_connections=1, connect_timeout=0.1) as http:
            first = asyncio.ensure_future(get(http, server))
            await arrived.wait()
            with pytest.raises(PoolTimeout):
                await get(http, server)
            release.set()
            assert await first == (200, b"ok")
            assert await get(http, server) == (200, b"ok")  # the slot was given back
        assert server.connections == 1

    run(scenario())


def test_an_idle_connection_the_server_closed_is_not_used(run: Runner[None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await read_request(reader) is not None:
                writer.write(ok())  # keep-alive by HTTP/1.1's default ...
                await writer.drain()
                # ... and closed at once, as a server's idle timeout would

        async with serve(handler) as server, client() as http:
            for _ in range(5):
                assert await get(http, server) == (200, b"ok")
                assert await get(http, server, method="POST", body=b"x") == (200, b"ok")
        assert server.connections == 10

    run(scenario())


def test_a_request_lost_on_a_dead_pooled_connection_is_retried_if_idempotent(
    run: Runner[None],
) -> None:
    """The server closes a reused connection on the next request instead of answering."""

    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            first = await read_request(reader)
            if first is not None and first.line.startswith(b"GET /fresh"):
                writer.write(ok())
                await writer.drain()
                await read_request(reader)  # a reused connection: dropped unanswered
            elif first is not None:
                writer.write(ok(first.line, b"Connection: close"))

        async with serve(handler) as server, client() as http:
            assert await get(http, server, b"/fresh") == (200, b"ok")
            assert await get(http, server, b"/again") == (200, b"GET /again HTTP/1.1")
            assert server.connections == 2
            # a POST may have been acted on: it is not sent twice
            assert await get(http, server, b"/fresh") == (200, b"ok")
            with pytest.raises(ServerDisconnected):
                await get(http, server, b"/create", "POST", body=b"{}")
            assert server.connections == 3

    run(scenario())


def test_connection_close_is_respected(run: Runner[None]) -> None:
    async def scenario() -> None:
        answer = ok(b"bye", b"Connection: close")
        eof = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await read_request(reader) is not None:
                writer.write(answer)  # and leaves the connection open
                await writer.drain()
                await until_closed(reader)
                eof.set()

        async with serve(handler) as server, client() as http:
            assert await get(http, server) == (200, b"bye")
            await eof.wait()
            assert await get(http, server) == (200, b"bye")
        assert server.connections == 2

    run(scenario())


def test_an_http_1_0_answer_is_not_kept_alive(run: Runner[None]) -> None:
    async def scenario() -> None:
        answer = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"
        async with keep_alive_server(lambda r: answer) as server, client() as http:
            assert await get(http, server) == (200, b"ok")
            assert await get(http, server) == (200, b"ok")
        assert server.connections == 2

    run(scenario())


# -- bodies ----------------------------------------------------------------------------


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)  # let the loop run between pieces, as a real source would
        yield part


def test_a_streamed_request_body_is_chunked_unless_its_length_is_given(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok(r.body)) as server, client() as http:
            body = pieces(b"hello ", b"", b"chunked ", b"world")
            assert await get(http, server, method="POST", body=body) == (
                200,
                b"hello chunked world",
            )
            sized = pieces(b"abc", b"def")
            headers = [(b"content-length", b"6")]
            assert await get(http, server, method="PUT", headers=headers, body=sized) == (
                200,
                b"abcdef",
            )
        chunked, raw = server.requests
        assert chunked.header(b"transfer-encoding") == [b"chunked"]
        assert chunked.header(b"content-length") == []
        assert raw.header(b"transfer-encoding") == []
        assert server.connections == 1

    run(scenario())


def test_a_streamed_body_that_does_not_match_its_length_is_not_sent_whole(
    run: Runner[None],
) -> None:
    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok()) as server, client() as http:
            for parts in ((b"abc", b"defg"), (b"ab",)):
                with pytest.raises(LocalProtocolError):
                    await get(
                        http,
                        server,
                        method="POST",
                        headers=[(b"content-length", b"6")],
                        body=pieces(*parts),
                    )
            assert await get(http, server) == (200, b"ok")
        assert server.requests[-1].line == b"GET / HTTP/1.1"

    run(scenario())


def test_a_failing_body_source_aborts_the_exchange(run: Runner[None]) -> None:
    class SourceGone(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"part"
        raise SourceGone

    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok()) as server, client() as http:
            with pytest.raises(SourceGone):
                await http.request(server.origin(), "POST", b"/", [], failing())
            assert await get(http, server) == (200, b"ok")
        assert server.connections == 2

    run(scenario())


def test_an_early_answer_ends_the_upload_and_the_connection(run: Runner[None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ok(b"too large"))  # before reading the body
            await writer.drain()
            while await reader.read(65536):
                pass

        async with serve(handler) as server, client() as http:
            body = pieces(*[b"x" * 1024] * 64)
            assert await get(http, server, method="POST", body=body) == (200, b"too large")
            assert await get(http, server) == (200, b"too large")
        assert server.connections == 2

    run(scenario())


def test_a_chunked_response_streams_chunk_by_chunk(run: Runner[None]) -> None:
    async def scenario() -> None:
        sent = asyncio.Event()
        next_one = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                await writer.drain()
                sent.set()
                await next_one.wait()
                writer.write(b"6;ext=1\r\nsecond\r\n0\r\nX-Trailer: t\r\n\r\n")

        async with serve(handler) as server, client() as http:
            response = await http.request(server.origin(), "GET", b"/events", [])
            assert response.content_length is None
            chunks = response.chunks()
            assert await anext(chunks) == b"first"  # before the rest was even written
            next_one.set()
            assert [chunk async for chunk in chunks] == [b"second"]
            assert response.headers == [(b"Transfer-Encoding", b"chunked")]
            assert await get(http, server) == (200, b"firstsecond")
        assert server.connections == 1

    run(scenario())


def test_a_response_without_length_is_read_until_close(run: Runner[None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await read_request(reader) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
                await writer.drain()
                writer.write(b"it, until the end")

        async with serve(handler) as server, client() as http:
            assert await get(http, server) == (200, b"all of it, until the end")
            assert await get(http, server) == (200, b"all of it, until the end")
        assert server.connections == 2

    run(scenario())


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: x/y\r\n\r\n"),
        ("HEAD", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b'HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: "e"\r\n\r\n'),
    ],
)
def test_answers_without_a_body_keep_the_connection(
    run: Runner[None], method: str, answer: bytes
) -> None:
    async def scenario() -> None:
        def respond(request: Request) -> bytes:
            return answer if request.line.startswith(b"HEAD") or b"/empty" in request.line else ok()

        async with keep_alive_server(respond) as server, client() as http:
            target = b"/" if method == "HEAD" else b"/empty"
            for _ in range(3):
                response = await http.request(server.origin(), method, target, [])
                assert await response.read() == b""
                assert [chunk async for chunk in response.chunks()] == []
                assert await get(http, server) == (200, b"ok")
        assert server.connections == 1

    run(scenario())


def test_informational_answers_are_skipped(run: Runner[None]) -> None:
    async def scenario() -> None:
        answer = (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
            + ok(b"final")
        )
        async with keep_alive_server(lambda r: answer) as server, client() as http:
            response = await http.request(server.origin(), "POST", b"/", [], b"x")
            assert response.status == 200
            assert response.headers == [(b"Content-Length", b"5")]
            assert await response.read() == b"final"
            assert await get(http, server) == (200, b"final")
        assert server.connections == 1

    run(scenario())


def test_a_response_closed_before_its_end_drops_the_connection(run: Runner[None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (request := await read_request(reader)) is not None:
                if b"/big" in request.line:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\nstart")
                    await reader.read()  # until the client gives up
                    return
                writer.write(ok())

        async with serve(handler) as server, client() as http:
            response = await http.request(server.origin(), "GET", b"/big", [])
            assert await anext(response.chunks()) == b"start"
            response.close()
            with pytest.raises(IncompleteResponse):
                await response.read()
            assert await get(http, server) == (200, b"ok")
        assert server.connections == 2

    run(scenario())


def test_a_cancelled_request_drops_its_connection(run: Runner[None]) -> None:
    async def scenario() -> None:
        arrived = asyncio.Event()
        gone = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (request := await read_request(reader)) is not None:
                if b"/slow" in request.line:
                    arrived.set()
                    await until_closed(reader)
                    gone.set()
                    return
                writer.write(ok())

        async with serve(handler) as server, client() as http:
            slow = asyncio.ensure_future(get(http, server, b"/slow"))
            await arrived.wait()
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            await gone.wait()
            assert await get(http, server) == (200, b"ok")
        assert server.connections == 2

    run(scenario())


# -- back-pressure ---------------------------------------------------------------------


async def fall_behind(turns: int = 20) -> None:
    """Let the loop run a few times, as a consumer busy elsewhere would."""
    for _ in range(turns):
        await asyncio.sleep(0)


def test_a_slow_reader_of_a_large_download_buffers_little(run: Runner[Any]) -> None:
    total = 200 * MB
    block = b"x" * (256 * 1024)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
            for _ in range(total // len(block)):
                writer.write(block)
                await writer.drain()

    async def scenario() -> tuple[int, int]:
        async with serve(handler) as server, client() as http:
            tracemalloc.start()
            try:
                response = await http.request(server.origin(), "GET", b"/download", [])
                received = 0
                async for chunk in response.chunks():
                    received += len(chunk)
                    await fall_behind()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            return received, peak

    received, peak = run(scenario())
    assert received == total
    assert peak < 4 * MB


def test_a_large_upload_to_a_slow_server_buffers_little(run: Runner[Any]) -> None:
    total = 200 * MB
    block = b"y" * (256 * 1024)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        received = 0
        while chunk := await reader.read(64 * 1024):
            received += len(chunk)
            if received >= total:
                break
            await fall_behind()
        writer.write(ok(b"%d" % received))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(total // len(block)):
            yield bytes(block[:-1]) + b"y"  # fresh bytes, as a real source gives

    async def scenario() -> tuple[tuple[int, bytes], int]:
        async with serve(handler) as server, client() as http:
            tracemalloc.start()
            try:
                headers = [(b"content-length", b"%d" % total)]
                answer = await get(http, server, method="POST", headers=headers, body=body())
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            return answer, peak

    answer, peak = run(scenario())
    assert answer == (200, b"%d" % total)
    assert peak < 4 * MB


# -- failures --------------------------------------------------------------------------


def test_a_closed_port_is_a_connect_error(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with serve(answering(lambda r: ok())) as server:
            port = server.port
        async with client() as http:
            with pytest.raises(ConnectError):
                await http.request(Origin("http", "127.0.0.1", port), "GET", b"/", [])

    run(scenario())


def test_a_silent_server_is_a_read_timeout(run: Runner[None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (request := await read_request(reader)) is not None:
                if b"/part" in request.line:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                await reader.read()  # and nothing more

        async with serve(handler) as server, client(read_timeout=0.2) as http:
            with pytest.raises(ReadTimeout):
                await http.request(server.origin(), "GET", b"/none", [])
            response = await http.request(server.origin(), "GET", b"/part", [])
            chunks = response.chunks()
            assert await anext(chunks) == b"abc"
            with pytest.raises(ReadTimeout):
                await anext(chunks)

    run(scenario())


def test_a_consumer_that_is_behind_is_not_a_read_timeout(run: Runner[None]) -> None:
    total = 32 * MB  # far more than the socket buffers and the client's own hold

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
            block = b"z" * MB
            for _ in range(total // MB):
                writer.write(block)
                await writer.drain()

    async def scenario() -> None:
        async with serve(handler) as server, client(read_timeout=0.2) as http:
            response = await http.request(server.origin(), "GET", b"/", [])
            chunks = response.chunks()
            received = len(await anext(chunks))
            # Busy elsewhere for three read timeouts: the upstream waits on us, not we on it.
            await asyncio.sleep(0.6)
            async for chunk in chunks:
                received += len(chunk)
            assert received == total

    run(scenario())


def test_a_server_that_never_finishes_the_handshake_is_a_connect_timeout(
    run: Runner[None],
) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        async with serve(handler) as server, client(connect_timeout=0.2) as http:
            with pytest.raises(ConnectTimeout):
                await http.request(server.origin(scheme="https"), "GET", b"/", [])

    run(scenario())


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 abc\r\n\r\n", RemoteProtocolError),
        (b"SSH-2.0-OpenSSH_9.6\r\n", RemoteProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", IncompleteResponse),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", IncompleteResponse),
        (b"HTTP/1.1 200 OK\r\nContent-Le", ServerDisconnected),
        (b"", ServerDisconnected),
    ],
)
def test_broken_answers(run: Runner[None], answer: bytes, error: type[Exception]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await read_request(reader) is not None:
                writer.write(answer)
                await writer.drain()  # then the connection closes

        async with serve(handler) as server, client() as http:
            with pytest.raises(error):
                await get(http, server)
            assert server.connections == 1  # a fresh connection is never retried

    run(scenario())


def test_bytes_after_the_end_of_a_response_spoil_the_connection(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok() + b"HTTP/1.1 200 OK\r\n") as server:
            async with client() as http:
                assert await get(http, server) == (200, b"ok")
                assert await get(http, server) == (200, b"ok")
        assert server.connections == 2

    run(scenario())


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_https_with_sni_and_keep_alive(run: Runner[None], certificate: tuple[Path, Path]) -> None:
    cert_file, key_file = certificate
    names: list[str | None] = []

    async def scenario() -> None:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert_file, key_file)
        server_context.sni_callback = lambda sock, name, context: names.append(name)
        trusting = ssl.create_default_context(cafile=str(cert_file))
        holder: list[Server] = []
        handler = answering(lambda r: ok(r.body or r.line), holder)
        async with serve(handler, server_context) as server, client(ssl_context=trusting) as http:
            holder.append(server)
            origin = server.origin("localhost", "https")
            for n in range(3):
                response = await http.request(origin, "POST", b"/", [], b"secret %d" % n)
                assert (response.status, await response.read()) == (200, b"secret %d" % n)
            assert server.requests[0].header(b"host") == [b"localhost:%d" % server.port]
            assert server.connections == 1
            # the default context does not trust a self-signed certificate
            async with client() as default:
                with pytest.raises(ConnectError, match="certificate verify failed"):
                    await default.request(origin, "GET", b"/", [])

    run(scenario())
    assert names[0] == "localhost"


# -- every failure maps to one tollhouse error ------------------------------------------


def client_exceptions() -> set[type[BaseException]]:
    return {
        value
        for value in vars(upstream_response).values()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == upstream_response.__name__
    }


def test_every_client_exception_is_mapped() -> None:
    mapped = {source for source, _ in TRANSPORT_ERRORS}
    unmapped = {cls.__name__ for cls in client_exceptions() - mapped}
    assert not unmapped, f"upstream_client exceptions missing from TRANSPORT_ERRORS: {unmapped}"


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (ConnectError, UpstreamUnavailable),
        (ServerDisconnected, UpstreamUnavailable),
        (ConnectTimeout, UpstreamTimeout),
        (PoolTimeout, UpstreamTimeout),
        (ReadTimeout, UpstreamTimeout),
        (IncompleteResponse, UpstreamProtocolError),
        (RemoteProtocolError, UpstreamProtocolError),
        (LocalProtocolError, UpstreamError),
    ],
)
def test_a_client_exception_becomes_its_tollhouse_error(
    source: type[Exception], target: type[UpstreamError]
) -> None:
    with pytest.raises(UpstreamError) as caught, map_transport_errors("https://api.example/v1"):
        raise source("what happened")
    assert type(caught.value) is target
    assert isinstance(caught.value.__cause__, source)
    assert caught.value.detail == "what happened"
    assert caught.value.upstream == "https://api.example/v1"
