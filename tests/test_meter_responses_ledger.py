"""Responses, their tool calls, containers and chat completions in the ledger, on real SQLite
and real PostgreSQL: each counted once, however often and in whatever order it is seen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import Session

from tollhouse.ledger import store as ledger
from tollhouse.ledger.models import ChatCompletion, Container, Response, ResponseToolCall
from tollhouse.ledger.responses import forget_response
from tollhouse.ledger.spool import Spool, dumps, loads
from tollhouse.ledger.store import Batch, Seen
from tollhouse.metering.responses import (
    ChatCompletionSeen,
    ContainerSeen,
    ResponseSeen,
    TokenUsage,
    ToolItemSeen,
    auto_containers,
)

T0 = 1_780_000_000
USAGE = TokenUsage(
    input_tokens=1200,
    cached_tokens=1024,
    cache_write_tokens=0,
    output_tokens=300,
    reasoning_tokens=120,
    total_tokens=1500,
)


def response(status: str, response_id: str = "resp_1", **extra: Any) -> ResponseSeen:
    terminal = status in ("completed", "failed", "cancelled", "incomplete")
    fields: dict[str, Any] = {
        "id": response_id,
        "model": "gpt-4o",
        "status": status,
        "created_at": T0,
        "finished_at": T0 + 4 if terminal else None,
        "service_tier": "default",
        "usage": USAGE if terminal else None,
        "conversation_id": None,
        "previous_response_id": None,
        "background": True,
    }
    fields.update(extra)
    return ResponseSeen(**fields)


def item(
    item_id: str, kind: str = "web_search_call", response_id: str | None = "resp_1"
) -> ToolItemSeen:
    return ToolItemSeen(item_id, kind, response_id, "completed", "search", "web_search")


def chat(chat_id: str = "chatcmpl_1", usage: TokenUsage | None = USAGE) -> ChatCompletionSeen:
    return ChatCompletionSeen(chat_id, "gpt-4o", T0, "default", usage)


def apply(engine: Engine, *seen: Any, tenant: str = "acme", at: int = T0) -> ledger.Counted:
    return ledger.apply(engine, Batch(seen=[Seen(tenant, s) for s in seen]), at)


def count(engine: Engine, model: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


def test_a_response_polled_many_times_is_counted_once(engine: Engine) -> None:
    counted = [apply(engine, response("queued"), at=T0)]
    counted += [apply(engine, response("in_progress"), at=T0 + 1) for _ in range(3)]
    counted += [apply(engine, response("completed"), at=T0 + 5 + n) for n in range(5)]
    finished = [c.successors.responses for c in counted if c.successors.responses]
    assert finished == [[("acme", response("completed"))]]
    with Session(engine) as session:
        stored = session.get(Response, "resp_1")
    assert stored is not None
    assert (stored.status, stored.input_tokens, stored.cached_tokens) == ("completed", 1200, 1024)
    assert (stored.reasoning_tokens, stored.output_tokens, stored.finished_at) == (120, 300, T0 + 4)
    assert stored.usage_recorded_at == T0 + 5


def test_a_late_live_sighting_does_not_undo_a_terminal_one(engine: Engine) -> None:
    apply(engine, response("completed"), at=T0 + 10)
    apply(engine, response("in_progress"), at=T0 + 11)
    # in one batch, in either order, the terminal sighting wins
    again = apply(engine, response("completed", "resp_2"), response("queued", "resp_2"))
    with Session(engine) as session:
        first, second = session.get(Response, "resp_1"), session.get(Response, "resp_2")
    assert first is not None
    assert second is not None
    assert (first.status, second.status) == ("completed", "completed")
    assert [r.id for _, r in again.successors.responses] == ["resp_2"]


def test_a_response_the_upstream_lost_is_finished_by_a_later_terminal_sighting(
    engine: Engine,
) -> None:
    apply(engine, response("in_progress"))
    with engine.begin() as connection:
        forget_response(connection, "resp_1", "acme", T0 + 300)
    late = apply(engine, response("completed"), at=T0 + 400)
    assert [r.status for _, r in late.successors.responses] == ["completed"]
    with engine.begin() as connection:  # once finished, it is no longer forgotten
        forget_response(connection, "resp_1", "acme", T0 + 500)
        forget_response(connection, "resp_2", "acme", T0 + 500)  # never seen: recorded gone
    with Session(engine) as session:
        kept, gone = session.get(Response, "resp_1"), session.get(Response, "resp_2")
    assert kept is not None
    assert gone is not None
    assert (kept.status, kept.input_tokens, gone.status, gone.input_tokens) == (
        "completed",
        1200,
        "gone",
        None,
    )


def test_each_tool_call_is_counted_once_by_item_id(engine: Engine) -> None:
    first = apply(engine, item("ws_1"), item("ws_2"), item("ws_1"))
    again = apply(engine, item("ws_1"), item("ws_2"), item("fs_1", "file_search_call"))
    assert sorted(i.id for _, i in first.successors.tool_calls) == ["ws_1", "ws_2"]
    assert [i.id for _, i in again.successors.tool_calls] == ["fs_1"]
    assert count(engine, ResponseToolCall) == 3


def test_an_item_first_seen_without_its_response_is_named_later(engine: Engine) -> None:
    apply(engine, item("ws_1", response_id=None))
    again = apply(engine, item("ws_1"))
    assert again.successors.tool_calls == []
    with Session(engine) as session:
        stored = session.get(ResponseToolCall, "ws_1")
    assert stored is not None
    assert stored.response_id == "resp_1"


def test_an_auto_container_with_no_call_is_recorded_once(engine: Engine) -> None:
    done = response("completed", auto_container="4g")
    [container] = auto_containers([done])
    assert (container.id, container.memory_limit, container.auto) == ("auto:resp_1", "4g", True)
    first = apply(engine, done, *auto_containers([done]))
    again = apply(engine, done, *auto_containers([done]), at=T0 + 60)
    assert [(c.id, c.memory_limit) for _, c in first.successors.containers] == [
        ("auto:resp_1", "4g")
    ]
    assert again.successors.containers == []
    assert count(engine, Container) == 1
    # a live response has not yet decided whether it ran code
    assert auto_containers([response("in_progress", auto_container="1g")]) == []


def test_an_auto_container_the_model_used_is_its_own_id(engine: Engine) -> None:
    done = response("completed", auto_container="1g")
    call = ToolItemSeen(
        "ci_1", "code_interpreter_call", "resp_1", "completed", container_id="cntr_1"
    )
    [container] = auto_containers([done, call])
    assert (container.id, container.response_id) == ("cntr_1", "resp_1")


def test_a_containers_life_only_grows(engine: Engine) -> None:
    seen = ContainerSeen("cntr_1", "active", T0, T0 + 60, "16g", 5)
    first = apply(engine, seen)
    apply(engine, ContainerSeen("cntr_1", "active", T0, T0 + 600, None, None), tenant="other")
    apply(engine, ContainerSeen("cntr_1", "active", T0, T0 + 120, "16g", 5))
    assert [c.id for _, c in first.successors.containers] == ["cntr_1"]
    with Session(engine) as session:
        stored = session.get(Container, "cntr_1")
    assert stored is not None
    assert (stored.tenant, stored.memory_limit, stored.expires_after_minutes) == ("acme", "16g", 5)
    assert (stored.created_at, stored.last_active_at) == (T0, T0 + 600)


def test_a_chat_completion_counts_its_usage_once(engine: Engine) -> None:
    unmetered = apply(engine, chat("chatcmpl_2", None))
    first = apply(engine, chat(), chat())
    again = apply(engine, chat())
    assert unmetered.successors.chats == []
    assert [c.id for _, c in unmetered.successors.new_chats] == ["chatcmpl_2"]
    assert [c.id for _, c in again.successors.new_chats] == []
    assert [c.id for _, c in first.successors.chats] == ["chatcmpl_1"]
    assert again.successors.chats == []
    with Session(engine) as session:
        stored = session.get(ChatCompletion, "chatcmpl_1")
        bare = session.get(ChatCompletion, "chatcmpl_2")
    assert stored is not None
    assert bare is not None
    assert (stored.input_tokens, stored.cached_tokens, bare.input_tokens) == (1200, 1024, None)


def test_a_spooled_batch_replays_once(engine: Engine, tmp_path: Path) -> None:
    done = response("completed", auto_container="1g")
    seen: list[Any] = [done, item("ws_1"), chat(), *auto_containers([done])]
    batch = Batch(seen=[Seen("acme", s) for s in seen])
    assert loads(dumps(batch)) == batch
    spool = Spool(tmp_path / "ledger.spool")
    spool.append(batch)
    spool.append(batch)  # a commit whose acknowledgement was lost is spooled again
    replayed: list[ledger.Counted] = []
    assert spool.replay(lambda b: replayed.append(ledger.apply(engine, b, T0)), 10) == 2
    first, second = (r.successors for r in replayed)
    assert (len(first.responses), len(first.tool_calls), len(first.chats)) == (1, 1, 1)
    assert len(first.containers) == 1
    assert (second.responses, second.tool_calls, second.chats, second.containers) == (
        [],
        [],
        [],
        [],
    )
    # the same sightings in a new batch are still counted once
    assert apply(engine, *seen).successors.responses == []
    assert (count(engine, Response), count(engine, ResponseToolCall)) == (1, 1)
