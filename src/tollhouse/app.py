"""Wiring: builds the proxy and admin ASGI applications and serves them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from tollhouse import __version__
from tollhouse.compose import StartupRefused, serving
from tollhouse.config.policy import Policy, PolicyError, load_policy
from tollhouse.config.settings import Settings
from tollhouse.jobs.budget_seed import seed_budgets
from tollhouse.jobs.collector import Collector, recovery_since
from tollhouse.jobs.schedule import collector_scheduler, schedule_bill_check, schedule_cleanup
from tollhouse.ledger.engine import migrate
from tollhouse.proxy.asgi import Message, Receive, Scope, Send
from tollhouse.proxy.edge import (
    EdgeLimits,
    default_max_connections,
    edge_protocol,
    files_needed,
    raise_open_files_limit,
)
from tollhouse.report.build import build_report
from tollhouse.report.migration import Migration, build_migration, idle_before
from tollhouse.report.migration_query import fetch_migration_usage
from tollhouse.report.page import (
    PageData,
    PeriodError,
    bucket_levels,
    budget_levels,
    page_period,
    render_page,
)
from tollhouse.upstream.forward import UpstreamError

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 60.0  # how often the running marker's time is moved to now
ADMIN_MAX_CONNECTIONS = 64  # scrapers, probes and a person or two


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
        self._clock = clock
        parts = serving(settings, policy, registry, exporter, clock)
        shared = parts.core
        self.current = shared.current
        self.registry, self.metrics, self.buckets = shared.registry, shared.metrics, shared.buckets
        self.quota, self.pricing, self.engine = shared.quota, shared.pricing, shared.engine
        self.forwarder, self.writer = shared.forwarder, parts.writer
        self.ownership, self.tracing, self.proxy = parts.ownership, parts.tracing, parts.proxy
        self.tokens = parts.tokens
        self.cleaner, self.collector, self.leases = parts.cleaner, parts.collector, parts.leases
        self.bill_check = parts.bill_check
        self.spending = parts.spending
        self.seeding: asyncio.Task[None] | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.marker = settings.running_marker or settings.spool_path.with_suffix(".running")
        self._recovery: asyncio.Task[None] | None = None
        self.recovery_pending = False
        self._heartbeat: asyncio.Task[None] | None = None
        self.ready = False
        self.admin = Starlette(
            routes=[
                Route("/", self._page),
                Route("/metrics", self._metrics_endpoint),
                Route("/healthz", self._healthz),
                Route("/readyz", self._readyz),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.proxy(scope, receive, send)
        elif scope["type"] == "websocket":  # the Responses WebSocket mode
            await self.proxy.websocket(scope, receive, send)
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
        since = self._arm_marker()
        self.writer.start()
        self.seeding = asyncio.create_task(
            seed_budgets(self.spending, self.engine, self.pricing, self._clock)
        )
        await self.forwarder.open()
        await self.tokens.prepare()
        if self.collector is not None:
            self.collector.started()
            self.scheduler = collector_scheduler(
                self.collector,
                self.leases,
                self.settings.reconcile_seconds,
                self.settings.sample_seconds,
            )
            if self.cleaner is not None:
                scheduler, cleaner = self.scheduler, self.cleaner
                schedule_cleanup(scheduler, cleaner, self.current.policy().cleanup)
                self.current.on_swap(lambda p: schedule_cleanup(scheduler, cleaner, p.cleanup))
            self.scheduler.start()
            if since is not None:
                self._recovery = asyncio.create_task(self._recover(self.collector, since))
        else:
            self.metrics.reconciler_blocked.set(1)
            log.warning(
                "TOLLHOUSE_UPSTREAM_API_KEY is not set: the reconciler, the storage "
                "sampler and the cleanup are off (usage the proxy does not see is not "
                "collected, usage lost in a crash is not recovered, stale objects are not "
                "deleted)"
            )
            if since is not None:
                self.metrics.recovery_pending.set(1)
                log.error(
                    "the last stop was unclean and what it lost cannot be metered again without "
                    "TOLLHOUSE_UPSTREAM_API_KEY; a start with the key set will do it"
                )
        if self.bill_check is not None:  # needs the admin key only, not the upstream key
            if self.scheduler is None:
                self.scheduler = AsyncIOScheduler(timezone="UTC")
                self.scheduler.start()
            schedule_bill_check(self.scheduler, self.bill_check)
        self._heartbeat = asyncio.create_task(self._beat())
        self.ready = True
        log.info("tollhouse forwarding to %s", self.forwarder.name)

    def _arm_marker(self) -> int | None:
        """Write the running marker; where recovery starts if the last stop was unclean."""
        found = read_marker(self.marker)
        since = None
        if found is not None:
            alive_at, pending = found
            since = recovery_since(self._clock(), alive_at, pending, self.settings.recover_lookback)
            log.warning(
                "%s is left from a process that did not stop cleanly (killed, crashed, or "
                "lost its host): usage since %s is metered again from the upstream",
                self.marker,
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
            )
        write_marker(self.marker, since)
        self.recovery_pending = since is not None
        return since

    async def _recover(self, collector: Collector, since: int) -> None:
        """Meter again what an unclean stop may have lost; until done, the marker says so."""
        self.metrics.recovery_pending.set(1)
        while True:
            try:
                done = await collector.recover(since)
            except (UpstreamError, SQLAlchemyError) as exc:
                wait = self.settings.reconcile_seconds
                log.warning("recovery after the unclean stop failed, again in %gs: %s", wait, exc)
                await asyncio.sleep(wait)
                continue
            break
        write_marker(self.marker, None)
        self.recovery_pending = False
        self.metrics.recovery_pending.set(0)
        log.info(
            "recovery after the unclean stop done: %d threads, %d runs, %d step lists",
            done.threads,
            done.runs,
            done.steps,
        )

    async def _beat(self) -> None:
        """Keep the marker's time near now, so recovery after a long outage still covers the
        hour before the crash."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                os.utime(self.marker)
            except OSError as exc:
                log.warning("could not touch the running marker %s: %s", self.marker, exc)

    async def shutdown(self) -> None:
        """Stop the jobs, flush the ledger writer, and remove the running marker."""
        self.ready = False
        running = (self._heartbeat, self._recovery, self.seeding)
        tasks = [t for t in running if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        for job_lease in self.leases.values():
            try:
                await asyncio.to_thread(job_lease.release)
            except SQLAlchemyError as exc:
                log.warning(
                    "could not hand over the %s lease (it will expire): %s", job_lease.name, exc
                )
        await self.forwarder.close()
        await self.tokens.settled()  # settlements under way reach the buckets first
        await self.buckets.close()
        await self.ownership.settled()  # sightings being confirmed reach the writer
        self.ownership.close()
        await self.writer.close()
        await self.spending.close()  # the settlements handed over reach the store first
        # Everything handed to the writer is in the ledger or the spool now. A recovery
        # still unfinished keeps the marker, so the next start takes it up again.
        if not self.recovery_pending:
            self.marker.unlink(missing_ok=True)
        self.engine.dispose()
        self.tracing.shutdown()

    def apply_policy(self, policy: Policy) -> None:
        """Use a new policy from the next request on; bucket levels are kept."""
        self.current.swap(policy)

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

    async def _page(self, request: Request) -> Response:
        """The report for ?since=&until= and the buckets; the ledger is read off the loop."""
        now = datetime.fromtimestamp(self._clock(), UTC).replace(microsecond=0)
        query, status = dict(request.query_params), 200
        families = list(self.registry.collect())
        data = PageData(now, now, now, None, None, bucket_levels(families))
        data = replace(data, budgets=budget_levels(families))
        try:
            since, until = page_period(query, now)
            data = replace(data, since=since, until=until, query=query)
            source = str(self.settings.pricing_file or f"shipped with tollhouse {__version__}")
            read = functools.partial(
                build_report, self.engine, self.pricing, since, until, now, pricing_source=source
            )
            report, by_day = await asyncio.to_thread(lambda: (read(), read(group_by="day")))
            migration = await asyncio.to_thread(self._migration, since, until, now)
            data = replace(data, report=report, by_day=by_day, migration=migration)
        except PeriodError as exc:
            data, status = replace(data, query=query, problem=str(exc)), 400
        except SQLAlchemyError as exc:
            log.warning("the admin page could not read the ledger: %s", exc)
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            data, status = replace(data, problem=f"The ledger cannot be read: {reason}"), 503
        html = await asyncio.to_thread(render_page, data)  # a long period is a big page
        return HTMLResponse(html, status, {"Cache-Control": "no-store"})

    def _migration(self, since: datetime, until: datetime, now: datetime) -> Migration:
        """The migration summary for the page: the same as ``tollhouse migration``'s."""
        start, end = int(since.timestamp()), int(until.timestamp())
        cleanup = self.current.policy().cleanup
        usage = fetch_migration_usage(self.engine, start, end, None, idle_before(cleanup, end))
        return build_migration(usage, self.pricing, cleanup, since, until, now)

    async def _healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, request: Request) -> Response:
        if self.ready:
            return JSONResponse({"status": "ready", "upstream": self.forwarder.name})
        return JSONResponse({"status": "starting"}, status_code=503)


