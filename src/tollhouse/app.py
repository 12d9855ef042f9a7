"""Wiring: builds the proxy and admin ASGI applications and serves them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse.asgi import Message, Receive, Scope, Send
from tollhouse.buckets import buckets_from_url
from tollhouse.cleaner import Cleaner, CleanerSettings
from tollhouse.collector import Collector, CollectorSettings
from tollhouse.db import engine_from_url, migrate
from tollhouse.forward import Forwarder, UpstreamSettings
from tollhouse.metrics import Metrics
from tollhouse.ownership import Ownership
from tollhouse.policy import Policy, PolicyError, load_policy
from tollhouse.pricing import load_pricing
from tollhouse.proxy import Proxy
from tollhouse.quota import Quota
from tollhouse.schedule import collector_scheduler, schedule_cleanup
from tollhouse.settings import Settings
from tollhouse.spool import Spool
from tollhouse.tenants import Tenants
from tollhouse.tracing import Tracing, exporter_from_env
from tollhouse.writer import LedgerWriter

log = logging.getLogger(__name__)


class Tollhouse:
    """One tollhouse instance: the proxy application, its admin application and state."""

    def __init__(
        self,
        settings: Settings,
        policy: Policy | None = None,
        registry: CollectorRegistry | None = None,
        exporter: SpanExporter | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        if policy is None:
            policy = load_policy(settings.policy_file) if settings.policy_file else Policy()
        self._upstream_key = (
            settings.upstream_api_key.get_secret_value() if settings.upstream_api_key else None
        )
        _refuse_dangerous(policy, self._upstream_key)
        tenants = Tenants(policy, self._upstream_key)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry, tenants.labels)
        self.buckets = buckets_from_url(
            settings.buckets_url, settings.replicas, self.metrics.buckets_fallback.set
        )
        self.quota = Quota(self.buckets, policy)
        self.pricing = load_pricing(settings.pricing_file)
        self.engine = engine_from_url(settings.database_url)
        self.writer = LedgerWriter(
            self.engine,
            self.metrics,
            self.pricing,
            Spool(settings.spool_path),
            tenants.label,
            clock=clock,
        )
        self.ownership = Ownership(self.engine, self.writer, lambda: self.quota.policy)
        self.forwarder = Forwarder(
            UpstreamSettings(
                url=settings.upstream_url,
                connect_timeout=settings.connect_timeout,
                read_timeout=settings.read_timeout,
                max_connections=settings.max_connections,
            )
        )
        self.tracing = Tracing(exporter if exporter is not None else exporter_from_env(os.environ))
        self.proxy = Proxy(
            self.forwarder,
            self.metrics,
            tenants,
            self.quota,
            self.ownership,
            self.writer,
            self.tracing,
            max_body=settings.max_json_body_bytes,
            list_pages=settings.list_scan_pages,
        )
        self.collector: Collector | None = None
        self.cleaner: Cleaner | None = None
        self.scheduler: AsyncIOScheduler | None = None
        if self._upstream_key:
            self.cleaner = Cleaner(
                self.engine,
                self.forwarder,
                self.quota,
                self.metrics,
                CleanerSettings(self._upstream_key),
                tenants.label,
            )
            self.collector = Collector(
                self.engine,
                self.writer,
                self.forwarder,
                self.quota,
                self.metrics,
                CollectorSettings(self._upstream_key, reconcile_after=settings.reconcile_after),
                tenants.label,
            )
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
        await asyncio.to_thread(migrate, self.engine)
        self.writer.start()
        await self.forwarder.open()
        if self.collector is not None:
            self.collector.started()
            self.scheduler = collector_scheduler(
                self.collector, self.settings.reconcile_seconds, self.settings.sample_seconds
            )
            if self.cleaner is not None:
                schedule_cleanup(self.scheduler, self.cleaner, self.quota.policy.cleanup)
            self.scheduler.start()
        else:
            log.warning(
                "TOLLHOUSE_UPSTREAM_API_KEY is not set: the reconciler, the storage "
                "sampler and the cleanup are off (usage the proxy does not see is not "
                "collected, stale objects are not deleted)"
            )
        self.ready = True
        log.info("tollhouse forwarding to %s", self.forwarder.name)

    async def shutdown(self) -> None:
        self.ready = False
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        await self.forwarder.close()
        await self.buckets.close()
        await self.writer.close()
        self.engine.dispose()
        self.tracing.shutdown()

    def apply_policy(self, policy: Policy) -> None:
        """Use a new policy from the next request on; bucket levels are kept."""
        _refuse_dangerous(policy, self._upstream_key)
        self.proxy.tenants = tenants = Tenants(policy, self._upstream_key)
        self.writer.label = tenants.label
        self.quota.update(policy)
        if self.cleaner is not None:
            self.cleaner.label = tenants.label
            if self.scheduler is not None:
                schedule_cleanup(self.scheduler, self.cleaner, policy.cleanup)

    def reload_policy(self) -> None:
        """SIGHUP: re-read the policy file; a bad file is logged and the old policy kept."""
        path = self.settings.policy_file
        if path is None:
            log.info("SIGHUP: no policy file configured, nothing to reload")
            return
        try:
            self.apply_policy(load_policy(path))
        except (PolicyError, StartupRefused) as exc:
            log.error("policy reload refused, keeping the current policy:\n%s", exc)
            return
        log.info("policy reloaded from %s", path)

    async def _metrics_endpoint(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ready", "upstream": self.forwarder.name})
        return JSONResponse({"status": "starting"}, status_code=503)


class StartupRefused(Exception):
    """A configuration tollhouse will not run with."""


def _refuse_dangerous(policy: Policy, upstream_key: str | None) -> None:
    if policy.identify.mode == "keys" and not upstream_key:
        raise StartupRefused(
            "identify.mode is 'keys' but TOLLHOUSE_UPSTREAM_API_KEY is not set: tenants' "
            "tollhouse keys would be sent upstream in its place"
        )


class QuietServer(uvicorn.Server):
    """A server sharing the process with another that owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(app: object, **options: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-* from clients are not trusted here
        date_header=False,
        **options,  # type: ignore[arg-type]
    )


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen now, so the real port is known (port 0) and early clients queue."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio only sets TCP_NODELAY on connections of such a socket;
    # without it keep-alive responses wait out the client's delayed ACK (~40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def serve(
    tollhouse: Tollhouse,
    proxy_socket: socket.socket | None = None,
    admin_socket: socket.socket | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the proxy and the admin endpoints until SIGINT / SIGTERM or ``stop``.

    SIGHUP reloads the policy file.
    """
    settings = tollhouse.settings
    proxy_socket = proxy_socket or listen(settings.host, settings.port)
    admin_socket = admin_socket or listen(settings.admin_host, settings.admin_port)
    main = uvicorn.Server(server_config(tollhouse, lifespan="on"))
    admin = QuietServer(server_config(tollhouse.admin, lifespan="off"))
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, tollhouse.reload_policy)
    log.info("tollhouse listening: proxy %s admin %s", _url(proxy_socket), _url(admin_socket))
    admin_task = asyncio.create_task(admin.serve([admin_socket]))
    stopper = asyncio.create_task(_stop_on(stop, main)) if stop is not None else None
    try:
        await main.serve([proxy_socket])
    finally:
        if stopper is not None:
            stopper.cancel()
        admin.should_exit = True
        await admin_task


async def _stop_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True
