"""The ledger engine and the upstream forwarder, built from settings in one place.

``serve``, ``cleanup``, ``adopt`` and ``report`` all reach the same database and the
same upstream, so they get the same timeouts, egress proxy, CA bundle and client
certificate from here.
"""

from __future__ import annotations

from sqlalchemy import Engine

from tollhouse.config.settings import Settings
from tollhouse.ledger.engine import engine_from_url
from tollhouse.upstream.forward import Forwarder, UpstreamSettings


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
