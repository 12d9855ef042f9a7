"""What the ledger knows of a period's Assistants-era work, for the migration report.

SQL only, summed where the report only needs sums; ``migration`` does the rest.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, case, func, select
from sqlmodel import col

from tollhouse.api.classify import Kind
from tollhouse.ledger.models import (
    Assistant,
    CodeInterpreterSession,
    OwnedObject,
    Response,
    Run,
    ThreadMessages,
    ToolCall,
)
from tollhouse.report.query import DAY

SESSION_SECONDS = 3600
# The Assistants-era kinds whose idle objects need no migrating.
ASSISTANT_KINDS = (Kind.THREAD, Kind.ASSISTANT, Kind.VECTOR_STORE, Kind.FILE)


@dataclass(frozen=True, slots=True)
class RunGroup:
    """A tenant's runs of one assistant and model on one UTC day (by finish, else creation)."""

    tenant: str
    assistant_id: str | None
    model: str | None
    day: int  # days since the epoch
    runs: int
    metered: int  # of them with usage recorded
    prompt_tokens: int
    completion_tokens: int
    streamed: int
    polled: int
    polls: int
    tool_rounds: int
    last_at: int


@dataclass(frozen=True, slots=True)
class ThreadUse:
    tenant: str
    thread_id: str
    created_at: int | None  # None: not created through tollhouse
    last_used_at: int | None
    runs: int
    messages: int


@dataclass(frozen=True, slots=True)
class Details:
    model: str | None
    instructions_chars: int
    tools: tuple[str, ...]
    vector_store_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unused:
    tenant: str
    kind: str
    id: str
    last_used_at: int


@dataclass(frozen=True, slots=True)
class MigrationUsage:
    runs: list[RunGroup]
    threads: list[ThreadUse]
    assistants: dict[str, Details]
    # (tenant, thread, session start) -> the times of the session's calls
    sessions: dict[tuple[str, str, int], list[int]]
    file_search_calls: dict[str, int]
    code_interpreter_calls: dict[str, int]
    responses_tokens: dict[str, tuple[int, int, int]]  # tenant -> responses, input, cached
    unused: list[Unused]


def fetch_migration_usage(
    engine: Engine, start: int, end: int, tenant: str | None, idle_before: int
) -> MigrationUsage:
    """The period [start, end)'s Assistants work; objects last used before ``idle_before``."""
    with engine.connect() as connection:
        runs = _runs(connection, start, end, tenant)
        ids = {r.assistant_id for r in runs if r.assistant_id is not None}
        return MigrationUsage(
            runs=runs,
            threads=_threads(connection, start, end, tenant),
            assistants=_assistants(connection, ids),
            sessions=_sessions(connection, start, end, tenant),
            file_search_calls=_calls(connection, "file_search", start, end, tenant),
            code_interpreter_calls=_calls(connection, "code_interpreter", start, end, tenant),
            responses_tokens=_responses(connection, start, end, tenant),
            unused=_unused(connection, idle_before, tenant),
        )


def _for(query: Any, column: Any, tenant: str | None) -> Any:
    """``query`` narrowed to one tenant's rows, if one is asked for."""
    return query if tenant is None else query.where(column == tenant)


