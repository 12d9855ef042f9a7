"""The ledger's database: an engine from a URL, with bounded waits, and its schema."""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

# Without a statement timeout (the CLI's reports and sweeps may run long), SQLite
# still waits at most this long for a lock.
SQLITE_BUSY_SECONDS = 5.0
# libpq and psycopg treat a connect timeout under 2 s as 2 s.
MIN_CONNECT_SECONDS = 2
# A watchdog with nothing to watch keeps its thread this long before it ends.
WATCHDOG_IDLE_SECONDS = 60.0
# The watchdog waits this much past the statement timeout, so a live server's own
# cancel comes first and leaves its connection usable.
WATCHDOG_GRACE_SECONDS = 0.5

_ARMED = "tollhouse_deadline"
_FRESH = "tollhouse_fresh"
_UNBOUNDED = "tollhouse_unbounded"


class DatabaseUrlError(ValueError):
    pass


class DatabaseTimeout(SQLAlchemyError):
    """The database did not answer within the statement timeout."""


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
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def engine_from_url(
    url: str, connect_timeout: float = 5.0, statement_timeout: float | None = None
) -> Engine:
    """The one place a database URL becomes an engine.

    ``connect_timeout`` bounds connecting and waiting for a pooled connection.
    ``statement_timeout`` bounds each database call: on SQLite it is the busy timeout;
    on PostgreSQL it is the server's ``statement_timeout``, and a watchdog closes the
    connection of a call the server has not answered half a second after it (a frozen
    server or a host gone without closing its connections cannot time itself out).
    """
    url = normalise_url(url)
    if url.startswith("sqlite"):
        busy = SQLITE_BUSY_SECONDS if statement_timeout is None else statement_timeout
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": busy})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {
        "connect_timeout": max(MIN_CONNECT_SECONDS, math.ceil(connect_timeout))
    }
    if statement_timeout is None:
        return create_engine(
            url,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            pool_timeout=connect_timeout,
            connect_args=connect_args,
        )
    options = make_url(url).query.get("options")
    if isinstance(options, tuple):  # given more than once in the URL
        options = " ".join(options)
    server_timeout = f"-c statement_timeout={math.ceil(statement_timeout * 1000)}"
    connect_args["options"] = f"{options} {server_timeout}" if options else server_timeout
    # The watchdog pings on checkout itself (pool_pre_ping would ping unwatched).
    engine = create_engine(
        url, pool_size=5, max_overflow=5, pool_timeout=connect_timeout, connect_args=connect_args
    )
    _Watchdog(statement_timeout + WATCHDOG_GRACE_SECONDS).install(engine)
    return engine


@dataclass
class _Deadline:
    """A checked-out connection's socket and when its current call must be over."""

    fd: int
    inode: int
    at: float
    fired: bool = False


class _Watchdog:
    """Closes the socket of a PostgreSQL connection whose call outlasts the timeout.

    Each checked-out connection gets a deadline, moved forward whenever a statement
    starts or ends, so it bounds every single wait (the ping on checkout, a statement,
    the commit), not a whole transaction. One thread shuts down the socket of a
    connection past its deadline; the call waiting on it fails at once with a
    connection error, and the pool replaces the connection.
    """

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._armed: dict[int, _Deadline] = {}  # by id() of the pool's connection record
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def install(self, engine: Engine) -> None:
        event.listen(engine.pool, "connect", self._connected)
        event.listen(engine.pool, "checkout", self._checked_out)
        for name in ("checkin", "invalidate", "soft_invalidate", "close", "detach"):
            event.listen(engine.pool, name, self._released)
        event.listen(engine, "before_cursor_execute", self._progress)
        event.listen(engine, "after_cursor_execute", self._progress)
        self._ping = engine.dialect.do_ping
        self._dbapi_error = engine.dialect.loaded_dbapi.Error

    # -- pool and engine events -----------------------------------------------------------

    def _connected(self, dbapi_connection: Any, record: Any) -> None:
        record.info[_FRESH] = True  # just connected: no need to ping it

    def _checked_out(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        fd = dbapi_connection.fileno()
        deadline = _Deadline(fd, os.fstat(fd).st_ino, time.monotonic() + self._seconds)
        record.info[_ARMED] = deadline
        with self._changed:
            self._armed[id(record)] = deadline
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._watch, name="tollhouse-db-watchdog", daemon=True
                )
                self._thread.start()
            self._changed.notify()
        if record.info.pop(_FRESH, False):
            return
        try:
            self._ping(dbapi_connection)
        except self._dbapi_error as exc:
            if deadline.fired:
                raise DatabaseTimeout(
                    f"the database did not answer within {self._seconds:g} s"
                ) from exc
            # a connection the server closed (a restart): the pool connects anew
            raise DisconnectionError(str(exc)) from exc

    def _released(self, _dbapi_connection: Any, record: Any, *_args: Any) -> None:
        record.info.pop(_ARMED, None)
        record.info.pop(_UNBOUNDED, None)
        with self._changed:
            if self._armed.pop(id(record), None) is not None:
                self._changed.notify()

    def _progress(self, connection: Connection, *_args: Any) -> None:
        deadline = connection.info.get(_ARMED)
        if deadline is not None:
            unbounded = connection.info.get(_UNBOUNDED)
            # a plain store: the watchdog reads it when it wakes, no lock needed
            deadline.at = math.inf if unbounded else time.monotonic() + self._seconds

    # -- the watchdog thread ------------------------------------------------------------

    def _watch(self) -> None:
        idle_since = time.monotonic()
        with self._changed:
            while True:
                now = time.monotonic()
                waiting = [d for d in self._armed.values() if not d.fired]
                for deadline in waiting:
                    if deadline.at <= now:
                        self._fire(deadline)
                upcoming = min((d.at for d in waiting if not d.fired), default=math.inf)
                if self._armed:
                    idle_since = now
                elif now - idle_since >= WATCHDOG_IDLE_SECONDS:
                    self._thread = None
                    return
                wake = min(upcoming, idle_since + WATCHDOG_IDLE_SECONDS)
                self._changed.wait(None if math.isinf(wake) else max(0.0, wake - now))

    def _fire(self, deadline: _Deadline) -> None:
        deadline.fired = True
        try:
            fd = os.dup(deadline.fd)
        except OSError:
            return  # already closed: the call has ended
        try:
            if os.fstat(fd).st_ino != deadline.inode:  # the number now names another file
                os.close(fd)
                return
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            os.close(fd)
            log.debug("a stuck database connection could not be closed: %s", exc)
            return
        with sock:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:  # it ended meanwhile
                log.debug("a stuck database connection could not be closed: %s", exc)
                return
        log.warning(
            "the database did not answer within %g s: its connection was closed",
            self._seconds,
        )


def alembic_config() -> Config:
    from alembic.config import Config  # imported on use: the proxy never needs alembic

    config = Config()
    config.set_main_option("script_location", str(files("tollhouse.ledger").joinpath("migrations")))
    return config


# The newest migration; a test checks it is the head of migrations/versions.
SCHEMA_REVISION = "0006"


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


MIGRATION_LOCK = 0x7011_4005E  # the advisory lock key migrations hold on PostgreSQL


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
        _unbounded(connection)
        if connection.dialect.name == "postgresql":
            # Replicas starting together migrate one at a time: the others wait here, then
            # find the schema already at the revision (SQLite's write lock does the same).
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def _unbounded(connection: Connection) -> None:
    """No statement timeout for this transaction: a migration may rightly run long."""
    connection.info[_UNBOUNDED] = True
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL statement_timeout = 0"))