def read_marker(path: Path) -> tuple[float, int | None] | None:
    """None if there is no running marker (the last stop was clean); else when its process
    was last known alive, and where an unfinished recovery started."""
    try:
        alive_at = path.stat().st_mtime
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        pending = json.loads(content).get("recovering_since")
    except (ValueError, AttributeError):  # torn by the crash: the file itself is what counts
        pending = None
    return alive_at, pending if isinstance(pending, int) else None


def write_marker(path: Path, recovering_since: int | None) -> None:
    """Replace the marker whole, and make it durable: a host that loses power must find it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + ".tmp")
    with staging.open("w", encoding="utf-8") as marker:
        json.dump({"pid": os.getpid(), "recovering_since": recovering_since}, marker)
        marker.flush()
        os.fsync(marker.fileno())
    staging.replace(path)


class QuietServer(uvicorn.Server):
    """A server sharing the process with another that owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server_config(app: object, edge: EdgeLimits | None = None, **options: object) -> uvicorn.Config:
    """uvicorn's configuration; with ``edge``, client connections are held to its limits."""
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        loop="uvloop",
        http=edge_protocol(edge) if edge is not None else "httptools",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # X-Forwarded-* from clients are not trusted here
        date_header=False,
        **options,  # type: ignore[arg-type]
    )


