"""The upstream client (``Forwarder`` over aiohttp) against small scripted servers on loopback.

Each test is a coroutine run once on asyncio's own loop and once on uvloop (what
``tollhouse serve`` uses). The servers are ``asyncio.start_server`` handlers on the
same loop that say exactly what goes over the wire, including what well-behaved
servers never do; TLS servers use certificates from a CA made for the test, and the
egress proxy is a small CONNECT and absolute-form proxy written here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import openai
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.conftest import ProxyFactory
from tests.servers import serve as serve_app
from tollhouse.upstream.forward import (
    TRANSPORT_ERRORS,
    Forwarder,
    UpstreamConfigError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamSettings,
    UpstreamTimeout,
    UpstreamUnavailable,
    egress_proxy,
    forwarded_headers,
    map_transport_errors,
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


@pytest.fixture(autouse=True)
def no_ambient_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback servers only: a proxy in the test runner's environment must not interfere."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


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


async def until_closed_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await until_closed(reader)


def ok(body: bytes = b"ok", *headers: bytes) -> bytes:
    extra = b"".join(h + b"\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(body), body)


@dataclass
class Server:
    port: int
    connections: int = 0
    requests: list[Request] = field(default_factory=list)
    peers: list[Any] = field(default_factory=list)  # TLS client certificates seen

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}"


@asynccontextmanager
async def serve(
    handler: Handler, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    """Run ``handler(reader, writer)`` for each connection; ``Server`` counts them."""
    tasks: set[asyncio.Task[None]] = set()
    state = Server(0)

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        if ssl_context is not None:
            state.peers.append(writer.get_extra_info("peercert"))
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass  # the client dropped the connection: what some tests do on purpose
        except asyncio.CancelledError:
            pass  # the test is over (asyncio's own callback chokes on a cancelled handler)
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(connected, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def answering(respond: Callable[[Request], bytes | None], holder: list[Server]) -> Handler:
    """A keep-alive server: each request gets ``respond(request)``; None closes instead."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (request := await read_request(reader)) is not None:
            holder[0].requests.append(request)
            answer = respond(request)
            if answer is None:
                return
            writer.write(answer)
            await writer.drain()

    return handler


@asynccontextmanager
async def keep_alive_server(
    respond: Callable[[Request], bytes | None], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Server]:
    holder: list[Server] = []
    async with serve(answering(respond, holder), ssl_context) as server:
        holder.append(server)
        yield server


@asynccontextmanager
async def forwarder(url: str, **options: Any) -> AsyncIterator[Forwarder]:
    options.setdefault("connect_timeout", 5.0)
    options.setdefault("read_timeout", 10.0)
    client = Forwarder(UpstreamSettings(url=url, **options))
    await client.open()
    try:
        yield client
    finally:
        await client.close()


async def get(
    client: Forwarder, path: str = "/", method: str = "GET", query: str = "", **kw: Any
) -> tuple[int, bytes]:
    response = await client.send(method, path, query, kw.get("headers", []), kw.get("body"))
    try:
        return response.status, await response.read()
    finally:
        response.close()


# -- the request and the response pass through unchanged --------------------------------


def test_request_goes_out_exactly_as_given(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok()) as server, forwarder(server.url()) as http:
            headers = [(b"X-Mixed-Case", b"A b"), (b"x-dup", b"1"), (b"x-dup", b"2")]
            query = "include[]=x%5B*%5D&flag&odd=%zz"
            path = "/v1/files/a%2Fb/../%7e/content"
            assert await get(http, path, query=query, headers=headers) == (200, b"ok")
            assert await get(http, "/v1/x", "POST", body=b'{"a":1}') == (200, b"ok")
            accents = [(b"x-name", "café".encode())]
            assert await get(http, "/v1/y", "DELETE", headers=accents) == (200, b"ok")
        first, second, third = server.requests
        host = b"Host: 127.0.0.1:%d\r\n" % server.port
        assert first.raw == (
            b"GET /v1/files/a%2Fb/../%7e/content?include[]=x%5B*%5D&flag&odd=%zz HTTP/1.1\r\n"
            + host
            + b"X-Mixed-Case: A b\r\nx-dup: 1\r\nx-dup: 2\r\n\r\n"
        )
        # a bytes body gets its length, and nothing else is added: no User-Agent,
        # Accept, Accept-Encoding or Content-Type of aiohttp's own
        assert second.raw == b"POST /v1/x HTTP/1.1\r\n" + host + b"Content-Length: 7\r\n\r\n"
        assert second.body == b'{"a":1}'
        # a method that may carry a body says it has none
        assert third.raw == (
            b"DELETE /v1/y HTTP/1.1\r\n"
            + host
            + "x-name: café\r\n".encode()
            + b"Content-Length: 0\r\n\r\n"
        )

    run(scenario())


