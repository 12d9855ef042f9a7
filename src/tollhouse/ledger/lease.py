"""Lease rows in the ledger: one replica at a time runs a job, on SQLite and PostgreSQL.

A lease is one row (name, holder, expires_at); the cleanup sweep and each collector
job have their own. Taking it is a single UPDATE whose WHERE clause only matches an
expired lease or one this holder already has, so of two replicas racing, the
database lets exactly one UPDATE change the row (SQLite serialises writers;
PostgreSQL re-checks the WHERE clause on the row it locked). A holder renews while
it works; a holder that died simply lets it expire, and another replica takes over.
Times come from the caller's clock: replicas' clocks must agree to well within the
lease's time-to-live (minutes), which NTP-synchronised hosts do.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import Connection, Engine, and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from tollhouse.ledger.models import CleanupLease

T = TypeVar("T")


class LeaseLost(Exception):
    """Another holder took the lease: this one must stop."""


def holder_id() -> str:
    """A name for this process, unique even for two processes on one host."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _ensure_row(connection: Connection, name: str) -> None:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(
        dialect.insert(CleanupLease)
        .values(name=name, holder="", expires_at=0.0)
        .on_conflict_do_nothing(index_elements=["name"])
    )


def take(engine: Engine, name: str, holder: str, now: float, ttl: float) -> bool:
    """Take (or extend) the lease until ``now + ttl``; False if someone else holds it."""
    with engine.begin() as connection:
        _ensure_row(connection, name)
        taken = connection.execute(
            update(CleanupLease)
            .where(
                and_(
                    col(CleanupLease.name) == name,
                    or_(col(CleanupLease.expires_at) <= now, col(CleanupLease.holder) == holder),
                )
            )
            .values(holder=holder, expires_at=now + ttl)
        )
        return taken.rowcount == 1


def renew(engine: Engine, name: str, holder: str, now: float, ttl: float) -> None:
    """Extend a lease this holder has; raises ``LeaseLost`` if it expired and was taken."""
    with engine.begin() as connection:
        renewed = connection.execute(
            update(CleanupLease)
            .where(and_(col(CleanupLease.name) == name, col(CleanupLease.holder) == holder))
            .values(expires_at=now + ttl)
        )
    if renewed.rowcount != 1:
        raise LeaseLost(f"the {name} lease was taken over by another replica")


def release(engine: Engine, name: str, holder: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(CleanupLease)
            .where(and_(col(CleanupLease.name) == name, col(CleanupLease.holder) == holder))
            .values(holder="", expires_at=0.0)
        )


def current(engine: Engine, name: str) -> tuple[str, float] | None:
    """The holder and expiry of a lease, if the row exists."""
    with engine.connect() as connection:
        found = connection.execute(
            select(col(CleanupLease.holder), col(CleanupLease.expires_at)).where(
                col(CleanupLease.name) == name
            )
        ).first()
    return None if found is None else (found.holder, found.expires_at)


class JobLease:
    """The lease of a periodic job, kept from one round to the next by the replica running it.

    The holder takes it again at every round, which extends it; the others find it held
    and skip their rounds. ``ttl`` spans a few rounds, so when the holder dies another
    replica takes over within ``ttl``. A round longer than a third of ``ttl`` renews the
    lease as it goes, and is cancelled if the lease was taken over meanwhile.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        holder: str,
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self._engine = engine
        self._clock = clock
        self.held = False

    async def run(self, work: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """Run ``work`` if this replica holds or can take the lease: (held, its result)."""
        self.held = await asyncio.to_thread(
            take, self._engine, self.name, self.holder, self._clock(), self.ttl
        )
        if not self.held:
            return False, None
        task = asyncio.ensure_future(work())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=self.ttl / 3)
                if not task.done():
                    await asyncio.to_thread(
                        renew, self._engine, self.name, self.holder, self._clock(), self.ttl
                    )
            return True, task.result()
        except LeaseLost:
            self.held = False
            raise
        finally:
            if not task.done():
                task.cancel()

    def release(self) -> None:
        """Hand the job over now (a clean shutdown), rather than when the lease expires."""
        if self.held:
            release(self._engine, self.name, self.holder)
            self.held = False


def job_ttl(interval: float) -> float:
    """A collector job's lease: two and a half rounds, so one late round does not hand it
    over, and at least 5 s."""
    return max(2.5 * interval, 5.0)
