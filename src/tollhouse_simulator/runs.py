"""Starting runs: the run object a create request describes, and what the run will read."""

from __future__ import annotations

from typing import Any

from tollhouse_simulator.bodies import (
    Body,
    metadata,
    optional_bool,
    optional_int,
    optional_number,
    optional_str,
    required_str,
)
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.lifecycle import Run, RunInputs
from tollhouse_simulator.messages import message_text
from tollhouse_simulator.state import Simulator
from tollhouse_simulator.store import new_id
from tollhouse_simulator.threads import add_message, parse_messages
from tollhouse_simulator.tokens import prompt_tokens
from tollhouse_simulator.tools import (
    response_format,
    tool_choice,
    tools,
    truncation_strategy,
)

_COMMON_FIELDS = frozenset(
    {
        "assistant_id",
        "model",
        "instructions",
        "tools",
        "metadata",
        "temperature",
        "top_p",
        "stream",
        "max_prompt_tokens",
        "max_completion_tokens",
        "truncation_strategy",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    }
)
RUN_FIELDS = _COMMON_FIELDS | {"reasoning_effort", "additional_instructions", "additional_messages"}
CREATE_AND_RUN_FIELDS = _COMMON_FIELDS | {"thread", "tool_resources"}
DEFAULT_TRUNCATION = {"type": "auto", "last_messages": None}


def parse_run(sim: Simulator, body: Body) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run object's settings (before ids and times) and the messages to add first."""
    assistant = sim.assistant(required_str(body, "assistant_id"))
    instructions = optional_str(body, "instructions")
    if instructions is None:
        instructions = assistant["instructions"] or ""
    additional = optional_str(body, "additional_instructions")
    if additional:
        instructions = f"{instructions}\n{additional}" if instructions else additional
    settings = {
        "assistant_id": assistant["id"],
        "model": optional_str(body, "model") or assistant["model"],
        "instructions": instructions,
        "tools": _or(tools(body, max_items=20), assistant["tools"]),
        "metadata": metadata(body) or {},
        "temperature": _or(optional_number(body, "temperature", 0, 2), assistant["temperature"]),
        "top_p": _or(optional_number(body, "top_p", 0, 1), assistant["top_p"]),
        "max_prompt_tokens": optional_int(body, "max_prompt_tokens", 256),
        "max_completion_tokens": optional_int(body, "max_completion_tokens", 256),
        "truncation_strategy": truncation_strategy(body) or dict(DEFAULT_TRUNCATION),
        "tool_choice": _or(tool_choice(body), "auto"),
        "parallel_tool_calls": _or(optional_bool(body, "parallel_tool_calls"), True),
        "response_format": _or(response_format(body), assistant["response_format"]),
    }
    optional_bool(body, "stream")
    optional_str(body, "reasoning_effort")
    choice = settings["tool_choice"]
    if isinstance(choice, dict) and choice["type"] == "function":
        names = {t["function"]["name"] for t in settings["tools"] if t["type"] == "function"}
        if choice["function"]["name"] not in names:
            raise bad_request(
                f"Invalid 'tool_choice': no function named '{choice['function']['name']}' "
                "is among the run's tools.",
                param="tool_choice",
            )
    return settings, parse_messages(body, "additional_messages")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def start_run(
    sim: Simulator,
    thread_id: str,
    settings: dict[str, Any],
    now: float,
    *,
    include_search_content: bool,
    additional_messages: list[dict[str, Any]] | None = None,
) -> Run:
    """Creates the run on the thread; the caller subscribes to it (if streaming), then starts it."""
    thread = sim.thread(thread_id)
    sim.advance_thread(thread_id, now)
    active = sim.active_runs.get(thread_id)
    if active is not None:
        raise bad_request(f"Thread {thread_id} already has an active run {active.id}.")
    for parsed in additional_messages or []:
        add_message(sim, thread_id, parsed, now)
    created_at = int(now)
    obj = {
        "id": new_id("run_"),
        "object": "thread.run",
        "created_at": created_at,
        "thread_id": thread_id,
        "status": "queued",
        "required_action": None,
        "last_error": None,
        "expires_at": created_at + sim.config.run_expiry_seconds,
        "started_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "incomplete_details": None,
        "usage": None,
        **settings,
    }
    run = Run(
        obj,
        _inputs(sim, thread, obj, include_search_content),
        messages=sim.messages[thread_id],
        search=lambda ids, question, limit, threshold: sim.search(
            ids, [question], limit, threshold
        ),
        config=sim.config,
    )
    sim.runs[thread_id].insert(run.id, created_at, run)
    sim.active_runs[thread_id] = run
    if any(tool["type"] == "file_search" for tool in obj["tools"]):
        for store_id in run.inputs.vector_store_ids:
            store = sim.vector_stores.get(store_id)
            if store is not None:
                store.touch(now)
    return run


def _inputs(
    sim: Simulator, thread: dict[str, Any], run: dict[str, Any], include: bool
) -> RunInputs:
    messages = list(sim.messages[thread["id"]])
    last = run["truncation_strategy"].get("last_messages")
    if last is not None:
        messages = messages[-last:]
    texts = [message_text(m) for m in messages]
    questions = [message_text(m) for m in messages if m["role"] == "user"]
    assistant = sim.assistants.get(run["assistant_id"]) or {}
    store_ids: list[str] = []
    for owner in (thread, assistant):
        resources = owner.get("tool_resources") or {}
        for store_id in (resources.get("file_search") or {}).get("vector_store_ids", []):
            if store_id not in store_ids:
                store_ids.append(store_id)
    return RunInputs(
        question=questions[-1] if questions else "",
        prompt_tokens=prompt_tokens(run["instructions"], texts),
        vector_store_ids=store_ids,
        include_search_content=include,
    )
