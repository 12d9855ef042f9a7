"""Wiring: builds the proxy and admin ASGI applications and serves them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse.forward import Forwarder, UpstreamSettings
from tollhouse.metrics import Metrics
from tollhouse.proxy import Message, Proxy, Receive, Scope, Send
from tollhouse.settings import Settings

log = logging.getLogger(__name__)


class Tollhouse:
    """One tollhouse instance: the proxy application, its admin application and state."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.forwarder = Forwarder(
            UpstreamSettings(
                url=settings.upstream_url,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                max_connections=settings.max_connections,
            )
        )
        self.proxy = Proxy(self.forwarder, self.metrics)
        self.ready = False
        self.admin = Starlette(
            routes=[
                Route("/metrics", self._metrics_endpoint),
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.proxy(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        message: Message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            await self.startup()
        except Exception as exc:
            log.exception("tollhouse failed to start")
            await send({"type": "lifespan.startup.failed", "message": str(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        await self.shutdown()
        await send({"type": "lifespan.shutdown.complete"})

    async def startup(self) -> None:
        await self.forwarder.open()
        self.ready = True
        log.info("tollhouse forwarding to %s", self.forwarder.name)

    async def shutdown(self) -> None:
        self.ready = False
        await self.forwarder.close()

    async def _metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ready", "upstream": self.forwarder.name})
        return JSONResponse({"status": "starting"}, status_code=503)


class _AdminServer(uvicorn.Server):
    """The admin server shares the process; the main server owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: object, **options: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=False,
        **options,  # type: ignore[arg-type]
    )


async def serve(
    tollhouse: Tollhouse,
    proxy_socket: socket.socket | None = None,
    admin_socket: socket.socket | None = None,
) -> None:
    """Serve the proxy and the admin endpoints until SIGINT / SIGTERM."""
    settings = tollhouse.settings
    main = uvicorn.Server(_config(tollhouse, host=settings.host, port=settings.port, lifespan="on"))
    admin = _AdminServer(
        _config(tollhouse.admin, host=settings.admin_host, port=settings.admin_port, lifespan="off")
    )
    admin_task = asyncio.create_task(admin.serve([admin_socket] if admin_socket else None))
    try:
        await main.serve([proxy_socket] if proxy_socket else None)
    finally:
        admin.should_exit = True
        await admin_task
