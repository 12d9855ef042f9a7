"""Applying what the proxy observed to the ledger: one transaction per batch.

Everything here is synchronous and runs in a worker thread (see ``writer``).
Counting is idempotent: a run's tokens are recorded when it is first seen
terminal, a tool call once by its id, a Code Interpreter session once per
thread per hour. ``apply`` returns what was new, for the metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from tollhouse.meter import ObjectSeen, RunSeen, StepSeen
from tollhouse.models import (
    CodeInterpreterSession,
    OwnedObject,
    RequestCount,
    Run,
    Tenant,
    ToolCall,
    VectorStoreSample,
)

SESSION_SECONDS = 3600
METERED_TOOLS = ("code_interpreter", "file_search")


@dataclass(frozen=True, slots=True)
class Owned:
    """An object to record with its owner."""

    tenant: str
    object: ObjectSeen


@dataclass(frozen=True, slots=True)
class Seen:
    """A run or step observed on behalf of a tenant."""

    tenant: str
    observation: RunSeen | StepSeen


@dataclass(frozen=True, slots=True)
class Sample:
    vector_store_id: str
    tenant: str
    at: int
    usage_bytes: int


@dataclass
class Batch:
    """Everything to write in one transaction."""

    owned: list[Owned] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    requests: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    touched: dict[str, int] = field(default_factory=dict)  # object id -> when it was used

    def __len__(self) -> int:
        parts = (self.owned, self.seen, self.samples, self.requests, self.touched)
        return sum(len(part) for part in parts)


@dataclass(frozen=True, slots=True)
class FinishedRun:
    """A run whose terminal state was recorded for the first time by this batch."""

    tenant: str
    run: RunSeen


@dataclass
class Counted:
    """What a batch added that had not been counted before."""

    finished_runs: list[FinishedRun] = field(default_factory=list)
    tool_calls: list[tuple[str, str]] = field(default_factory=list)  # (tenant, type)
    sessions: list[str] = field(default_factory=list)  # tenants


def _insert(connection: Connection, model: Any) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(model)


def _upsert(
    connection: Connection,
    model: Any,
    rows: list[dict[str, Any]],
    keys: list[str],
    update_columns: Iterable[str] = (),
    add_columns: Iterable[str] = (),
) -> None:
    if not rows:
        return
    statement = _insert(connection, model)
    changes = {name: statement.excluded[name] for name in update_columns}
    table = model.__table__
    changes.update({name: table.c[name] + statement.excluded[name] for name in add_columns})
    if changes:
        statement = statement.on_conflict_do_update(index_elements=keys, set_=changes)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=keys)
    connection.execute(statement, rows)


def apply(engine: Engine, batch: Batch, now: int) -> Counted:
    counted = Counted()
    with engine.begin() as connection:
        tenants = {o.tenant for o in batch.owned} | {s.tenant for s in batch.seen}
        tenants |= {key[0] for key in batch.requests}
        _upsert(
            connection,
            Tenant,
            [{"name": t, "first_seen_at": now} for t in sorted(tenants)],
            ["name"],
        )
        _record_owned(connection, batch.owned, now)
        runs = [s for s in batch.seen if isinstance(s.observation, RunSeen)]
        steps = [s for s in batch.seen if isinstance(s.observation, StepSeen)]
        _record_runs(connection, runs, now, counted)
        _record_steps(connection, steps, now, counted)
        if batch.samples:
            connection.execute(
                _insert(connection, VectorStoreSample),
                [
                    {
                        "vector_store_id": s.vector_store_id,
                        "tenant": s.tenant,
                        "at": s.at,
                        "usage_bytes": s.usage_bytes,
                    }
                    for s in batch.samples
                ],
            )
        _record_touched(connection, batch.touched)
        _upsert(
            connection,
            RequestCount,
            [
                {"tenant": t, "request_class": c, "outcome": o, "minute": m, "count": n}
                for (t, c, o, m), n in sorted(batch.requests.items())
            ],
            ["tenant", "request_class", "outcome", "minute"],
            add_columns=["count"],
        )
    return counted


def record_owners(engine: Engine, owned: list[Owned], tenants: list[str], now: int) -> None:
    """The fast path for creates: new owners (and tenants not seen before) in one go."""
    with engine.begin() as connection:
        if tenants:
            _upsert(
                connection, Tenant, [{"name": t, "first_seen_at": now} for t in tenants], ["name"]
            )
        _upsert(connection, OwnedObject, [_owned_row(o) for o in owned], ["id"])


def _owned_row(owned: Owned) -> dict[str, Any]:
    seen = owned.object
    return {
        "id": seen.id,
        "kind": str(seen.kind),
        "tenant": owned.tenant,
        "parent_id": seen.parent_id,
        "created_at": seen.created_at,
        "last_used_at": max(seen.created_at, seen.last_active_at or 0),
        "keep": seen.keep,
    }


def _record_owned(connection: Connection, owned: list[Owned], now: int) -> None:
    latest: dict[str, Owned] = {o.object.id: o for o in owned}
    rows = [_owned_row(o) for o in latest.values()]
    # The first owner stays the owner; later sightings only move last use forward.
    _upsert(connection, OwnedObject, rows, ["id"], update_columns=["keep"])
    for row in rows:
        connection.execute(
            update(OwnedObject)
            .where(
                and_(
                    col(OwnedObject.id) == row["id"],
                    col(OwnedObject.last_used_at) < row["last_used_at"],
                )
            )
            .values(last_used_at=row["last_used_at"])
        )


def _record_touched(connection: Connection, touched: dict[str, int]) -> None:
    """Objects used through the proxy: their last use moves forward, never back."""
    by_time: dict[int, list[str]] = {}
    for object_id, at in touched.items():
        by_time.setdefault(at, []).append(object_id)
    for at, ids in sorted(by_time.items()):
        connection.execute(
            update(OwnedObject)
            .where(
                and_(
                    col(OwnedObject.id).in_(sorted(ids)),
                    col(OwnedObject.last_used_at) < at,
                )
            )
            .values(last_used_at=at)
        )


def _record_runs(connection: Connection, seen: list[Seen], now: int, counted: Counted) -> None:
    latest: dict[str, Seen] = {}
    for item in seen:
        run = item.observation
        assert isinstance(run, RunSeen)
        previous = latest.get(run.id)
        # a terminal sighting wins over a live one, whatever order they came in
        if previous is None or run.terminal or not _as_run(previous).terminal:
            latest[run.id] = item
    rows = []
    for item in latest.values():
        run = _as_run(item)
        rows.append(
            {
                "id": run.id,
                "tenant": item.tenant,
                "thread_id": run.thread_id,
                "assistant_id": run.assistant_id,
                "model": run.model,
                "status": run.status,
                "created_at": run.created_at,
                "finished_at": run.finished_at,
                "code_interpreter": run.code_interpreter,
                "file_search": run.file_search,
                "last_seen_at": now,
            }
        )
    _upsert(
        connection,
        Run,
        rows,
        ["id"],
        update_columns=["status", "model", "finished_at", "last_seen_at"],
    )
    for item in latest.values():
        run = _as_run(item)
        if not run.terminal:
            continue
        usage = run.usage
        owner = connection.execute(
            update(Run)
            .where(and_(col(Run.id) == run.id, col(Run.usage_recorded_at).is_(None)))
            .values(
                usage_recorded_at=now,
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                total_tokens=usage.total_tokens if usage else None,
            )
            .returning(col(Run.tenant))
        ).scalar_one_or_none()
        if owner is not None:  # this batch recorded the terminal state first
            counted.finished_runs.append(FinishedRun(owner, run))


def _as_run(item: Seen) -> RunSeen:
    assert isinstance(item.observation, RunSeen)
    return item.observation


def _record_steps(connection: Connection, seen: list[Seen], now: int, counted: Counted) -> None:
    calls: dict[str, tuple[str, Any]] = {}
    run_ids: set[str] = set()
    for item in seen:
        step = item.observation
        assert isinstance(step, StepSeen)
        if step.status == "completed" or step.tool_calls:
            run_ids.add(step.run_id)
        for call in step.tool_calls:
            if call.type in METERED_TOOLS:
                calls[call.id] = (item.tenant, call)
    if run_ids:
        connection.execute(
            update(Run).where(col(Run.id).in_(sorted(run_ids))).values(steps_seen=True)
        )
    for call_id, (tenant, call) in sorted(calls.items(), key=lambda kv: kv[1][1].at):
        inserted = connection.execute(
            _insert(connection, ToolCall)
            .values(
                id=call_id,
                type=call.type,
                tenant=tenant,
                thread_id=call.thread_id,
                run_id=call.run_id,
                step_id=call.step_id,
                at=call.at,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(col(ToolCall.id))
        ).first()
        if inserted is None:  # seen before
            continue
        counted.tool_calls.append((tenant, call.type))
        if call.type == "code_interpreter" and _opens_session(connection, call.thread_id, call.at):
            connection.execute(
                _insert(connection, CodeInterpreterSession)
                .values(tenant=tenant, thread_id=call.thread_id, started_at=call.at)
                .on_conflict_do_nothing(index_elements=["thread_id", "started_at"])
            )
            counted.sessions.append(tenant)


def _opens_session(connection: Connection, thread_id: str, at: int) -> bool:
    """A call opens a session unless one in its thread started within the hour before it."""
    active = connection.execute(
        select(col(CodeInterpreterSession.id)).where(
            and_(
                col(CodeInterpreterSession.thread_id) == thread_id,
                col(CodeInterpreterSession.started_at) > at - SESSION_SECONDS,
                col(CodeInterpreterSession.started_at) <= at,
            )
        )
    ).first()
    return active is None


def owners(engine: Engine, ids: Iterable[str]) -> Mapping[str, str]:
    """The recorded owner of each id that has one."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    with engine.connect() as connection:
        rows = connection.execute(
            select(col(OwnedObject.id), col(OwnedObject.tenant)).where(
                col(OwnedObject.id).in_(wanted)
            )
        )
        return {row.id: row.tenant for row in rows}
