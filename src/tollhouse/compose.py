"""The composition root: every long-lived object, built from settings and the policy in one place.

``serve`` (through ``app.Tollhouse``, which the demo runs too), ``cleanup``, ``adopt`` and
``report`` build what they use here, so they reach the same database with the same timeouts,
the same upstream through the same egress proxy, CA bundle and client certificate, the same
buckets, and read one policy holder.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from tollhouse.cleanup.cleaner import Cleaner, CleanerSettings
from tollhouse.config.policy import Policy, load_policy
from tollhouse.config.settings import Settings
from tollhouse.jobs.bill import BillCheck
from tollhouse.jobs.collector import JOBS, Collector, CollectorSettings
from tollhouse.ledger import lease
from tollhouse.ledger.engine import engine_from_url
from tollhouse.ledger.lease import JobLease, job_ttl
from tollhouse.ledger.spool import Spool
from tollhouse.ledger.writer import LedgerWriter
from tollhouse.metering.estimate import Estimator, load_o200k
from tollhouse.metering.pricing import PricingTable, load_pricing
from tollhouse.proxy.ownership import Ownership
from tollhouse.proxy.pipeline import Proxy
from tollhouse.proxy.spend import Spending
from tollhouse.proxy.tarpit import Tarpit
from tollhouse.proxy.tenants import Tenants
from tollhouse.proxy.tokens import TokenStep
from tollhouse.quota.admission import Quota
from tollhouse.quota.backends import Buckets, buckets_from_url, spend_from_url
from tollhouse.quota.tokens import TokenQuota
from tollhouse.telemetry.metrics import Metrics
from tollhouse.telemetry.tracing import Tracing, exporter_from_env
from tollhouse.upstream.forward import Forwarder, UpstreamSettings


class StartupRefused(Exception):
    """A configuration tollhouse will not run with."""


def refuse_dangerous(policy: Policy, upstream_key: str | None) -> None:
    if policy.identify.mode == "keys" and not upstream_key:
        raise StartupRefused(
            "identify.mode is 'keys' but TOLLHOUSE_UPSTREAM_API_KEY is not set: tenants' "
            "tollhouse keys would be sent upstream in its place"
        )


@dataclass(frozen=True, slots=True)
class _InForce:
    policy: Policy
    tenants: Tenants


class CurrentPolicy:
    """The policy in force and the tenants it names, swapped whole by a reload.

    Whatever depends on the policy asks this holder when it needs it: the proxy for its
    tenants, the quota and ownership for the rules, the writer, collector and cleaner for
    metric labels. A reload is one assignment, so no request sees half of one policy and
    half of the next, and nothing outside the holder changes another object's fields.
    """

    def __init__(self, policy: Policy, upstream_key: str | None = None) -> None:
        self._upstream_key = upstream_key
        self._in_force = self._built(policy)
        self._listeners: list[Callable[[Policy], None]] = []

    def _built(self, policy: Policy) -> _InForce:
        refuse_dangerous(policy, self._upstream_key)
        return _InForce(policy, Tenants(policy, self._upstream_key))

    def policy(self) -> Policy:
        return self._in_force.policy

    def tenants(self) -> Tenants:
        return self._in_force.tenants

    def label(self, tenant: str) -> str:
        """The tenant's metric label: itself if the policy names it, else ``other``."""
        return self._in_force.tenants.label(tenant)

    def on_swap(self, listener: Callable[[Policy], None]) -> None:
        """Call ``listener`` with each new policy (for what is scheduled from it)."""
        self._listeners.append(listener)

    def swap(self, policy: Policy) -> None:
        """Put ``policy`` in force; raises ``StartupRefused`` and keeps the old one if unsafe."""
        self._in_force = self._built(policy)
        for listener in self._listeners:
            listener(policy)


def ledger_engine(settings: Settings) -> Engine:
    return engine_from_url(
        settings.database_url,
        connect_timeout=settings.database_connect_timeout,
        statement_timeout=settings.database_statement_timeout,
    )


def upstream_forwarder(settings: Settings, max_connections: int | None = None) -> Forwarder:
    """The forwarder to the upstream; one-shot commands ask for a small pool."""
    return Forwarder(
        UpstreamSettings(
            url=settings.upstream_url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            max_connections=max_connections or settings.max_connections,
            max_header_bytes=settings.upstream_max_header_bytes,
            proxy=settings.upstream_proxy,
            ca_bundle=settings.upstream_ca_bundle,
            client_cert=settings.upstream_client_cert,
            client_key=settings.upstream_client_key,
        )
    )


def upstream_key(settings: Settings) -> str | None:
    key = settings.upstream_api_key
    return key.get_secret_value() if key else None


def policy_of(settings: Settings) -> Policy:
    """The policy file the settings name, else the built-in policy."""
    return load_policy(settings.policy_file) if settings.policy_file else Policy()


