"""Applying what the proxy observed to the ledger: one transaction per batch.

Everything here is synchronous and runs in a worker thread (see ``writer``).
Counting is idempotent and independent of the order batches arrive in, from one
process or from many replicas at once: a run's state only moves forward (its
terminal state, tokens included, is written once and never taken back), a tool
call is counted once by its id, and a thread's Code Interpreter sessions are
always those its calls give, however late a call is recorded. Responses, their tool
calls, containers and chat completions are counted the same way (``ledger_responses``);
assistants' details, how runs are followed and flow-tagged requests by ``follow``.
``apply`` returns what was new, for the metrics.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError
from sqlmodel import col

from tollhouse.ledger.follow import Exchanged, record_assistants, record_exchanges
from tollhouse.ledger.models import (
    AppliedBatch,
    CodeInterpreterSession,
    OwnedObject,
    RequestCount,
    Run,
    Tenant,
    ToolCall,
    VectorStoreSample,
)
from tollhouse.ledger.responses import SuccessorCounted, record_successors
from tollhouse.metering.assistants import AssistantSeen
from tollhouse.metering.meter import ObjectSeen, RunSeen, StepSeen
from tollhouse.metering.responses import (
    ChatCompletionSeen,
    ContainerSeen,
    ResponseSeen,
    SuccessorSeen,
    ToolItemSeen,
)

SESSION_SECONDS = 3600
METERED_TOOLS = ("code_interpreter", "file_search")
# The status of a run the upstream no longer had when the reconciler asked: recorded without
# usage. Unlike a terminal status it is not final: a terminal sighting still replaces it.
GONE = "gone"
# PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled back
# whole and can simply run again.
_RETRYABLE = frozenset({"40P01", "40001"})
ATTEMPTS = 3
_SUCCESSOR_TYPES = (ResponseSeen, ToolItemSeen, ContainerSeen, ChatCompletionSeen)


@dataclass(frozen=True, slots=True)
class Owned:
    """An object to record with its owner."""

    tenant: str
    object: ObjectSeen


@dataclass(frozen=True, slots=True)
class Seen:
    """A run, step, response, tool call, container or chat completion observed on behalf
    of a tenant."""

    tenant: str
    observation: RunSeen | StepSeen | SuccessorSeen | AssistantSeen


@dataclass(frozen=True, slots=True)
class Sample:
    vector_store_id: str
    tenant: str
    at: int
    usage_bytes: int


@dataclass
class Batch:
    """Everything to write in one transaction."""

    # Written with the batch, in its transaction: a replay of an applied batch is a no-op.
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    owned: list[Owned] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    requests: dict[tuple[str, str, str, int], int] = field(default_factory=dict)
    touched: dict[str, int] = field(default_factory=dict)  # object id -> when it was used
    exchanges: list[Exchanged] = field(default_factory=list)

    def __len__(self) -> int:
        parts = (self.owned, self.seen, self.samples, self.requests, self.touched, self.exchanges)
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
    successors: SuccessorCounted = field(default_factory=SuccessorCounted)


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
    """Write one batch in one transaction; what it counted for the first time.

    Replicas write overlapping batches at once; where PostgreSQL still finds their
    row locks crossed it rolls one back, which is then simply run again.
    """
    attempt = 1
    while True:
        try:
            return _apply(engine, batch, now)
        except OperationalError as exc:
            if attempt == ATTEMPTS or getattr(exc.orig, "sqlstate", None) not in _RETRYABLE:
                raise
            attempt += 1


def _apply(engine: Engine, batch: Batch, now: int) -> Counted:
    counted = Counted()
    with engine.begin() as connection:
        first = connection.execute(
            _insert(connection, AppliedBatch)
            .values(id=batch.id, at=now)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(col(AppliedBatch.id))
        ).first()
        if first is None:  # committed before: its acknowledgement was lost, not its rows
            return counted
        tenants = {o.tenant for o in batch.owned} | {s.tenant for s in batch.seen}
        tenants |= {key[0] for key in batch.requests}
        _upsert(
            connection,
            Tenant,
            [{"name": t, "first_seen_at": now} for t in sorted(tenants)],
            ["name"],
        )
        # Tables in one order, rows sorted within each: replicas' batches lock rows in
        # the same order and rarely cross.
        _record_owned(connection, batch.owned, now)
        _record_touched(connection, batch.touched)
        runs = [s for s in batch.seen if isinstance(s.observation, RunSeen)]
        steps = [s for s in batch.seen if isinstance(s.observation, StepSeen)]
        _record_runs(connection, runs, now, counted)
        _record_steps(connection, steps, now, counted)
        successors = [
            (s.tenant, s.observation)
            for s in batch.seen
            if isinstance(s.observation, _SUCCESSOR_TYPES)
        ]
        counted.successors = record_successors(connection, successors, now)
        assistants = [s.observation for s in batch.seen if isinstance(s.observation, AssistantSeen)]
        record_assistants(connection, assistants, now)
        record_exchanges(connection, batch.exchanges)
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
    rows = [_owned_row(latest[object_id]) for object_id in sorted(latest)]
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
    if not touched:
        return
    # One statement, rows in id order: the order every replica locks them in.
    connection.execute(
        update(OwnedObject)
        .where(
            and_(
                col(OwnedObject.id) == bindparam("object_id"),
                col(OwnedObject.last_used_at) < bindparam("at"),
            )
        )
        .values(last_used_at=bindparam("at")),
        [{"object_id": object_id, "at": touched[object_id]} for object_id in sorted(touched)],
    )


def _record_runs(connection: Connection, seen: list[Seen], now: int, counted: Counted) -> None:
    """Runs move forward only: a terminal state, once written, is never taken back.

    A live sighting updates a run only while no terminal state is recorded, so an
    older poll written after the terminal one (by a slower replica, a late flush, a
    replayed spool) changes nothing; the terminal state and its tokens are written by
    one UPDATE that matches only a run not yet finished, so it is counted once.
    """
    latest: dict[str, Seen] = {}
    for item in seen:
        previous = latest.get(_as_run(item).id)
        # a terminal sighting wins over a live one, whatever order they came in
        if previous is None or not _as_run(previous).terminal:
            latest[_as_run(item).id] = item
    if not latest:
        return
    ordered = [latest[run_id] for run_id in sorted(latest)]
    table = Run.__table__  # type: ignore[attr-defined]
    statement = _insert(connection, Run)
    new = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "status": new.status,
            "model": func.coalesce(new.model, table.c.model),
            "finished_at": new.finished_at,
            "last_seen_at": case(
                (new.last_seen_at > table.c.last_seen_at, new.last_seen_at),
                else_=table.c.last_seen_at,
            ),
        },
        where=table.c.usage_recorded_at.is_(None),
    )
    connection.execute(statement, [_run_row(item, now) for item in ordered])
    for item in ordered:
        run = _as_run(item)
        if run.terminal and (owner := _finish(connection, run, now)) is not None:
            counted.finished_runs.append(FinishedRun(owner, run))


def _run_row(item: Seen, now: int) -> dict[str, Any]:
    run = _as_run(item)
    return {
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


def _finish(connection: Connection, run: RunSeen, now: int) -> str | None:
    """Record a run's terminal state and tokens unless already recorded; its owner if new."""
    usage = run.usage
    return connection.execute(
        update(Run)
        .where(
            and_(
                col(Run.id) == run.id,
                or_(col(Run.usage_recorded_at).is_(None), col(Run.status) == GONE),
            )
        )
        .values(
            status=run.status,
            model=func.coalesce(run.model, col(Run.model)),
            finished_at=run.finished_at,
            usage_recorded_at=now,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            total_tokens=usage.total_tokens if usage else None,
        )
        .returning(col(Run.tenant))
    ).scalar_one_or_none()


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
    interpreted = {call.thread_id for _, call in calls.values() if call.type == "code_interpreter"}
    _lock_threads(connection, interpreted)
    earliest: dict[str, int] = {}  # thread -> its earliest Code Interpreter call new here
    for call_id, (tenant, call) in sorted(calls.items()):
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
        if call.type == "code_interpreter":
            earliest[call.thread_id] = min(call.at, earliest.get(call.thread_id, call.at))
    for thread_id, since in sorted(earliest.items()):
        _resession(connection, thread_id, since, counted)


