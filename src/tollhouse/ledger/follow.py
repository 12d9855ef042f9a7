"""Recording how clients follow their work: assistants' details, runs' polls, streams and
tool-output round trips, and flow-tagged requests with their latency.

Synchronous, in the ledger writer's thread, inside the transaction of a batch (``store``):
a batch is applied once, so the counts added here are never doubled by a replay.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import Connection, bindparam, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from tollhouse.ledger.models import Assistant, FlowRequest, FlowUnit, Run, ThreadMessages
from tollhouse.metering.assistants import AssistantSeen

RUN_POLL: Final = "threads.runs.retrieve"
SUBMIT: Final = "threads.runs.submit_tool_outputs"
# Requests whose answer, when an event stream, is the run being streamed.
STREAMING: Final = frozenset({"threads.runs.create", "threads.create_and_run", SUBMIT})
# Requests worth recording when no flow is named: they tell how runs are followed.
FOLLOWING: Final = STREAMING | {RUN_POLL}


@dataclass(frozen=True, slots=True)
class Exchanged:
    """One answered request: what it was, how it went, which runs and responses it showed.

    ``first_byte_ms`` and ``last_byte_ms``: from its arrival at tollhouse to the first
    and to the last byte of its answer (None where no answer came from upstream)."""

    tenant: str
    operation: str
    api: str
    status: int
    streamed: bool = False
    runs: tuple[str, ...] = ()
    responses: tuple[str, ...] = ()
    flow: str | None = None
    thread: str | None = None
    messages: int = 0  # messages the request's body added to ``thread``
    first_byte_ms: int | None = None
    last_byte_ms: int | None = None
    at: int = 0  # when it was answered (Unix seconds): stamped by the ledger writer
    count: int = 1  # alike requests collapsed into this one (polls of one run, say)


def _insert(connection: Connection, model: Any) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(model)


def record_assistants(connection: Connection, seen: Iterable[AssistantSeen], now: int) -> None:
    """Each assistant's latest details (later batches overwrite earlier ones)."""
    latest = {assistant.id: assistant for assistant in seen}
    if not latest:
        return
    rows = [
        {
            "id": a.id,
            "model": a.model,
            "instructions_chars": a.instructions_chars,
            "tools": ",".join(a.tools),
            "vector_store_ids": ",".join(a.vector_store_ids),
            "created_at": a.created_at,
            "seen_at": now,
        }
        for a in (latest[key] for key in sorted(latest))
    ]
    statement = _insert(connection, Assistant)
    new = statement.excluded
    names = ("model", "instructions_chars", "tools", "vector_store_ids", "seen_at")
    statement = statement.on_conflict_do_update(
        index_elements=["id"], set_={name: new[name] for name in names}
    )
    connection.execute(statement, rows)


def _followed(exchanges: Iterable[Exchanged]) -> dict[str, tuple[int, int, bool]]:
    """Per run: polls, tool-output round trips, and whether it was streamed."""
    found: dict[str, tuple[int, int, bool]] = {}
    for exchange in exchanges:
        if not 200 <= exchange.status < 300:
            continue
        for run_id in exchange.runs:
            polls, rounds, streamed = found.get(run_id, (0, 0, False))
            polls += exchange.count * (exchange.operation == RUN_POLL)
            rounds += exchange.count * (exchange.operation == SUBMIT)
            streamed |= exchange.streamed and exchange.operation in STREAMING
            found[run_id] = (polls, rounds, streamed)
    return found


def _record_messages(connection: Connection, exchanges: list[Exchanged]) -> None:
    added: dict[str, tuple[str, int]] = {}
    for e in exchanges:
        if e.thread is not None and e.messages and 200 <= e.status < 300:
            tenant, count = added.get(e.thread, (e.tenant, 0))
            added[e.thread] = (tenant, count + e.messages)
    if not added:
        return
    statement = _insert(connection, ThreadMessages)
    table = ThreadMessages.__table__  # type: ignore[attr-defined]
    statement = statement.on_conflict_do_update(
        index_elements=["thread_id"],
        set_={"messages": table.c.messages + statement.excluded.messages},
    )
    connection.execute(
        statement,
        [
            {"thread_id": thread, "tenant": tenant, "messages": count}
            for thread, (tenant, count) in sorted(added.items())
        ],
    )


def record_exchanges(connection: Connection, exchanges: list[Exchanged]) -> None:
    _record_messages(connection, exchanges)
    followed = _followed(exchanges)
    if followed:
        connection.execute(
            update(Run)
            .where(col(Run.id) == bindparam("run_id"))
            .values(
                polls=col(Run.polls) + bindparam("polls"),
                tool_rounds=col(Run.tool_rounds) + bindparam("rounds"),
                streamed=or_(col(Run.streamed), bindparam("streamed")),
            ),
            [
                {"run_id": run_id, "polls": p, "rounds": r, "streamed": s}
                for run_id, (p, r, s) in sorted(followed.items())
            ],
        )
    tagged = [e for e in exchanges if e.flow is not None]
    if not tagged:
        return
    connection.execute(
        _insert(connection, FlowRequest),
        [
            {
                "tenant": e.tenant,
                "flow": e.flow,
                "api": e.api,
                "operation": e.operation,
                "status": e.status,
                "at": e.at,
                "first_byte_ms": e.first_byte_ms,
                "last_byte_ms": e.last_byte_ms,
            }
            for e in tagged
        ],
    )
    units: dict[str, dict[str, str]] = {}
    for e in tagged:
        if not 200 <= e.status < 300:
            continue
        for unit, api in [
            *((r, "assistants") for r in e.runs),
            *((r, "responses") for r in e.responses),
        ]:
            assert e.flow is not None
            units.setdefault(
                unit, {"unit_id": unit, "tenant": e.tenant, "flow": e.flow, "api": api}
            )
    if units:
        connection.execute(
            _insert(connection, FlowUnit).on_conflict_do_nothing(index_elements=["unit_id"]),
            [units[unit] for unit in sorted(units)],
        )