@dataclass
class Core:
    """What every command shares: the policy in force, buckets, ledger, upstream, metrics."""

    settings: Settings
    current: CurrentPolicy
    registry: CollectorRegistry
    metrics: Metrics
    buckets: Buckets
    quota: Quota
    pricing: PricingTable
    engine: Engine
    forwarder: Forwarder

    async def close(self) -> None:
        await self.forwarder.close()
        await self.buckets.close()
        self.engine.dispose()


def core(
    settings: Settings,
    policy: Policy | None = None,
    registry: CollectorRegistry | None = None,
    max_connections: int | None = None,
) -> Core:
    """Build the shared objects; nothing connects until used or opened."""
    current = CurrentPolicy(
        policy if policy is not None else policy_of(settings), upstream_key(settings)
    )
    registry = registry if registry is not None else CollectorRegistry()
    metrics = Metrics(registry, current.tenants().labels)
    fallback = metrics.buckets_fallback.set
    buckets = buckets_from_url(settings.buckets_url, settings.replicas, fallback)
    return Core(
        settings=settings,
        current=current,
        registry=registry,
        metrics=metrics,
        buckets=buckets,
        quota=Quota(buckets, current.policy),
        pricing=load_pricing(settings.pricing_file),
        engine=ledger_engine(settings),
        forwarder=upstream_forwarder(settings, max_connections),
    )


def cleaner(shared: Core, key: str) -> Cleaner:
    return Cleaner(
        shared.engine,
        shared.forwarder,
        shared.quota,
        shared.metrics,
        CleanerSettings(key),
        shared.current.label,
    )


@dataclass
class Serving:
    """What ``serve`` runs: the shared objects, the request path, and the jobs."""

    core: Core
    writer: LedgerWriter
    ownership: Ownership
    tracing: Tracing
    proxy: Proxy
    spending: Spending
    tokens: TokenStep
    cleaner: Cleaner | None = None
    collector: Collector | None = None
    leases: dict[str, JobLease] = field(default_factory=dict)
    bill_check: BillCheck | None = None


def serving(
    settings: Settings,
    policy: Policy | None = None,
    registry: CollectorRegistry | None = None,
    exporter: SpanExporter | None = None,
    clock: Callable[[], float] = time.time,
) -> Serving:
    shared = core(settings, policy, registry)
    current = shared.current
    spending = Spending(
        spend_from_url(settings.buckets_url, clock),
        current.policy,
        shared.pricing,
        # o200k takes a second to load: only where budgets are set at start (else by bytes)
        Estimator(load_o200k() if current.policy().budgets.tenants else None),
        shared.metrics,
        current.label,
        clock,
        settings.max_json_body_bytes,
    )
    writer = LedgerWriter(
        shared.engine,
        shared.metrics,
        shared.pricing,
        Spool(settings.spool_path),
        current.label,
        clock=clock,
        owner_timeout=settings.owner_write_timeout,
        metered=spending.metered,
    )
    ownership = Ownership(
        shared.engine,
        writer,
        current.policy,
        # the database's statement timeout, and the watchdog's half second past it
        lookup_timeout=settings.database_statement_timeout + 1.0,
    )
    tracing = Tracing(exporter if exporter is not None else exporter_from_env(os.environ))
    tokens = TokenStep(
        TokenQuota(shared.buckets, current.policy),
        current.policy,
        shared.pricing,
        shared.metrics,
        current.label,
    )
    proxy = Proxy(
        shared.forwarder,
        shared.metrics,
        current.tenants,
        shared.quota,
        ownership,
        writer,
        tracing,
        max_body=settings.max_json_body_bytes,
        list_pages=settings.list_scan_pages,
        tarpit=Tarpit(settings.early_retry_hold),
        spending=spending,
        tokens=tokens,
    )
    parts = Serving(shared, writer, ownership, tracing, proxy, spending, tokens)
    if settings.admin_api_key is not None:
        parts.bill_check = BillCheck(
            shared.engine,
            shared.forwarder,
            shared.pricing,
            settings.admin_api_key,
            shared.metrics,
            clock=clock,
        )
    key = upstream_key(settings)
    if key:
        parts.cleaner = cleaner(shared, key)
        parts.collector = Collector(
            shared.engine,
            writer,
            shared.forwarder,
            shared.quota,
            shared.metrics,
            CollectorSettings(key, reconcile_after=settings.reconcile_after),
            current.label,
        )
        holder = lease.holder_id()
        intervals = {"reconciler": settings.reconcile_seconds}
        intervals["storage_sampler"] = settings.sample_seconds
        parts.leases = {
            job: JobLease(shared.engine, job, holder, job_ttl(intervals[job]), clock)
            for job in JOBS
        }
    return parts
