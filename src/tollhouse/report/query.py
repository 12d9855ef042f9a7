"""The ledger's usage for a report period, read with SQL and summed per tenant and day.

Pricing the usage is ``report``'s job; this module only fetches it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Select, and_, func, or_, select
from sqlmodel import col

from tollhouse.api.classify import Kind
from tollhouse.ledger.models import (
    ChatCompletion,
    CodeInterpreterSession,
    Container,
    OwnedObject,
    Response,
    ResponseToolCall,
    Run,
    ToolCall,
    VectorStoreSample,
)
from tollhouse.metering.meter import TERMINAL_STATUSES
from tollhouse.metering.responses import RESPONSE_TERMINAL

DAY = 86_400
_EPOCH = date(1970, 1, 1)


def unix_day(day_number: int) -> date:
    return _EPOCH + timedelta(days=day_number)


@dataclass(frozen=True, slots=True)
class RunUsage:
    """Terminal runs of one tenant, model, assistant and UTC day."""

    tenant: str
    model: str | None
    assistant_id: str | None
    day: date
    runs: int
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class ToolUsage:
    """Code Interpreter sessions, or File Search calls, of one tenant, assistant and day."""

    tenant: str
    assistant_id: str | None
    day: date
    count: int


@dataclass(frozen=True, slots=True)
class TokenUse:
    """Finished responses, or chat completions, of one tenant, model, service tier and UTC
    day. ``metered`` of the ``count`` carried usage (a chat stream may not); cached and
    cache-write tokens are part of the input tokens, reasoning tokens of the output."""

    tenant: str
    model: str | None
    service_tier: str | None
    day: date
    count: int
    metered: int
    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int


@dataclass(frozen=True, slots=True)
class CallUse:
    """Responses tool calls of one tenant, model (its response's), kind, tool version and day."""

    tenant: str
    model: str | None
    kind: str
    tool: str | None
    day: date
    count: int


@dataclass(frozen=True, slots=True)
class ContainerUse:
    """One container created in the period; its life ends ``expires_after_minutes`` (None:
    the API's 20) after its last activity."""

    tenant: str
    memory_limit: str | None
    created_at: int
    last_active_at: int
    expires_after_minutes: int | None
    auto: bool


@dataclass(frozen=True, slots=True)
class StoreHistory:
    """A vector store's ``(at, tenant, usage_bytes)`` samples, from the last one before the
    period on, and when it was known to be gone (None: still there)."""

    vector_store_id: str
    samples: tuple[tuple[int, str, int], ...]
    gone_at: int | None = None


@dataclass(frozen=True, slots=True)
class LedgerUsage:
    runs: Sequence[RunUsage] = ()
    sessions: Sequence[ToolUsage] = ()
    file_search_calls: Sequence[ToolUsage] = ()
    stores: Sequence[StoreHistory] = ()
    responses: Sequence[TokenUse] = ()
    chat_completions: Sequence[TokenUse] = ()
    response_tool_calls: Sequence[CallUse] = ()
    containers: Sequence[ContainerUse] = ()


def fetch_usage(
    engine: Engine, start: int, end: int, storage_end: int, tenant: str | None = None
) -> LedgerUsage:
    """The ledger's usage in [start, end), and storage samples up to ``storage_end``.

    Storage samples are read for every tenant: the free allowance is shared across them."""
    with engine.connect() as connection:
        return LedgerUsage(
            runs=_runs(connection, start, end, tenant),
            sessions=_sessions(connection, start, end, tenant),
            file_search_calls=_file_search_calls(connection, start, end, tenant),
            stores=_stores(connection, start, storage_end),
            responses=_responses(connection, start, end, tenant),
            chat_completions=_chats(connection, start, end, tenant),
            response_tool_calls=_response_tool_calls(connection, start, end, tenant),
            containers=_containers(connection, start, end, tenant),
        )


def _token_sums(model: type[Response] | type[ChatCompletion]) -> list[Any]:
    names = ("input", "cached", "cache_write", "output", "reasoning")
    return [
        func.coalesce(func.sum(getattr(model, f"{name}_tokens")), 0).label(f"{name}_tokens")
        for name in names
    ]


def _token_use(connection: Connection, query: Select[Any]) -> list[TokenUse]:
    return [
        TokenUse(
            row.tenant,
            row.model,
            row.service_tier,
            unix_day(int(row.day)),
            *map(
                int,
                (
                    row.count,
                    row.metered,
                    row.input_tokens,
                    row.cached_tokens,
                    row.cache_write_tokens,
                    row.output_tokens,
                    row.reasoning_tokens,
                ),
            ),
        )
        for row in connection.execute(query)
    ]


def _responses(connection: Connection, start: int, end: int, tenant: str | None) -> list[TokenUse]:
    at = func.coalesce(col(Response.finished_at), col(Response.created_at))
    day = (at // DAY).label("day")
    keys = (col(Response.tenant), col(Response.model), col(Response.service_tier), day)
    query = (
        select(
            *keys,
            func.count().label("count"),
            func.count(col(Response.input_tokens)).label("metered"),
            *_token_sums(Response),
        )
        .where(
            col(Response.usage_recorded_at).is_not(None),
            col(Response.status).in_(sorted(RESPONSE_TERMINAL)),
            at >= start,
            at < end,
        )
        .group_by(*keys)
    )
    if tenant is not None:
        query = query.where(col(Response.tenant) == tenant)
    return _token_use(connection, query)


def _chats(connection: Connection, start: int, end: int, tenant: str | None) -> list[TokenUse]:
    chat = ChatCompletion
    day = (col(chat.created_at) // DAY).label("day")
    keys = (col(chat.tenant), col(chat.model), col(chat.service_tier), day)
    query = (
        select(
            *keys,
            func.count().label("count"),
            func.count(col(chat.usage_recorded_at)).label("metered"),
            *_token_sums(chat),
        )
        .where(col(chat.created_at) >= start, col(chat.created_at) < end)
        .group_by(*keys)
    )
    if tenant is not None:
        query = query.where(col(chat.tenant) == tenant)
    return _token_use(connection, query)


def _response_tool_calls(
    connection: Connection, start: int, end: int, tenant: str | None
) -> list[CallUse]:
    """Calls on the day their response finished (was created, while live; when recorded,
    for a call whose response was never seen)."""
    call = ResponseToolCall
    at = func.coalesce(col(Response.finished_at), col(Response.created_at), col(call.at))
    day = (at // DAY).label("day")
    keys = (col(call.tenant), col(Response.model), col(call.type), col(call.tool), day)
    query = (
        select(*keys, func.count().label("calls"))
        .select_from(call)
        .outerjoin(Response, col(Response.id) == col(call.response_id))
        .where(at >= start, at < end)
        .group_by(*keys)
    )
    if tenant is not None:
        query = query.where(col(call.tenant) == tenant)
    return [
        CallUse(row.tenant, row.model, row.type, row.tool, unix_day(int(row.day)), int(row.calls))
        for row in connection.execute(query)
    ]


def _containers(
    connection: Connection, start: int, end: int, tenant: str | None
) -> list[ContainerUse]:
    query = select(Container).where(
        col(Container.created_at) >= start, col(Container.created_at) < end
    )
    if tenant is not None:
        query = query.where(col(Container.tenant) == tenant)
    return [
        ContainerUse(
            row.tenant,
            row.memory_limit,
            int(row.created_at),
            int(row.last_active_at),
            row.expires_after_minutes,
            bool(row.auto),
        )
        for row in connection.execute(query)
    ]


def _runs(connection: Connection, start: int, end: int, tenant: str | None) -> list[RunUsage]:
    at = func.coalesce(col(Run.finished_at), col(Run.created_at))
    day = (at // DAY).label("day")
    keys = (col(Run.tenant), col(Run.model), col(Run.assistant_id), day)
    query = (
        select(
            *keys,
            func.count().label("runs"),
            func.coalesce(func.sum(col(Run.prompt_tokens)), 0).label("input_tokens"),
            func.coalesce(func.sum(col(Run.completion_tokens)), 0).label("output_tokens"),
        )
        .where(
            col(Run.usage_recorded_at).is_not(None),
            col(Run.status).in_(sorted(TERMINAL_STATUSES)),
            at >= start,
            at < end,
        )
        .group_by(*keys)
    )
    if tenant is not None:
        query = query.where(col(Run.tenant) == tenant)
    return [
        RunUsage(
            row.tenant,
            row.model,
            row.assistant_id,
            unix_day(int(row.day)),
            *map(int, (row.runs, row.input_tokens, row.output_tokens)),
        )
        for row in connection.execute(query)
    ]


def _file_search_calls(
    connection: Connection, start: int, end: int, tenant: str | None
) -> list[ToolUsage]:
    day = (col(ToolCall.at) // DAY).label("day")
    keys = (col(ToolCall.tenant), col(Run.assistant_id), day)
    query = (
        select(*keys, func.count().label("calls"))
        .select_from(ToolCall)
        .outerjoin(Run, col(Run.id) == col(ToolCall.run_id))
        .where(col(ToolCall.type) == "file_search", col(ToolCall.at) >= start)
        .where(col(ToolCall.at) < end)
        .group_by(*keys)
    )
    if tenant is not None:
        query = query.where(col(ToolCall.tenant) == tenant)
    return _tool_usage(connection, query)


def _sessions(connection: Connection, start: int, end: int, tenant: str | None) -> list[ToolUsage]:
    session = CodeInterpreterSession
    opener = (  # the call that opened the session: its thread's first call at or after the start
        select(col(ToolCall.run_id))
        .where(
            col(ToolCall.thread_id) == col(session.thread_id),
            col(ToolCall.type) == "code_interpreter",
            col(ToolCall.at) >= col(session.started_at),
        )
        .order_by(col(ToolCall.at), col(ToolCall.id))
        .limit(1)
        .scalar_subquery()
    )
    sessions = select(
        col(session.tenant).label("tenant"),
        (col(session.started_at) // DAY).label("day"),
        opener.label("run_id"),
    ).where(col(session.started_at) >= start, col(session.started_at) < end)
    if tenant is not None:
        sessions = sessions.where(col(session.tenant) == tenant)
    found = sessions.subquery()
    keys = (found.c.tenant, col(Run.assistant_id), found.c.day)
    query = (
        select(*keys, func.count().label("calls"))
        .select_from(found.outerjoin(Run, col(Run.id) == found.c.run_id))
        .group_by(*keys)
    )
    return _tool_usage(connection, query)


def _tool_usage(connection: Connection, query: Executable) -> list[ToolUsage]:
    return [
        ToolUsage(row.tenant, row.assistant_id, unix_day(int(row.day)), int(row.calls))
        for row in connection.execute(query)
    ]


def _stores(connection: Connection, start: int, end: int) -> list[StoreHistory]:
    """The samples of the last sampling round before ``start`` and of every round in
    [start, end), per store, and when each store was gone.

    The collector records every store it lists with the same time, so the stores that
    carry into the period are those of the last round before it, and a store is gone
    from the first later round that does not list it (or from its recorded deletion)."""
    at = col(VectorStoreSample.at)
    carried = connection.execute(select(func.max(at)).where(at < start)).scalar_one_or_none()
    within = and_(at >= start, at < end)
    query = (
        select(
            col(VectorStoreSample.vector_store_id),
            at,
            col(VectorStoreSample.tenant),
            col(VectorStoreSample.usage_bytes),
        )
        .where(within if carried is None else or_(at == carried, within))
        .order_by(at, col(VectorStoreSample.id))
    )
    history: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    rounds: list[int] = []
    for row in connection.execute(query):
        history[row.vector_store_id].append((int(row.at), row.tenant, int(row.usage_bytes)))
        if not rounds or rounds[-1] != row.at:
            rounds.append(int(row.at))
    deleted = {
        row.id: int(row.deleted_at)
        for row in connection.execute(
            select(col(OwnedObject.id), col(OwnedObject.deleted_at)).where(
                col(OwnedObject.kind) == str(Kind.VECTOR_STORE),
                col(OwnedObject.deleted_at).is_not(None),
            )
        )
    }
    stores = []
    for store_id, samples in sorted(history.items()):
        index = bisect_right(rounds, samples[-1][0])
        ends = [deleted.get(store_id), rounds[index] if index < len(rounds) else None]
        gone = min((moment for moment in ends if moment is not None), default=None)
        stores.append(StoreHistory(store_id, tuple(samples), gone))
    return stores
