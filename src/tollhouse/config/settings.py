"""Settings from the environment (``TOLLHOUSE_*``), read once by the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, FilePath, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process settings. Every field can be set as ``TOLLHOUSE_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="TOLLHOUSE_", frozen=True, extra="ignore")

    upstream_url: str = Field(
        "https://api.openai.com/v1",
        description="Base URL of the upstream API, as given to the openai client.",
    )
    host: str = Field("127.0.0.1", description="Address the proxy listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the proxy.")
    admin_host: str = Field("127.0.0.1", description="Address of /metrics, /healthz, /readyz.")
    admin_port: int = Field(9464, ge=0, le=65535, description="Port of the admin endpoints.")
    max_client_connections: int | None = Field(
        None,
        ge=1,
        description="Client connections open at once; past it new ones get 503. Unset: what "
        "the open files limit (raised to its hard limit at start) allows, at most 10000.",
    )
    max_header_bytes: int = Field(
        65536,
        ge=1024,
        description="Largest request line and headers of a client request, together (else 431).",
    )
    max_headers: int = Field(100, ge=1, description="Most headers in a client request (else 431).")
    header_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a client has to send a request's line and headers (else 408).",
    )
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to the upstream.")
    read_timeout: float = Field(
        600.0, gt=0, description="Seconds to wait for the upstream's next bytes."
    )
    max_connections: int = Field(1000, ge=1, description="Upstream connection pool size.")
    upstream_max_header_bytes: int = Field(
        16384,
        ge=1024,
        description="Longest status or header line accepted from the upstream (else 502).",
    )
    upstream_proxy: str | None = Field(
        None,
        description="HTTP proxy to reach the upstream through; unset: HTTPS_PROXY / HTTP_PROXY "
        "and NO_PROXY from the environment.",
    )
    upstream_ca_bundle: FilePath | None = Field(
        None, description="PEM file of the CAs trusted for the upstream, in place of the system's."
    )
    upstream_client_cert: FilePath | None = Field(
        None, description="PEM client certificate for the upstream (and its key, unless below)."
    )
    upstream_client_key: FilePath | None = Field(
        None, description="PEM private key of the upstream client certificate."
    )
    log_level: str = Field("info", description="debug, info, warning or error.")
    policy_file: Path | None = Field(
        None, description="Policy YAML (tenants, keys, limits); reloaded on SIGHUP."
    )
    upstream_api_key: SecretStr | None = Field(
        None, description="The real upstream key, sent in place of tollhouse-issued keys."
    )
    admin_api_key: SecretStr | None = Field(
        None,
        description="An organisation admin key (sk-admin-...) to read the upstream's usage and "
        "costs with; set, serve checks each day's bill against the ledger.",
    )
    buckets_url: str = Field("memory://", description="memory:// or redis://host:port/db.")
    replicas: int = Field(
        1, ge=1, description="Replicas sharing the buckets; each keeps 1/replicas if Redis fails."
    )
    database_url: str = Field(
        "sqlite:///tollhouse.db", description="The ledger: sqlite:///path or postgresql://..."
    )
    database_connect_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds to connect to the ledger database, or to wait for a pooled one.",
    )
    database_statement_timeout: float = Field(
        5.0,
        gt=0,
        description="Seconds one ledger database call may take (SQLite: the busy timeout).",
    )
    owner_write_timeout: float = Field(
        1.0,
        gt=0,
        description="Seconds a create waits for its owner's ledger write before spooling it.",
    )
    spool_path: Path = Field(
        Path("tollhouse.spool"),
        description="The open spool segment; closed ones are beside it as <path>.N.",
    )
    max_json_body_bytes: int = Field(
        8 * 1024 * 1024,
        ge=1024,
        description="Largest JSON request body read whole to check the ids it names (else 413).",
    )
    list_scan_pages: int = Field(
        10,
        ge=1,
        le=100,
        description="Upstream pages of 100 read at most for one page of a tenant's own list.",
    )
    early_retry_hold: float = Field(
        1.0,
        ge=0,
        le=60,
        description="A connection back before its retry-after waits up to this long (0: never).",
    )
    pricing_file: Path | None = Field(None, description="Your own pricing table (YAML).")
    reconcile_seconds: float = Field(60.0, gt=0, description="How often the reconciler runs.")
    reconcile_after: float = Field(
        300.0, ge=0, description="Seconds a live run goes unseen before the reconciler fetches it."
    )
    sample_seconds: float = Field(
        600.0, gt=0, description="How often vector-store storage is sampled."
    )
    running_marker: Path | None = Field(
        None,
        description="File present while serve runs; found at start, it means an unclean stop "
        "(default: beside the spool, <spool path without suffix>.running).",
    )
    recover_lookback: float = Field(
        3600.0,
        gt=0,
        description="After an unclean stop: seconds of activity before it that are metered again.",
    )
    drain_seconds: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM: seconds in-flight requests and streams get to finish.",
    )
