"""The ledger's database: an engine from a URL, and its schema brought up to date."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from alembic.config import Config


class DatabaseUrlError(ValueError):
    pass


def normalise_url(url: str) -> str:
    """``postgresql://`` means psycopg 3 here; ``sqlite:///path`` creates its folder."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif not parsed.drivername.startswith("postgresql+"):
        raise DatabaseUrlError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: "
            "use sqlite:///path/to/ledger.db or postgresql://user@host/db"
        )
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine_from_url(url: str) -> Engine:
    """The one place a database URL becomes an engine."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def alembic_config() -> Config:
    from alembic.config import Config  # imported on use: the proxy never needs alembic

    config = Config()
    config.set_main_option("script_location", str(files("tollhouse").joinpath("migrations")))
    return config


# The newest migration; a test checks it is the head of migrations/versions.
SCHEMA_REVISION = "0002"


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (idempotent; safe on every start).

    A ledger already at the newest revision is left alone without loading alembic,
    which keeps ~10 MB out of every running proxy.
    """
    if revision == "head" and current_revision(engine) == SCHEMA_REVISION:
        return
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
