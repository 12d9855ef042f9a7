"""Creating threads (with their first messages and vector stores) and adding messages."""

from __future__ import annotations

from typing import Any

from tollhouse_simulator.bodies import Body, invalid_type, metadata, string_list
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.messages import message_object, parse_message
from tollhouse_simulator.state import Simulator
from tollhouse_simulator.store import new_id
from tollhouse_simulator.tools import tool_resources
from tollhouse_simulator.vector_stores import chunking_strategy

THREAD_FIELDS = frozenset({"messages", "tool_resources", "metadata"})


def thread_object(
    thread_id: str,
    created_at: int,
    resources: dict[str, Any] | None,
    meta: dict[str, str] | None,
) -> dict[str, Any]:
    return {
        "id": thread_id,
        "object": "thread",
        "created_at": created_at,
        "tool_resources": resources or {},
        "metadata": meta or {},
    }


def parse_messages(body: Body, param: str = "messages") -> list[dict[str, Any]]:
    value = body.get(param)
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_type(param, "an array", value)
    parsed = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid_type(f"{param}[{index}]", "an object", item)
        parsed.append(parse_message(item, prefix=f"{param}[{index}]."))
    return parsed


def create_thread(sim: Simulator, body: Body, now: float, param: str = "") -> dict[str, Any]:
    """Validates the whole body first, then creates the thread, its stores and messages."""
    unknown = set(body) - THREAD_FIELDS
    if unknown:
        raise bad_request(
            f"Unrecognized request argument supplied: {param}{sorted(unknown)[0]}",
            code="unknown_parameter",
        )
    messages = parse_messages(body)
    resources, new_stores = tool_resources(body, allow_new_stores=True)
    meta = metadata(body)
    store_specs = []
    for spec in new_stores:
        file_ids = string_list(spec, "file_ids", max_items=10_000) or []
        for file_id in file_ids:
            sim.file(file_id, now)
        store_specs.append((file_ids, chunking_strategy(spec), metadata(spec)))
    for file_ids, chunking, store_meta in store_specs:
        store = sim.create_vector_store(
            now, file_ids=file_ids, chunking_strategy=chunking, metadata=store_meta
        )
        assert resources is not None
        resources["file_search"]["vector_store_ids"].append(store.id)
    thread = thread_object(new_id("thread_"), int(now), resources, meta)
    sim.add_thread(thread)
    for message in messages:
        add_message(sim, thread["id"], message, now)
    return thread


def add_message(
    sim: Simulator, thread_id: str, parsed: dict[str, Any], now: float
) -> dict[str, Any]:
    message = message_object(
        message_id=new_id("msg_"), thread_id=thread_id, created_at=int(now), **parsed
    )
    sim.messages[thread_id].insert(message["id"], message["created_at"], message)
    return message