def _runs(connection: Connection, start: int, end: int, tenant: str | None) -> list[RunGroup]:
    at = func.coalesce(col(Run.finished_at), col(Run.created_at))
    day = (at // DAY).label("day")
    keys = (col(Run.tenant), col(Run.assistant_id), col(Run.model), day)
    metered = col(Run.usage_recorded_at).is_not(None) & col(Run.prompt_tokens).is_not(None)
    query = (
        select(
            *keys,
            func.count().label("runs"),
            func.sum(case((metered, 1), else_=0)).label("metered"),
            func.coalesce(func.sum(col(Run.prompt_tokens)), 0).label("prompt"),
            func.coalesce(func.sum(col(Run.completion_tokens)), 0).label("completion"),
            func.sum(case((col(Run.streamed), 1), else_=0)).label("streamed"),
            func.sum(case((col(Run.polls) > 0, 1), else_=0)).label("polled"),
            func.coalesce(func.sum(col(Run.polls)), 0).label("polls"),
            func.coalesce(func.sum(col(Run.tool_rounds)), 0).label("rounds"),
            func.max(func.coalesce(col(Run.last_seen_at), at)).label("last_at"),
        )
        .where(at >= start, at < end)
        .group_by(*keys)
    )
    return [
        RunGroup(
            row.tenant,
            row.assistant_id,
            row.model,
            *map(int, (row.day, row.runs, row.metered, row.prompt, row.completion)),
            *map(int, (row.streamed, row.polled, row.polls, row.rounds, row.last_at)),
        )
        for row in connection.execute(_for(query, col(Run.tenant), tenant))
    ]


def _threads(connection: Connection, start: int, end: int, tenant: str | None) -> list[ThreadUse]:
    """Threads with a run in the period, or created in it: their runs in it, and the
    messages clients added to them through tollhouse (at any time)."""
    at = func.coalesce(col(Run.finished_at), col(Run.created_at))
    runs = _for(
        select(col(Run.tenant), col(Run.thread_id), func.count().label("runs"))
        .where(at >= start, at < end)
        .group_by(col(Run.tenant), col(Run.thread_id)),
        col(Run.tenant),
        tenant,
    )
    found: dict[str, dict[str, Any]] = {}
    for row in connection.execute(runs):
        found[row.thread_id] = {"tenant": row.tenant, "runs": int(row.runs)}
    created = _for(
        select(col(OwnedObject.id), col(OwnedObject.tenant)).where(
            col(OwnedObject.kind) == str(Kind.THREAD),
            col(OwnedObject.created_at) >= start,
            col(OwnedObject.created_at) < end,
        ),
        col(OwnedObject.tenant),
        tenant,
    )
    for row in connection.execute(created):
        found.setdefault(row.id, {"tenant": row.tenant, "runs": 0})
    counts = {
        row.thread_id: int(row.messages)
        for row in connection.execute(
            select(col(ThreadMessages.thread_id), col(ThreadMessages.messages)).where(
                col(ThreadMessages.thread_id).in_(sorted(found))
            )
        )
    }
    owned = {
        row.id: (row.created_at, row.last_used_at)
        for row in connection.execute(
            select(col(OwnedObject.id), col(OwnedObject.created_at), col(OwnedObject.last_used_at))
            .where(col(OwnedObject.kind) == str(Kind.THREAD))
            .where(col(OwnedObject.id).in_(sorted(found)))
        )
    }
    return [
        ThreadUse(
            use["tenant"],
            thread,
            *owned.get(thread, (None, None)),
            use["runs"],
            counts.get(thread, 0),
        )
        for thread, use in sorted(found.items())
    ]


def _assistants(connection: Connection, ids: Collection[str]) -> dict[str, Details]:
    if not ids:
        return {}
    rows = connection.execute(select(Assistant).where(col(Assistant.id).in_(sorted(ids))))
    return {
        row.id: Details(
            row.model,
            int(row.instructions_chars),
            tuple(filter(None, row.tools.split(","))),
            tuple(filter(None, row.vector_store_ids.split(","))),
        )
        for row in rows
    }


def _sessions(
    connection: Connection, start: int, end: int, tenant: str | None
) -> dict[tuple[str, str, int], list[int]]:
    session = CodeInterpreterSession
    query = _for(
        select(col(session.tenant), col(session.thread_id), col(session.started_at)).where(
            col(session.started_at) >= start, col(session.started_at) < end
        ),
        col(session.tenant),
        tenant,
    )
    sessions: dict[tuple[str, str, int], list[int]] = {
        (row.tenant, row.thread_id, int(row.started_at)): [] for row in connection.execute(query)
    }
    threads = sorted({thread for _, thread, _ in sessions})
    if not threads:
        return sessions
    calls = connection.execute(
        select(col(ToolCall.thread_id), col(ToolCall.at))
        .where(col(ToolCall.type) == "code_interpreter", col(ToolCall.thread_id).in_(threads))
        .where(col(ToolCall.at) >= start, col(ToolCall.at) < end + SESSION_SECONDS)
    ).all()
    for (tenant_name, thread, started), times in sessions.items():
        del tenant_name
        times.extend(
            sorted(
                int(at)
                for call_thread, at in calls
                if call_thread == thread and started <= at < started + SESSION_SECONDS
            )
        )
    return sessions


def _calls(
    connection: Connection, kind: str, start: int, end: int, tenant: str | None
) -> dict[str, int]:
    query = _for(
        select(col(ToolCall.tenant), func.count().label("calls"))
        .where(col(ToolCall.type) == kind, col(ToolCall.at) >= start, col(ToolCall.at) < end)
        .group_by(col(ToolCall.tenant)),
        col(ToolCall.tenant),
        tenant,
    )
    return {row.tenant: int(row.calls) for row in connection.execute(query)}


def _responses(
    connection: Connection, start: int, end: int, tenant: str | None
) -> dict[str, tuple[int, int, int]]:
    at = func.coalesce(col(Response.finished_at), col(Response.created_at))
    query = _for(
        select(
            col(Response.tenant),
            func.count().label("responses"),
            func.coalesce(func.sum(col(Response.input_tokens)), 0).label("input"),
            func.coalesce(func.sum(col(Response.cached_tokens)), 0).label("cached"),
        )
        .where(col(Response.usage_recorded_at).is_not(None), at >= start, at < end)
        .group_by(col(Response.tenant)),
        col(Response.tenant),
        tenant,
    )
    return {
        row.tenant: (int(row.responses), int(row.input), int(row.cached))
        for row in connection.execute(query)
    }


def _unused(connection: Connection, before: int, tenant: str | None) -> list[Unused]:
    query = _for(
        select(
            col(OwnedObject.tenant),
            col(OwnedObject.kind),
            col(OwnedObject.id),
            col(OwnedObject.last_used_at),
        ).where(
            and_(
                col(OwnedObject.kind).in_([str(k) for k in ASSISTANT_KINDS]),
                col(OwnedObject.deleted_at).is_(None),
                col(OwnedObject.keep).is_(False),
                col(OwnedObject.last_used_at) < before,
            )
        ),
        col(OwnedObject.tenant),
        tenant,
    )
    return [
        Unused(row.tenant, row.kind, row.id, int(row.last_used_at))
        for row in connection.execute(query)
    ]
