"""Applying the Responses era's usage to the ledger: responses, tool calls, containers, chats.

Runs in the transaction of one batch (see ``ledger.apply``) and counts the same way: a
response's state only moves forward and its tokens are written by one UPDATE that matches
only a response not yet finished, so they are counted once however often it was polled,
streamed, resumed or retrieved; a tool call is counted once by its item id; a container
once by its id (its life only grows); a chat completion's tokens once by its id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, func, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from tollhouse.ledger.models import ChatCompletion, Container, Response, ResponseToolCall
from tollhouse.metering.responses import (
    ChatCompletionSeen,
    ContainerSeen,
    ResponseSeen,
    SuccessorSeen,
    TokenUsage,
    ToolItemSeen,
)

# A response the upstream no longer had when the reconciler asked: recorded without usage.
# Not final: a terminal sighting still replaces it.
GONE = "gone"
_TOKENS = ("input", "cached", "cache_write", "output", "reasoning", "total")


@dataclass
class SuccessorCounted:
    """What a batch added that had not been counted before, with the tenant it counts for."""

    responses: list[tuple[str, ResponseSeen]] = field(default_factory=list)
    tool_calls: list[tuple[str, ToolItemSeen]] = field(default_factory=list)
    containers: list[tuple[str, ContainerSeen]] = field(default_factory=list)
    chats: list[tuple[str, ChatCompletionSeen]] = field(default_factory=list)  # usage counted
    new_chats: list[tuple[str, ChatCompletionSeen]] = field(default_factory=list)  # first seen


def _insert(connection: Connection, model: Any) -> Any:
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    return dialect.insert(model)


def _later(new: Any, old: Any) -> Any:
    return case((new > old, new), else_=old)


def _earlier(new: Any, old: Any) -> Any:
    return case((new < old, new), else_=old)


def _tokens(usage: TokenUsage | None) -> dict[str, int | None]:
    return {
        f"{name}_tokens": None if usage is None else getattr(usage, f"{name}_tokens")
        for name in _TOKENS
    }


def record_successors(
    connection: Connection, seen: Sequence[tuple[str, SuccessorSeen]], now: int
) -> SuccessorCounted:
    """Record one batch's responses, tool calls, containers and chat completions."""
    counted = SuccessorCounted()
    _record_responses(
        connection, [(t, s) for t, s in seen if isinstance(s, ResponseSeen)], now, counted
    )
    _record_tool_calls(
        connection, [(t, s) for t, s in seen if isinstance(s, ToolItemSeen)], now, counted
    )
    _record_containers(
        connection, [(t, s) for t, s in seen if isinstance(s, ContainerSeen)], counted
    )
    _record_chats(
        connection, [(t, s) for t, s in seen if isinstance(s, ChatCompletionSeen)], now, counted
    )
    return counted


# -- responses ---------------------------------------------------------------------------


def _record_responses(
    connection: Connection,
    seen: list[tuple[str, ResponseSeen]],
    now: int,
    counted: SuccessorCounted,
) -> None:
    latest: dict[str, tuple[str, ResponseSeen]] = {}
    for tenant, response in seen:
        previous = latest.get(response.id)
        if previous is None or not previous[1].terminal:  # a terminal sighting wins
            latest[response.id] = (tenant, response)
    if not latest:
        return
    ordered = [latest[response_id] for response_id in sorted(latest)]
    table = Response.__table__  # type: ignore[attr-defined]
    statement = _insert(connection, Response)
    new = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={
            "status": new.status,
            "model": func.coalesce(new.model, table.c.model),
            "service_tier": func.coalesce(new.service_tier, table.c.service_tier),
            "finished_at": new.finished_at,
            "last_seen_at": _later(new.last_seen_at, table.c.last_seen_at),
        },
        where=table.c.usage_recorded_at.is_(None),
    )
    rows = [
        {
            "id": response.id,
            "tenant": tenant,
            "model": response.model,
            "status": response.status,
            "service_tier": response.service_tier,
            "background": response.background,
            "created_at": response.created_at,
            "finished_at": response.finished_at,
            "last_seen_at": now,
        }
        for tenant, response in ordered
    ]
    connection.execute(statement, rows)
    for _, response in ordered:
        if response.terminal and (owner := _finish(connection, response, now)) is not None:
            counted.responses.append((owner, response))


def _finish(connection: Connection, response: ResponseSeen, now: int) -> str | None:
    """Record a response's terminal state and tokens unless already recorded; its tenant if new."""
    return connection.execute(
        update(Response)
        .where(
            and_(
                col(Response.id) == response.id,
                or_(col(Response.usage_recorded_at).is_(None), col(Response.status) == GONE),
            )
        )
        .values(
            status=response.status,
            model=func.coalesce(response.model, col(Response.model)),
            service_tier=func.coalesce(response.service_tier, col(Response.service_tier)),
            finished_at=response.finished_at,
            usage_recorded_at=now,
            **_tokens(response.usage),
        )
        .returning(col(Response.tenant))
    ).scalar_one_or_none()


def forget_response(connection: Connection, response_id: str, tenant: str, now: int) -> None:
    """The upstream no longer has the response (deleted, or never stored): recorded as gone,
    without usage, unless it was recorded finished meanwhile (by another replica)."""
    statement = _insert(connection, Response).values(
        id=response_id,
        tenant=tenant,
        status=GONE,
        background=False,
        created_at=now,
        usage_recorded_at=now,
        last_seen_at=now,
    )
    table = Response.__table__  # type: ignore[attr-defined]
    connection.execute(
        statement.on_conflict_do_update(
            index_elements=["id"],
            set_={"status": GONE, "usage_recorded_at": now},
            where=table.c.usage_recorded_at.is_(None),
        )
    )


