"""Responses requests: the context they read, starting a response, token counts, compaction."""

from __future__ import annotations

import copy
from typing import Any

from tollhouse_simulator.bodies import (
    Body,
    invalid_type,
    optional_bool,
    optional_str,
    required_str,
)
from tollhouse_simulator.containers import DEFAULT_IDLE_MINUTES, DEFAULT_MEMORY_LIMIT, memory_limit
from tollhouse_simulator.conversations import Conversation
from tollhouse_simulator.errors import SimulatorError, bad_request
from tollhouse_simulator.inputs import Item, compaction_item, item_text, last_user_text, parse_items
from tollhouse_simulator.outputs import parse_include
from tollhouse_simulator.response_settings import settings
from tollhouse_simulator.response_tools import (
    parse_tools,
    plan_continuation,
    plan_outputs,
)
from tollhouse_simulator.responses import ResponseRun, Turn
from tollhouse_simulator.search import Hit
from tollhouse_simulator.state import Simulator
from tollhouse_simulator.store import new_id
from tollhouse_simulator.tokens import count_tokens, reasoning_tokens


def read_turn(sim: Simulator, body: Body) -> tuple[Turn, Conversation | None]:
    """The context a request reads: the previous response's or the conversation's items,
    then the new input."""
    previous_id = optional_str(body, "previous_response_id")
    reference = body.get("conversation")
    if previous_id is not None and reference is not None:
        raise bad_request(
            "Mutually exclusive parameters: Ensure you are only providing one of: "
            "'previous_response_id' or 'conversation'.",
            param="conversation",
            code="mutually_exclusive_parameters",
        )
    prior: list[Item] = []
    conversation = None
    if previous_id is not None:
        previous = sim.responses.get(previous_id)
        if previous is None:
            raise SimulatorError(
                404,
                f"Previous response with id '{previous_id}' not found.",
                param="previous_response_id",
            )
        previous.advance(sim.now())
        if not previous.finished:
            raise bad_request(
                f"Previous response with id '{previous_id}' is still {previous.status}.",
                param="previous_response_id",
            )
        prior = copy.deepcopy(previous.turn.context + previous.output)
    elif reference is not None:
        if isinstance(reference, dict):
            reference = reference.get("id")
        if not isinstance(reference, str):
            raise invalid_type("conversation", "a string or an object with an id", reference)
        conversation = sim.conversation(reference)
        prior = conversation.history()
    new = parse_items(body.get("input", []), "input", sim.items.get)
    context = prior + new
    instructions = optional_str(body, "instructions") or ""
    return Turn(context, len(prior), last_user_text(context), instructions), conversation


def _check_resources(sim: Simulator, tools: list[dict[str, Any]], now: float) -> None:
    for index, tool in enumerate(tools):
        if tool["type"] == "file_search":
            for store_id in tool["vector_store_ids"]:
                sim.vector_store(store_id)
        container = tool.get("container") if tool["type"] == "code_interpreter" else None
        if isinstance(container, str) and sim.container(container).status(now) == "expired":
            raise bad_request(
                f"Container '{container}' is expired.", param=f"tools[{index}].container"
            )
        if isinstance(container, dict):  # made later, on first use: check what it will copy
            memory_limit(container, param=f"tools[{index}].container.memory_limit")
            for file_id in container.get("file_ids") or []:
                sim.file(file_id, now)


def create_response(sim: Simulator, body: Body, now: float, *, stream: bool) -> ResponseRun:
    """Validates the request, then creates the response and starts it."""
    echoed = settings(body)
    background = bool(optional_bool(body, "background"))
    if background and not echoed["store"]:
        raise bad_request("Background responses must be stored: set 'store' to true.", "store")
    include = parse_include(body.get("include") or [])
    turn, conversation = read_turn(sim, body)
    _check_resources(sim, echoed["tools"], now)
    tools, choice = echoed["tools"], echoed["tool_choice"]
    plan = plan_continuation(tools, turn.new_items, turn.context) or plan_outputs(
        tools, choice, turn.question, turn.context, echoed["max_tool_calls"]
    )
    obj = {
        "id": new_id("resp_"),
        "object": "response",
        "created_at": int(now),
        "status": "queued" if background else "in_progress",
        "background": background,
        "completed_at": None,
        "conversation": None if conversation is None else {"id": conversation.id},
        "error": None,
        "incomplete_details": None,
        **echoed,
        "output": [],
    }  # usage joins when the response ends: the spec's ``usage`` is an object, never null
    auto: list[str] = []  # the container a `container: auto` tool made, once used

    def use_container(tool: dict[str, Any], at: float) -> str:
        spec = tool["container"]
        if isinstance(spec, str):
            container_id = spec
        elif auto:
            container_id = auto[0]
        else:
            created = sim.create_container(
                at,
                name=f"Container for {obj['id']}",
                memory_limit=spec.get("memory_limit") or DEFAULT_MEMORY_LIMIT,
                idle_minutes=DEFAULT_IDLE_MINUTES,
                file_ids=spec.get("file_ids") or [],
            )
            container_id = created.id
            auto.append(container_id)
        found = sim.containers.get(container_id)
        if found is not None:
            found.touch(at)
        return container_id

    def search(tool: dict[str, Any], question: str) -> list[Hit]:
        ranking = tool.get("ranking_options") or {}
        limit = tool.get("max_num_results") or 10
        threshold = float(ranking.get("score_threshold") or 0.0)
        return sim.search(
            tool["vector_store_ids"], [question], limit, threshold, tool.get("filters")
        )

    def finished(run: ResponseRun, at: float) -> None:
        if run.obj["store"]:
            for item in run.output:
                sim.items[item["id"]] = copy.deepcopy(item)
        if conversation is not None and conversation.id in sim.conversations:
            conversation.add(run.turn.new_items + run.output, at)

    run = ResponseRun(
        obj,
        turn,
        plan,
        include=include,
        search=search,
        container=use_container,
        on_finish=finished,
    )
    if run.obj["store"]:  # what is not stored cannot be referred to later
        sim.responses.insert(run.id, run.obj["created_at"], run)
        for item in turn.new_items:
            sim.items[item["id"]] = copy.deepcopy(item)
    config = sim.config
    queued = config.queued_seconds if background else 0.0
    span = config.in_progress_seconds if background or stream else 0.0
    run.start(now, queued=queued, span=span)
    return run


def count_input_tokens(sim: Simulator, body: Body) -> int:
    """The input tokens a response to this request would read (without tool results)."""
    parse_tools(body)
    turn, _ = read_turn(sim, body)
    return turn.prompt_tokens()


def compact(sim: Simulator, body: Body, now: float) -> dict[str, Any]:
    """The context shortened to one compaction item standing for all of it.

    The output holds output items only, as the spec's CompactResource types it (its example
    also keeps the user's messages, which that type does not allow).
    """
    model = required_str(body, "model")
    turn, _ = read_turn(sim, body)
    texts = [item_text(item)[:80] for item in turn.context]
    summary = "Earlier in this conversation: " + " | ".join(text for text in texts if text)
    thinking = reasoning_tokens(model, None, turn.question)
    written = count_tokens(summary) + thinking
    read = turn.prompt_tokens()
    return {
        "id": new_id("resp_"),
        "object": "response.compaction",
        "created_at": int(now),
        "output": [compaction_item(summary)],
        "usage": {
            "input_tokens": read,
            "input_tokens_details": {
                "cached_tokens": turn.cached_tokens(),
                "cache_write_tokens": 0,
            },
            "output_tokens": written,
            "output_tokens_details": {"reasoning_tokens": thinking},
            "total_tokens": read + written,
        },
    }
