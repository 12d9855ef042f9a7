"""The cleaner's side of the ledger: what may be stale, sweeps, and the audit trail of deletes.

Synchronous, like ``ledger``; the cleaner calls it from a worker thread. Each write
is one transaction. A delete is recorded twice: ``intend`` (status ``pending``)
just before the DELETE is sent and ``settle`` (``deleted``, plus ``deleted_at`` on
the object and its children in ``owned_object``) once the upstream answered 2xx or
404, so a sweep cut short leaves ``pending`` rows that the next one resumes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased
from sqlmodel import col

from tollhouse.cleanup.stale import Record, Verdict
from tollhouse.ledger.models import CleanupAudit, CleanupSweep, OwnedObject, Run

PENDING, DELETED, FAILED, CANCELLED = "pending", "deleted", "failed", "cancelled"
ERROR_LENGTH = 512


def _last_uses() -> list[Any]:
    """Correlated maxima of what shows an object in use: children, and runs on it."""
    child = aliased(OwnedObject)
    return [
        select(func.max(child.last_used_at))
        .where(col(child.parent_id) == col(OwnedObject.id))
        .scalar_subquery(),
        select(func.max(Run.last_seen_at))
        .where(col(Run.thread_id) == col(OwnedObject.id))
        .scalar_subquery(),
        select(func.max(Run.last_seen_at))
        .where(col(Run.assistant_id) == col(OwnedObject.id))
        .scalar_subquery(),
    ]


def _select() -> Any:
    return select(
        col(OwnedObject.id),
        col(OwnedObject.kind),
        col(OwnedObject.tenant),
        col(OwnedObject.last_used_at),
        col(OwnedObject.keep),
        *_last_uses(),
    ).where(col(OwnedObject.deleted_at).is_(None))


def _record(row: Any) -> Record:
    uses = [value for value in row[5:] if value is not None]
    return Record(row.id, row.kind, row.tenant, max([row.last_used_at, *uses]), bool(row.keep))


def candidates(
    engine: Engine, cutoffs: dict[str, int], tenants: Collection[str] | None = None
) -> list[Record]:
    """Live objects of each kind whose own last use is at or before that kind's cutoff.

    The cutoff only narrows the query (an object used after it cannot be stale);
    ``stale.decide`` makes the decision.
    """
    if not cutoffs:
        return []
    query = _select().where(
        or_(
            *(
                and_(col(OwnedObject.kind) == kind, col(OwnedObject.last_used_at) <= cutoff)
                for kind, cutoff in cutoffs.items()
            )
        )
    )
    if tenants is not None:
        query = query.where(col(OwnedObject.tenant).in_(sorted(tenants)))
    with engine.connect() as connection:
        return [_record(row) for row in connection.execute(query)]


def current(engine: Engine, object_id: str) -> Record | None:
    """The object as the ledger knows it now; None once it is deleted."""
    with engine.connect() as connection:
        row = connection.execute(_select().where(col(OwnedObject.id) == object_id)).first()
    return None if row is None else _record(row)


def pending(
    engine: Engine, tenants: Collection[str] | None = None, kinds: Collection[str] | None = None
) -> list[Record]:
    """Live objects whose DELETE was about to be sent, or sent, when a sweep stopped."""
    query = (
        _select()
        .join(CleanupAudit, col(CleanupAudit.object_id) == col(OwnedObject.id))
        .where(col(CleanupAudit.status) == PENDING)
        .order_by(col(CleanupAudit.decided_at), col(OwnedObject.id))
    )
    if tenants is not None:
        query = query.where(col(OwnedObject.tenant).in_(sorted(tenants)))
    if kinds is not None:
        query = query.where(col(OwnedObject.kind).in_(sorted(kinds)))
    with engine.connect() as connection:
        return [_record(row) for row in connection.execute(query)]


def start_sweep(engine: Engine, holder: str, now: int) -> int:
    """A new sweep; sweeps still marked running were cut short (the caller holds the lease)."""
    with engine.begin() as connection:
        connection.execute(
            update(CleanupSweep)
            .where(col(CleanupSweep.status) == "running")
            .values(status="interrupted")
        )
        sweep_id = connection.execute(
            _insert(connection, CleanupSweep)
            .values(holder=holder, status="running", started_at=now, found=0, deleted=0, failed=0)
            .returning(col(CleanupSweep.id))
        ).scalar_one()
    return int(sweep_id)


def finish_sweep(
    engine: Engine, sweep_id: int, now: int, status: str, found: int, deleted: int, failed: int
) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(CleanupSweep)
            .where(col(CleanupSweep.id) == sweep_id)
            .values(status=status, finished_at=now, found=found, deleted=deleted, failed=failed)
        )


def intend(
    engine: Engine, sweep_id: int, record: Record, verdict: Verdict, usage_bytes: int, now: int
) -> None:
    """Before the DELETE goes out: the object, whose it is and why it goes, as ``pending``."""
    with engine.begin() as connection:
        _upsert(connection, sweep_id, record, verdict, usage_bytes, now, PENDING, None)


def settle(
    engine: Engine,
    sweep_id: int,
    record: Record,
    verdict: Verdict,
    usage_bytes: int,
    now: int,
) -> None:
    """The upstream no longer has the object: audit it deleted, and mark it and its children."""
    with engine.begin() as connection:
        _upsert(connection, sweep_id, record, verdict, usage_bytes, now, DELETED, now)
        connection.execute(
            update(OwnedObject)
            .where(
                and_(
                    or_(
                        col(OwnedObject.id) == record.id,
                        col(OwnedObject.parent_id) == record.id,
                    ),
                    col(OwnedObject.deleted_at).is_(None),
                )
            )
            .values(deleted_at=now)
        )


def fail(engine: Engine, object_id: str, error: str) -> None:
    """The DELETE did not get an answer that settles it; the next sweep looks again."""
    with engine.begin() as connection:
        connection.execute(
            update(CleanupAudit)
            .where(col(CleanupAudit.object_id) == object_id)
            .values(status=FAILED, error=error[:ERROR_LENGTH])
        )


def cancel(engine: Engine, object_id: str, reason: str) -> None:
    """A resumed delete no longer applies (the object was touched); nothing was deleted."""
    with engine.begin() as connection:
        connection.execute(
            update(CleanupAudit)
            .where(
                and_(
                    col(CleanupAudit.object_id) == object_id,
                    col(CleanupAudit.status) == PENDING,
                )
            )
            .values(status=CANCELLED, error=reason[:ERROR_LENGTH])
        )


def _insert(connection: Connection, model: Any) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(model)


def _upsert(
    connection: Connection,
    sweep_id: int,
    record: Record,
    verdict: Verdict,
    usage_bytes: int,
    now: int,
    status: str,
    deleted_at: int | None,
) -> None:
    values = {
        "object_id": record.id,
        "kind": record.kind,
        "tenant": record.tenant,
        "status": status,
        "reason": verdict.reason[:256],
        "sweep_id": sweep_id,
        "last_touched_at": verdict.last_touched,
        "ttl_seconds": verdict.ttl,
        "usage_bytes": usage_bytes,
        "decided_at": now,
        "deleted_at": deleted_at,
        "attempts": 1 if status == PENDING else 0,
        "error": None,
    }
    statement = _insert(connection, CleanupAudit).values(**values)
    changes = {name: statement.excluded[name] for name in values if name != "object_id"}
    table = CleanupAudit.__table__  # type: ignore[attr-defined]
    changes["attempts"] = table.c.attempts + statement.excluded.attempts
    if status == DELETED:  # settling keeps why and when the delete was decided
        for name in ("reason", "last_touched_at", "ttl_seconds", "decided_at"):
            changes[name] = func.coalesce(table.c[name], statement.excluded[name])
    statement = statement.on_conflict_do_update(index_elements=["object_id"], set_=changes)
    connection.execute(statement)