def edge_limits(settings: Settings, open_files: int) -> EdgeLimits:
    """The limits of client connections; the connection cap follows the open files limit."""
    cap = settings.max_client_connections or default_max_connections(open_files)
    if files_needed(cap) > open_files:
        log.warning(
            "%d client connections (TOLLHOUSE_MAX_CLIENT_CONNECTIONS), with an upstream "
            "connection each, may need %d open files, more than the limit of %d: past it, "
            "clients get errors instead of a 503 they can retry. Lower the setting or raise "
            "the limit (ulimit -n).",
            cap,
            files_needed(cap),
            open_files,
        )
    return EdgeLimits(
        max_connections=cap,
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout=settings.header_timeout,
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

    SIGTERM (or SIGINT) drains: no new connections, in-flight requests and streams get
    ``drain_seconds`` to finish, then the ledger writer is flushed and the running marker
    removed, and this returns (the process exits 0). A second SIGINT stops at once.
    SIGHUP reloads the policy file.
    """
    settings = tollhouse.settings
    proxy_socket = proxy_socket or listen(settings.host, settings.port)
    admin_socket = admin_socket or listen(settings.admin_host, settings.admin_port)
    edge = edge_limits(settings, raise_open_files_limit())
    # The proxy server owns no signals either: uvicorn's own handling re-raises SIGTERM
    # after its shutdown, which would end the process with a signal instead of status 0.
    main = QuietServer(
        server_config(
            tollhouse, edge, lifespan="on", timeout_graceful_shutdown=settings.drain_seconds
        )
    )
    admin_edge = replace(edge, max_connections=ADMIN_MAX_CONNECTIONS)
    admin = QuietServer(server_config(tollhouse.admin, admin_edge, lifespan="off"))
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, tollhouse.reload_policy)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _drain, tollhouse, main, signum)
    log.info(
        "tollhouse listening: proxy %s admin %s (at most %d client connections)",
        _url(proxy_socket),
        _url(admin_socket),
        edge.max_connections,
    )
    admin_task = asyncio.create_task(admin.serve([admin_socket]))
    stopper = asyncio.create_task(_stop_on(stop, main)) if stop is not None else None
    try:
        await main.serve([proxy_socket])
    finally:
        if stopper is not None:
            stopper.cancel()
        admin.should_exit = True
        await admin_task


def _drain(tollhouse: Tollhouse, server: uvicorn.Server, signum: int) -> None:
    if server.should_exit:
        if signum == signal.SIGINT:
            log.warning("second SIGINT: stopping now, without waiting for requests")
            server.force_exit = True
        return
    tollhouse.ready = False  # /readyz says 503 at once: load balancers stop sending
    log.info(
        "%s: draining (no new connections; in-flight requests and streams get %gs)",
        signal.Signals(signum).name,
        tollhouse.settings.drain_seconds,
    )
    server.should_exit = True


async def _stop_on(stop: asyncio.Event, server: uvicorn.Server) -> None:
    await stop.wait()
    server.should_exit = True
