"""Settings from the environment (``TOLLHOUSE_*``), read once by the CLI."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
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
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to the upstream.")
    read_timeout: float = Field(
        600.0, gt=0, description="Seconds to wait for the upstream's next bytes."
    )
    max_connections: int = Field(1000, ge=1, description="Upstream connection pool size.")
    log_level: str = Field("info", description="debug, info, warning or error.")
    policy_file: Path | None = Field(
        None, description="Policy YAML (tenants, keys, limits); reloaded on SIGHUP."
    )
    upstream_api_key: SecretStr | None = Field(
        None, description="The real upstream key, sent in place of tollhouse-issued keys."
    )
    buckets_url: str = Field("memory://", description="memory:// or redis://host:port/db.")
    replicas: int = Field(
        1, ge=1, description="Replicas sharing the buckets; each keeps 1/replicas if Redis fails."
    )
    database_url: str = Field(
        "sqlite:///tollhouse.db", description="The ledger: sqlite:///path or postgresql://..."
    )
    spool_path: Path = Field(
        Path("tollhouse.spool"), description="Where ledger writes wait while the database is down."
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
    pricing_file: Path | None = Field(None, description="Your own pricing table (YAML).")
    reconcile_seconds: float = Field(60.0, gt=0, description="How often the reconciler runs.")
    reconcile_after: float = Field(
        300.0, ge=0, description="Seconds a live run goes unseen before the reconciler fetches it."
    )
    sample_seconds: float = Field(
        600.0, gt=0, description="How often vector-store storage is sampled."
    )
