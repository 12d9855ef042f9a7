"""The reference: a bare Starlette + aiohttp proxy, forwarding every request and nothing else.

What a proxy written the obvious way costs, on the same server (uvicorn, uvloop,
httptools) and the same client library as tollhouse: no tenants, quotas, ownership,
metering, metrics or ledger. Run as ``python benchmarks/reference.py --upstream URL``;
it prints its port on stdout.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route
from yarl import URL

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host"}
SKIP = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def create_app(upstream: str) -> Starlette:
    clients: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_read=600)
        connector = aiohttp.TCPConnector(limit=1000)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False, skip_auto_headers=SKIP
        ) as session:
            clients.append(session)
            yield

    async def forward(request: Request) -> StreamingResponse:
        target = upstream + request.scope["raw_path"].decode("latin-1")
        if query := request.scope["query_string"]:
            target += "?" + query.decode("latin-1")
        headers = [(k, v) for k, v in request.headers.items() if k not in HOP_BY_HOP]
        has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
        answer = await clients[0].request(
            request.method,
            URL(target, encoded=True),
            headers=headers,
            data=request.stream() if has_body else None,
            allow_redirects=False,
        )
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(
            answer.content.iter_any(),
            status_code=answer.status,
            headers=kept,
            background=BackgroundTask(answer.release),
        )

    methods = ["GET", "POST", "DELETE", "PUT", "PATCH"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="origin, e.g. http://127.0.0.1:8000")
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)  # before the port is printed: early clients queue, none is refused
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(
        create_app(args.upstream),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        server_header=False,
        date_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