def test_the_upstream_url_path_prefixes_every_request(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok()) as server:
            async with forwarder(server.url() + "/openai/v1/") as http:
                await get(http, "/v1/threads", query="limit=1")
        assert server.requests[0].line == b"GET /openai/v1/threads?limit=1 HTTP/1.1"

    run(scenario())


def test_response_comes_back_exactly_as_sent(run: Runner[None]) -> None:
    body = b"\x1f\x8b\x08\x00 not really gzip \xff"
    answer = (
        b"HTTP/1.1 201 Created\r\nX-Dup: a\r\nx-dup: b\r\nContent-Encoding: gzip\r\n"
        b"Content-Type: Application/JSON; charset=utf-8\r\nConnection: keep-alive\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )

    async def scenario() -> None:
        async with keep_alive_server(lambda r: answer) as server, forwarder(server.url()) as http:
            response = await http.send("GET", "/", "", [(b"accept-encoding", b"gzip")], None)
            assert response.status == 201
            assert response.headers == [
                (b"X-Dup", b"a"),
                (b"x-dup", b"b"),
                (b"Content-Encoding", b"gzip"),
                (b"Content-Type", b"Application/JSON; charset=utf-8"),
                (b"content-length", b"%d" % len(body)),
            ]
            assert response.content_length == len(body)
            assert response.content_type == "application/json"
            assert await response.read() == body  # not decompressed
            response.close()

    run(scenario())


def test_redirects_are_answers_and_cookies_are_not_kept(run: Runner[None]) -> None:
    redirect = ok(b"", b"Location: /elsewhere", b"Set-Cookie: session=tenant-a").replace(
        b"200 OK", b"302 Found"
    )

    async def scenario() -> None:
        async with keep_alive_server(lambda r: redirect) as server:
            # a host name: aiohttp's own cookie jar would ignore cookies of an IP address
            async with forwarder(server.url("localhost")) as http:
                assert await get(http, "/v1/a") == (302, b"")
                assert await get(http, "/v1/b") == (302, b"")
        assert [r.line for r in server.requests] == [b"GET /v1/a HTTP/1.1", b"GET /v1/b HTTP/1.1"]
        assert server.requests[1].header(b"cookie") == []  # never another tenant's cookie

    run(scenario())


def test_hop_by_hop_headers_and_those_connection_names_are_dropped() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Hop"),
        (b"X-Hop", b"1"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Host", b"elsewhere"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"X-Kept", b"2"),
        (b"Authorization", b"Bearer sk"),
    ]
    assert forwarded_headers(headers) == [(b"X-Kept", b"2"), (b"Authorization", b"Bearer sk")]


# -- keep-alive and the pool ------------------------------------------------------------


def test_sequential_requests_share_one_connection(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with (
            keep_alive_server(lambda r: ok(r.line)) as server,
            forwarder(server.url()) as http,
        ):
            for n in range(20):
                assert await get(http, f"/{n}") == (200, b"GET /%d HTTP/1.1" % n)
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

        async with serve(handler) as server, forwarder(server.url(), max_connections=2) as http:
            requests = asyncio.gather(*(get(http) for _ in range(6)))
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

        options = {"max_connections": 1, "connect_timeout": 0.1}
        async with serve(handler) as server, forwarder(server.url(), **options) as http:
            first = asyncio.ensure_future(get(http))
            await arrived.wait()
            with pytest.raises(UpstreamTimeout):
                await get(http)
            release.set()
            assert await first == (200, b"ok")
            assert await get(http) == (200, b"ok")  # the slot was given back
        assert server.connections == 1

    run(scenario())


def test_a_connection_the_server_closes_after_answering_is_not_reused(run: Runner[None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await read_request(reader) is not None:
                writer.write(ok())  # keep-alive by HTTP/1.1's default ...
                await writer.drain()
                # ... and closed at once, as a server's idle timeout would

        async with serve(handler) as server, forwarder(server.url()) as http:
            for _ in range(5):
                assert await get(http) == (200, b"ok")
                await asyncio.sleep(0.01)  # the close reaches the client
                assert await get(http, method="POST", body=b"x") == (200, b"ok")
                await asyncio.sleep(0.01)
        assert server.connections == 10

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

        async with serve(handler) as server, forwarder(server.url()) as http:
            assert await get(http) == (200, b"bye")
            await eof.wait()
            assert await get(http) == (200, b"bye")
        assert server.connections == 2

    run(scenario())


# -- bodies ----------------------------------------------------------------------------


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)  # let the loop run between pieces, as a real source would
        yield part


def test_a_streamed_request_body_is_chunked_unless_its_length_is_given(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with (
            keep_alive_server(lambda r: ok(r.body)) as server,
            forwarder(server.url()) as http,
        ):
            body = pieces(b"hello ", b"", b"chunked ", b"world")
            assert await get(http, method="POST", body=body) == (200, b"hello chunked world")
            sized = pieces(b"abc", b"def")
            headers = [(b"content-length", b"6")]
            assert await get(http, method="PUT", headers=headers, body=sized) == (200, b"abcdef")
        chunked, raw = server.requests
        assert chunked.header(b"transfer-encoding") == [b"chunked"]
        assert chunked.header(b"content-length") == []
        assert raw.header(b"transfer-encoding") == []
        assert server.connections == 1

    run(scenario())


def test_a_failing_body_source_raises_its_own_error(run: Runner[None]) -> None:
    """The client went away mid-upload: that is not the upstream's failure."""

    class SourceGone(Exception):
        pass

    async def failing() -> AsyncIterator[bytes]:
        yield b"part"
        raise SourceGone

    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok()) as server, forwarder(server.url()) as http:
            with pytest.raises(SourceGone):
                await http.send("POST", "/", "", [], failing())
            assert await get(http) == (200, b"ok")
        assert server.connections == 2

    run(scenario())


def test_a_chunked_response_streams_chunk_by_chunk(run: Runner[None]) -> None:
    async def scenario() -> None:
        next_one = asyncio.Event()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await read_request(reader) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                await writer.drain()
                await next_one.wait()
                writer.write(b"6;ext=1\r\nsecond\r\n0\r\nX-Trailer: t\r\n\r\n")

        async with serve(handler) as server, forwarder(server.url()) as http:
            response = await http.send("GET", "/events", "", [], None)
            assert response.content_length is None
            assert response.headers == []  # Transfer-Encoding is hop-by-hop
            chunks = response.chunks()
            assert await anext(chunks) == b"first"  # before the rest was even written
            next_one.set()
            assert [chunk async for chunk in chunks] == [b"second"]
            response.close()
            assert await get(http) == (200, b"firstsecond")
        assert server.connections == 1

    run(scenario())


def test_a_response_without_length_is_read_until_close(run: Runner[None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await read_request(reader) is not None:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
                await writer.drain()
                writer.write(b"it, until the end")

        async with serve(handler) as server, forwarder(server.url()) as http:
            assert await get(http) == (200, b"all of it, until the end")
            assert await get(http) == (200, b"all of it, until the end")
        assert server.connections == 2

    run(scenario())


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: x/y\r\n\r\n"),
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

        async with keep_alive_server(respond) as server, forwarder(server.url()) as http:
            path = "/" if method == "HEAD" else "/empty"
            for _ in range(3):
                response = await http.send(method, path, "", [], None)
                assert await response.read() == b""
                response.close()
                assert await get(http) == (200, b"ok")
        assert server.connections == 1

    run(scenario())


def test_a_response_closed_before_its_end_drops_the_connection(run: Runner[None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (request := await read_request(reader)) is not None:
                if b"/big" in request.line:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\nstart")
                    await until_closed(reader)  # until the client gives up
                    return
                writer.write(ok())

        async with serve(handler) as server, forwarder(server.url()) as http:
            response = await http.send("GET", "/big", "", [], None)
            assert await anext(response.chunks()) == b"start"
            response.close()
            assert await get(http) == (200, b"ok")
        assert server.connections == 2

    run(scenario())


def test_a_cancelled_request_drops_its_connection(run: Runner[None]) -> None:
    """What a client that disconnects does to the upstream request it started."""

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

        async with serve(handler) as server, forwarder(server.url()) as http:
            slow = asyncio.ensure_future(get(http, "/slow"))
            await arrived.wait()
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            await gone.wait()
            assert await get(http) == (200, b"ok")
        assert server.connections == 2

    run(scenario())


# -- back-pressure ---------------------------------------------------------------------


async def fall_behind(turns: int = 20) -> None:
    """Let the loop run a few times, as a consumer busy elsewhere would."""
    for _ in range(turns):
        await asyncio.sleep(0)


def test_a_slow_reader_of_a_large_download_buffers_little(run: Runner[Any]) -> None:
    total = 100 * MB
    block = b"x" * (256 * 1024)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
            for _ in range(total // len(block)):
                writer.write(block)
                await writer.drain()

    async def scenario() -> tuple[int, int]:
        async with serve(handler) as server, forwarder(server.url()) as http:
            tracemalloc.start()
            try:
                response = await http.send("GET", "/download", "", [], None)
                received = 0
                async for chunk in response.chunks():
                    received += len(chunk)
                    await fall_behind()
                response.close()
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            return received, peak

    received, peak = run(scenario())
    assert received == total
    assert peak < 4 * MB


def test_a_large_upload_to_a_slow_server_buffers_little(run: Runner[Any]) -> None:
    total = 100 * MB
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
        async with serve(handler) as server, forwarder(server.url()) as http:
            tracemalloc.start()
            try:
                headers = [(b"content-length", b"%d" % total)]
                answer = await get(http, method="POST", headers=headers, body=body())
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            return answer, peak

    answer, peak = run(scenario())
    assert answer == (200, b"%d" % total)
    assert peak < 4 * MB


# -- failures --------------------------------------------------------------------------


def test_a_closed_port_is_unavailable(run: Runner[None]) -> None:
    async def scenario() -> None:
        async with serve(until_closed_handler) as server:
            url = server.url()
        async with forwarder(url) as http:
            with pytest.raises(UpstreamUnavailable) as caught:
                await get(http)
        assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)

    run(scenario())


def test_a_silent_server_is_a_read_timeout(run: Runner[None]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (request := await read_request(reader)) is not None:
                if b"/part" in request.line:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
                await until_closed(reader)  # and nothing more

        async with serve(handler) as server, forwarder(server.url(), read_timeout=0.2) as http:
            with pytest.raises(UpstreamTimeout):
                await http.send("GET", "/none", "", [], None)
            response = await http.send("GET", "/part", "", [], None)
            chunks = response.chunks()
            assert await anext(chunks) == b"abc"
            with pytest.raises(UpstreamTimeout):
                await anext(chunks)
            response.close()

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
        async with serve(handler) as server, forwarder(server.url(), read_timeout=0.2) as http:
            response = await http.send("GET", "/", "", [], None)
            chunks = response.chunks()
            received = len(await anext(chunks))
            # Busy elsewhere for three read timeouts: the upstream waits on us, not we on it.
            await asyncio.sleep(0.6)
            async for chunk in chunks:
                received += len(chunk)
            assert received == total
            response.close()

    run(scenario())


def test_a_server_that_never_finishes_the_handshake_is_a_connect_timeout(
    run: Runner[None],
) -> None:
    async def scenario() -> None:
        async with serve(until_closed_handler) as server:
            async with forwarder(server.url(scheme="https"), connect_timeout=0.2) as http:
                with pytest.raises(UpstreamTimeout):
                    await get(http)

    run(scenario())


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 abc\r\n\r\n", UpstreamProtocolError),
        (b"SSH-2.0-OpenSSH_9.6\r\n", UpstreamProtocolError),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", UpstreamProtocolError),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
            UpstreamProtocolError,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
            UpstreamProtocolError,
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Le", UpstreamUnavailable),
        (b"", UpstreamUnavailable),
    ],
)
def test_broken_answers(run: Runner[None], answer: bytes, error: type[UpstreamError]) -> None:
    async def scenario() -> None:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if await read_request(reader) is not None:
                writer.write(answer)
                await writer.drain()  # then the connection closes

        async with serve(handler) as server, forwarder(server.url()) as http:
            with pytest.raises(error):
                await get(http, method="POST", body=b"{}")  # never sent twice
            assert server.connections == 1

    run(scenario())


def test_answer_heads_are_capped(run: Runner[None]) -> None:
    def respond(request: Request) -> bytes:
        size = int(request.line.split(b" ")[1].strip(b"/"))
        return ok(b"ok", b"X-Big: " + b"a" * size)

    async def scenario() -> None:
        async with keep_alive_server(respond) as server:
            async with forwarder(server.url(), max_header_bytes=4096) as http:
                assert await get(http, "/4000") == (200, b"ok")
                with pytest.raises(UpstreamProtocolError):
                    await get(http, "/5000")

    run(scenario())


# -- TLS -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """A CA made for the test, and certificates it issues, written out as PEM files."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def bundle(self) -> Path:
        return self.directory / "ca.pem"

    @classmethod
    def create(cls, directory: Path, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        directory.mkdir(parents=True, exist_ok=True)
        authority = cls(directory, key, cert)
        authority.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return authority

    def issue(self, name: str, *, client: bool = False) -> tuple[Path, Path]:
        """A certificate for localhost and 127.0.0.1 (or a client called ``name``), and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if not client:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.directory / f"{name}.pem", self.directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_file, key_file


@dataclass(frozen=True)
class Pki:
    servers: Authority  # the upstream's CA
    clients: Authority  # the CA the upstream trusts for client certificates
    server: tuple[Path, Path]
    client: tuple[Path, Path]

    def server_context(self, require_client: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*self.server)
        if require_client:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=str(self.clients.bundle))
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    servers = Authority.create(directory / "servers", "tollhouse test server CA")
    clients = Authority.create(directory / "clients", "tollhouse test client CA")
    return Pki(servers, clients, servers.issue("localhost"), clients.issue("app-7", client=True))


def test_https_with_the_ca_bundle_sni_and_keep_alive(run: Runner[None], pki: Pki) -> None:
    names: list[str | None] = []

    async def scenario() -> None:
        context = pki.server_context()
        context.sni_callback = lambda sock, name, ctx: names.append(name)
        async with keep_alive_server(lambda r: ok(r.body or r.line), context) as server:
            url = server.url("localhost", "https")
            async with forwarder(url, ca_bundle=pki.servers.bundle) as http:
                for n in range(3):
                    body = b"secret %d" % n
                    assert await get(http, "/", "POST", body=body) == (200, body)
            assert server.requests[0].header(b"host") == [b"localhost:%d" % server.port]
            assert server.connections == 1

    run(scenario())
    assert names[0] == "localhost"


def test_an_upstream_certificate_from_an_unknown_ca_is_refused(run: Runner[None], pki: Pki) -> None:
    async def scenario() -> None:
        async with keep_alive_server(lambda r: ok(), pki.server_context()) as server:
            async with forwarder(server.url("localhost", "https")) as http:  # the system's CAs
                with pytest.raises(UpstreamUnavailable, match="certificate verify failed"):
                    await get(http)
            # another CA than the upstream's is no better
            other = pki.clients.bundle
            async with forwarder(server.url("localhost", "https"), ca_bundle=other) as http:
                with pytest.raises(UpstreamUnavailable, match="certificate verify failed"):
                    await get(http)
            assert server.requests == []

    run(scenario())


def test_a_client_certificate_is_presented_when_the_upstream_asks(
    run: Runner[None], pki: Pki
) -> None:
    async def scenario() -> None:
        context = pki.server_context(require_client=True)
        async with keep_alive_server(lambda r: ok(), context) as server:
            url = server.url("localhost", "https")
            cert, key = pki.client
            options = {"ca_bundle": pki.servers.bundle, "client_cert": cert, "client_key": key}
            async with forwarder(url, **options) as http:
                assert await get(http) == (200, b"ok")
            subject = dict(item[0] for item in server.peers[-1]["subject"])
            assert subject["commonName"] == "app-7"
            async with forwarder(url, ca_bundle=pki.servers.bundle) as http:
                with pytest.raises(UpstreamError) as caught:
                    await get(http)
            assert type(caught.value) in (UpstreamUnavailable, UpstreamProtocolError)
            assert len(server.requests) == 1

    run(scenario())


def test_a_key_without_its_certificate_is_refused_at_start_up(pki: Pki) -> None:
    with pytest.raises(ValueError, match="without its certificate"):
        Forwarder(UpstreamSettings(url="https://localhost/v1", client_key=pki.client[1]))
    with pytest.raises(UpstreamConfigError, match=r"CA bundle .* cannot be used"):
        Forwarder(UpstreamSettings(url="https://localhost/v1", ca_bundle=pki.client[1]))


# -- an egress proxy -------------------------------------------------------------------


@dataclass
class EgressProxy:
    port: int
    lines: list[bytes] = field(default_factory=list)  # the first request line per connection

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def egress_proxy_server(refuse: bytes | None = None) -> AsyncIterator[EgressProxy]:
    """An HTTP proxy: CONNECT tunnels, and absolute-form requests sent on to their origin."""
    state = EgressProxy(0)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0]
        state.lines.append(line)
        method, target, _ = line.split(b" ")
        if refuse is not None:
            writer.write(refuse)
            await writer.drain()
            return
        if method == b"CONNECT":
            host, port = target.rsplit(b":", 1)
            upstream_reader, upstream_writer = await asyncio.open_connection(
                host.decode(), int(port)
            )
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            parts = urlsplit(target.decode())
            upstream_reader, upstream_writer = await asyncio.open_connection(
                parts.hostname, parts.port
            )
            origin = f"{parts.scheme}://{parts.netloc}".encode()
            upstream_writer.write(head.replace(target, target.removeprefix(origin), 1))
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async with serve(handler) as server:
        state.port = server.port
        yield state


def test_requests_go_through_the_configured_proxy(run: Runner[None], pki: Pki) -> None:
    async def scenario() -> None:
        async with egress_proxy_server() as proxy, keep_alive_server(lambda r: ok()) as plain:
            async with forwarder(plain.url() + "/v1", proxy=proxy.url) as http:
                assert await get(http, "/v1/files/a%2Fb", query="x=%5B1%5D") == (200, b"ok")
            # plain HTTP goes to the proxy in absolute form, the path byte for byte
            target = b"%s/v1/files/a%%2Fb?x=%%5B1%%5D" % plain.url().encode()
            assert proxy.lines == [b"GET " + target + b" HTTP/1.1"]
            assert plain.requests[0].line == b"GET /v1/files/a%2Fb?x=%5B1%5D HTTP/1.1"

        context = pki.server_context()
        async with (
            egress_proxy_server() as proxy,
            keep_alive_server(lambda r: ok(), context) as tls,
        ):
            url = tls.url("localhost", "https")
            async with forwarder(url, proxy=proxy.url, ca_bundle=pki.servers.bundle) as http:
                for _ in range(3):
                    assert await get(http, "/v1/models") == (200, b"ok")
            # HTTPS goes through one CONNECT tunnel, kept alive
            assert proxy.lines == [b"CONNECT localhost:%d HTTP/1.1" % tls.port]
            assert [r.line for r in tls.requests] == [b"GET /v1/models HTTP/1.1"] * 3

    run(scenario())


def test_a_proxy_that_refuses_or_is_down_makes_the_upstream_unavailable(
    run: Runner[None], pki: Pki
) -> None:
    refusal = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"

    async def scenario() -> None:
        context = pki.server_context()
        async with keep_alive_server(lambda r: ok(), context) as tls:
            url = tls.url("localhost", "https")
            async with egress_proxy_server(refuse=refusal) as proxy:
                async with forwarder(url, proxy=proxy.url, ca_bundle=pki.servers.bundle) as http:
                    with pytest.raises(UpstreamUnavailable):
                        await get(http)
            async with forwarder(url, proxy=proxy.url, ca_bundle=pki.servers.bundle) as http:
                with pytest.raises(UpstreamUnavailable):  # the proxy has gone
                    await get(http)
            assert tls.requests == []

    run(scenario())


def test_the_environment_names_the_proxy_unless_the_setting_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = UpstreamSettings(url="https://api.example.com/v1")
    assert egress_proxy(settings) is None
    monkeypatch.setenv("HTTPS_PROXY", "http://egress.internal:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://plain.internal:3128")
    assert egress_proxy(settings) == "http://egress.internal:3128"
    plain = UpstreamSettings(url="http://api.example.com/v1")
    assert egress_proxy(plain) == "http://plain.internal:3128"
    explicit = UpstreamSettings(url=settings.url, proxy="http://mine:8080")
    assert egress_proxy(explicit) == "http://mine:8080"
    monkeypatch.setenv("NO_PROXY", "localhost,.example.com")
    assert egress_proxy(settings) is None
    assert egress_proxy(explicit) == "http://mine:8080"


def test_the_environment_proxy_is_used(run: Runner[None], monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with egress_proxy_server() as proxy, keep_alive_server(lambda r: ok()) as plain:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            async with forwarder(plain.url()) as http:
                assert await get(http, "/v1/x") == (200, b"ok")
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            async with forwarder(plain.url()) as http:
                assert await get(http, "/v1/y") == (200, b"ok")
        assert proxy.lines == [b"GET %s/v1/x HTTP/1.1" % plain.url().encode()]
        assert [r.line for r in plain.requests] == [b"GET /v1/x HTTP/1.1", b"GET /v1/y HTTP/1.1"]

    run(scenario())


# -- through tollhouse, with the real openai client -------------------------------------


def tls_app() -> Starlette:
    async def assistants(request: StarletteRequest) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [], "has_more": False})

    return Starlette(routes=[Route("/v1/assistants", assistants)])


def test_a_tls_upstream_through_tollhouse_with_and_without_its_ca(
    make_proxy: ProxyFactory, pki: Pki
) -> None:
    cert, key = pki.server
    with serve_app(tls_app(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as upstream:
        url = upstream.url.replace("http://127.0.0.1", "https://localhost") + "/v1"
        with make_proxy(url, upstream_ca_bundle=pki.servers.bundle) as proxy:
            assert proxy.client().beta.assistants.list().data == []
        with make_proxy(url) as proxy:
            with pytest.raises(openai.InternalServerError) as caught:
                proxy.client().beta.assistants.list()
    assert caught.value.status_code == 502
    error = caught.value.response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    # the tenant learns what failed, never where the upstream is or what its TLS said
    assert "localhost" not in error["message"]
    assert "certificate" not in error["message"]


def test_a_client_certificate_through_tollhouse(make_proxy: ProxyFactory, pki: Pki) -> None:
    cert, key = pki.server
    client_cert, client_key = pki.client
    options = {
        "ssl_certfile": str(cert),
        "ssl_keyfile": str(key),
        "ssl_ca_certs": str(pki.clients.bundle),
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
    }
    with serve_app(tls_app(), **options) as upstream:
        url = upstream.url.replace("http://127.0.0.1", "https://localhost") + "/v1"
        settings = {
            "upstream_ca_bundle": pki.servers.bundle,
            "upstream_client_cert": client_cert,
            "upstream_client_key": client_key,
        }
        with make_proxy(url, **settings) as proxy:
            assert proxy.client().beta.assistants.list().data == []


@contextmanager
def egress_proxy_thread() -> Iterator[EgressProxy]:
    """The egress proxy on a loop of its own, for tollhouse's server thread to go through."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: concurrent.futures.Future[EgressProxy] = concurrent.futures.Future()

    async def main() -> None:
        async with egress_proxy_server() as proxy:
            ready.set_result(proxy)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        yield ready.result(10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()


def test_tollhouse_reaches_the_upstream_through_its_proxy_setting(
    make_proxy: ProxyFactory, pki: Pki
) -> None:
    cert, key = pki.server
    with serve_app(tls_app(), ssl_certfile=str(cert), ssl_keyfile=str(key)) as upstream:
        url = upstream.url.replace("http://127.0.0.1", "https://localhost") + "/v1"
        with egress_proxy_thread() as egress:
            settings = {"upstream_ca_bundle": pki.servers.bundle, "upstream_proxy": egress.url}
            with make_proxy(url, **settings) as proxy:
                assert proxy.client().beta.assistants.list().data == []
    assert egress.lines == [b"CONNECT localhost:%d HTTP/1.1" % upstream.port]


# -- every failure maps to one tollhouse error ------------------------------------------


def aiohttp_client_errors() -> set[type[aiohttp.ClientError]]:
    """Every exception class aiohttp exports for its client."""
    return {
        value
        for name in aiohttp.__all__
        if isinstance(value := getattr(aiohttp, name), type)
        and issubclass(value, aiohttp.ClientError)
    }


def test_every_aiohttp_client_exception_has_its_own_row() -> None:
    mapped = {source for source, _ in TRANSPORT_ERRORS}
    unmapped = {cls.__name__ for cls in aiohttp_client_errors() - mapped}
    assert not unmapped, f"aiohttp exceptions missing from TRANSPORT_ERRORS: {unmapped}"


def test_no_row_is_hidden_behind_an_earlier_one() -> None:
    sources = [source for source, _ in TRANSPORT_ERRORS]
    for index, source in enumerate(sources):
        earlier = [other.__name__ for other in sources[:index] if issubclass(source, other)]
        assert not earlier, f"{source.__name__} is caught first by {earlier}"


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (aiohttp.ServerDisconnectedError("Server disconnected"), UpstreamUnavailable),
        (aiohttp.ClientOSError(111, "Connection refused"), UpstreamUnavailable),
        (aiohttp.ConnectionTimeoutError("Connection timeout"), UpstreamTimeout),
        (aiohttp.SocketTimeoutError("Timeout on reading data from socket"), UpstreamTimeout),
        (aiohttp.ClientPayloadError("Response payload is not completed"), UpstreamProtocolError),
        (aiohttp.ClientConnectionError("Connection closed"), UpstreamUnavailable),
        (aiohttp.InvalidURL("http://[x"), UpstreamError),
    ],
)
def test_an_aiohttp_exception_becomes_its_tollhouse_error(
    source: aiohttp.ClientError, target: type[UpstreamError]
) -> None:
    with pytest.raises(UpstreamError) as caught, map_transport_errors("https://10.1.2.3/v1"):
        raise source
    assert type(caught.value) is target
    assert caught.value.__cause__ is source
    assert caught.value.detail == str(source)
    assert caught.value.upstream == "https://10.1.2.3/v1"
    # the detail is for the log; the tenant's answer names neither it nor the upstream
    answer = caught.value.response()
    assert answer.status == (504 if target is UpstreamTimeout else 502)
    assert "10.1.2.3" not in answer.message
    assert str(source) not in answer.message


@pytest.mark.parametrize(
    ("variable", "text", "said"),
    [
        ("TOLLHOUSE_UPSTREAM_CA_BUNDLE", "not a certificate\n", "CA bundle"),
        ("TOLLHOUSE_UPSTREAM_CLIENT_CERT", "not a certificate\n", "client certificate"),
    ],
)
def test_serve_refuses_unusable_tls_files_with_a_message(
    tmp_path: Path, variable: str, text: str, said: str
) -> None:
    pem = tmp_path / "broken.pem"
    pem.write_text(text)
    done = subprocess.run(
        [sys.executable, "-m", "tollhouse", "serve", "--port", "0", "--admin-port", "0"],
        env={
            **os.environ,
            variable: str(pem),
            "TOLLHOUSE_DATABASE_URL": f"sqlite:///{tmp_path}/l.db",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert said in done.stderr
    assert "Traceback" not in done.stderr