# -- tool calls --------------------------------------------------------------------------


def _record_tool_calls(
    connection: Connection,
    seen: list[tuple[str, ToolItemSeen]],
    now: int,
    counted: SuccessorCounted,
) -> None:
    calls: dict[str, tuple[str, ToolItemSeen]] = {}
    for tenant, item in seen:
        previous = calls.get(item.id)
        if previous is None or item.response_id is not None:  # one that names its response
            calls[item.id] = (tenant, item)
    named = []
    for item_id, (tenant, item) in sorted(calls.items()):
        inserted = connection.execute(
            _insert(connection, ResponseToolCall)
            .values(
                id=item_id,
                type=item.type,
                tenant=tenant,
                response_id=item.response_id,
                tool=item.tool,
                action=item.action,
                container_id=item.container_id,
                size=item.size,
                quality=item.quality,
                at=now,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(col(ResponseToolCall.id))
        ).first()
        if inserted is not None:
            counted.tool_calls.append((tenant, item))
        elif item.response_id is not None:
            named.append({"item_id": item_id, "response_id": item.response_id, "tool": item.tool})
    if named:  # first recorded from a stream that never named its response: it is known now
        connection.execute(
            update(ResponseToolCall)
            .where(
                col(ResponseToolCall.id) == bindparam("item_id"),
                col(ResponseToolCall.response_id).is_(None),
            )
            .values(response_id=bindparam("response_id"), tool=bindparam("tool")),
            named,
        )


# -- containers --------------------------------------------------------------------------


def merged(containers: Iterable[ContainerSeen]) -> ContainerSeen:
    """One container from several sightings: the earliest creation, the latest activity."""
    first, *rest = containers
    merged = first
    for other in rest:
        merged = ContainerSeen(
            id=merged.id,
            status=other.status,
            created_at=min(merged.created_at, other.created_at),
            last_active_at=max(_active(merged), _active(other)),
            memory_limit=other.memory_limit or merged.memory_limit,
            expires_after_minutes=other.expires_after_minutes or merged.expires_after_minutes,
            auto=merged.auto or other.auto,
            response_id=merged.response_id or other.response_id,
        )
    return merged


def _active(container: ContainerSeen) -> int:
    return container.created_at if container.last_active_at is None else container.last_active_at


def _record_containers(
    connection: Connection, seen: list[tuple[str, ContainerSeen]], counted: SuccessorCounted
) -> None:
    by_id: dict[str, list[tuple[str, ContainerSeen]]] = {}
    for tenant, container in seen:
        by_id.setdefault(container.id, []).append((tenant, container))
    later = []
    for container_id, sightings in sorted(by_id.items()):
        tenant = sightings[0][0]
        container = merged(c for _, c in sightings)
        row = {
            "id": container_id,
            "tenant": tenant,
            "memory_limit": container.memory_limit,
            "created_at": container.created_at,
            "last_active_at": _active(container),
            "expires_after_minutes": container.expires_after_minutes,
            "auto": container.auto,
            "response_id": container.response_id,
        }
        inserted = connection.execute(
            _insert(connection, Container)
            .values(**row)
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(col(Container.id))
        ).first()
        if inserted is None:
            later.append(row)
        else:
            counted.containers.append((tenant, container))
    if later:  # seen before: its life only grows; the first tenant stays
        table = Container.__table__  # type: ignore[attr-defined]
        connection.execute(
            update(Container)
            .where(col(Container.id) == bindparam("container_id"))
            .values(
                created_at=_earlier(bindparam("created"), table.c.created_at),
                last_active_at=_later(bindparam("active"), table.c.last_active_at),
                memory_limit=func.coalesce(bindparam("memory"), table.c.memory_limit),
                expires_after_minutes=func.coalesce(
                    bindparam("minutes"), table.c.expires_after_minutes
                ),
            ),
            [
                {
                    "container_id": row["id"],
                    "created": row["created_at"],
                    "active": row["last_active_at"],
                    "memory": row["memory_limit"],
                    "minutes": row["expires_after_minutes"],
                }
                for row in later
            ],
        )


# -- chat completions --------------------------------------------------------------------


def _record_chats(
    connection: Connection,
    seen: list[tuple[str, ChatCompletionSeen]],
    now: int,
    counted: SuccessorCounted,
) -> None:
    latest: dict[str, tuple[str, ChatCompletionSeen]] = {}
    for tenant, chat in seen:
        previous = latest.get(chat.id)
        if previous is None or previous[1].usage is None:  # one with usage wins
            latest[chat.id] = (tenant, chat)
    if not latest:
        return
    ordered = [latest[chat_id] for chat_id in sorted(latest)]
    for tenant, chat in ordered:
        inserted = connection.execute(
            _insert(connection, ChatCompletion)
            .values(
                id=chat.id,
                tenant=tenant,
                model=chat.model,
                service_tier=chat.service_tier,
                created_at=chat.created_at,
            )
            .on_conflict_do_nothing(index_elements=["id"])
            .returning(col(ChatCompletion.id))
        ).first()
        if inserted is not None:
            counted.new_chats.append((tenant, chat))
    for _, chat in ordered:
        if chat.usage is None:
            continue
        owner = connection.execute(
            update(ChatCompletion)
            .where(
                col(ChatCompletion.id) == chat.id, col(ChatCompletion.usage_recorded_at).is_(None)
            )
            .values(usage_recorded_at=now, **_tokens(chat.usage))
            .returning(col(ChatCompletion.tenant))
        ).scalar_one_or_none()
        if owner is not None:
            counted.chats.append((owner, chat))