def session_starts(times: Iterable[int], covered_until: int | None = None) -> list[int]:
    """When a thread's Code Interpreter sessions start, from the times of its calls.

    A call opens a session unless one opened within the hour before it covers it;
    ``covered_until`` is where the coverage of an earlier, settled session ends.
    """
    starts: list[int] = []
    for at in sorted(times):
        if covered_until is None or at >= covered_until:
            starts.append(at)
            covered_until = at + SESSION_SECONDS
    return starts


def _lock_threads(connection: Connection, threads: set[str]) -> None:
    """Serialise session bookkeeping per thread across replicas (PostgreSQL; SQLite has
    one writer at a time anyway). Locks are taken in one order, and end with the
    transaction."""
    if connection.dialect.name != "postgresql":
        return
    for thread_id in sorted(threads):
        key = func.hashtextextended(f"tollhouse.code_interpreter:{thread_id}", 0)
        connection.execute(select(func.pg_advisory_xact_lock(key)))


def _resession(connection: Connection, thread_id: str, since: int, counted: Counted) -> None:
    """Make the thread's sessions from ``since`` on those its calls give.

    Calls may be recorded out of order (replicas, late flushes): a call earlier than
    the thread's latest session can move where sessions start. Sessions before the
    earliest new call are settled; the rest are worked out again from the calls.
    """
    session = CodeInterpreterSession
    settled = connection.execute(
        select(func.max(col(session.started_at))).where(
            col(session.thread_id) == thread_id, col(session.started_at) < since
        )
    ).scalar_one_or_none()
    calls = connection.execute(
        select(col(ToolCall.at), col(ToolCall.tenant))
        .where(
            col(ToolCall.thread_id) == thread_id,
            col(ToolCall.type) == "code_interpreter",
            col(ToolCall.at) >= since,
        )
        .order_by(col(ToolCall.at), col(ToolCall.id))
    ).all()
    opener: dict[int, str] = {}
    for at, tenant in calls:
        opener.setdefault(at, tenant)
    wanted = set(session_starts(opener, None if settled is None else settled + SESSION_SECONDS))
    stored = set(
        connection.execute(
            select(col(session.started_at)).where(
                col(session.thread_id) == thread_id, col(session.started_at) >= since
            )
        ).scalars()
    )
    gone, added = sorted(stored - wanted), sorted(wanted - stored)
    if gone:
        connection.execute(
            delete(session).where(
                col(session.thread_id) == thread_id, col(session.started_at).in_(gone)
            )
        )
    for at in added:
        connection.execute(
            _insert(connection, session)
            .values(tenant=opener[at], thread_id=thread_id, started_at=at)
            .on_conflict_do_nothing(index_elements=["thread_id", "started_at"])
        )
    # A session moved earlier replaces one counted before: only the net change is new.
    counted.sessions.extend(opener[at] for at in added[: max(0, len(added) - len(gone))])


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


def forget_applied(engine: Engine, before: int) -> int:
    """Drop the record of batches applied before ``before``; how many were dropped."""
    with engine.begin() as connection:
        result = connection.execute(delete(AppliedBatch).where(col(AppliedBatch.at) < before))
        return int(result.rowcount or 0)
