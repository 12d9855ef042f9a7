"""What an assistant object says about itself: model, instructions size, tools and stores.

Pure and total, like ``meter``: anything not shaped like the spec's assistant yields
nothing. The migration report reads these to map each assistant onto the Responses era
(a prompt configuration; Code Interpreter to a container; File Search to the same stores).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

# The answers that carry assistant objects (a create's, a read's, an update's, a list page).
ASSISTANT_OPERATIONS: Final = frozenset(
    {"assistants.create", "assistants.retrieve", "assistants.update", "assistants.list"}
)


@dataclass(frozen=True, slots=True)
class AssistantSeen:
    """An assistant as one answer showed it; ``tools`` are ``code_interpreter``,
    ``file_search`` and ``function:<name>``, in the order the assistant lists them."""

    id: str
    model: str | None
    instructions_chars: int
    tools: tuple[str, ...]
    vector_store_ids: tuple[str, ...]
    created_at: int


def _tool(tool: Any) -> str | None:
    if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
        return None
    if tool["type"] != "function":
        return str(tool["type"])
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return f"function:{name}" if isinstance(name, str) else "function"


def _stores(doc: dict[str, Any]) -> tuple[str, ...]:
    resources = doc.get("tool_resources")
    search = resources.get("file_search") if isinstance(resources, dict) else None
    ids = search.get("vector_store_ids") if isinstance(search, dict) else None
    return tuple(i for i in ids if isinstance(i, str)) if isinstance(ids, list) else ()


def assistant_seen(doc: dict[str, Any]) -> AssistantSeen | None:
    """The assistant ``doc`` is, or None if it is not one."""
    if doc.get("object") != "assistant" or not isinstance(doc.get("id"), str):
        return None
    created = doc.get("created_at")
    if not isinstance(created, int) or isinstance(created, bool):
        return None
    model, instructions, tools = doc.get("model"), doc.get("instructions"), doc.get("tools")
    return AssistantSeen(
        id=doc["id"],
        model=model if isinstance(model, str) else None,
        instructions_chars=len(instructions) if isinstance(instructions, str) else 0,
        tools=tuple(name for t in (tools if isinstance(tools, list) else []) if (name := _tool(t))),
        vector_store_ids=_stores(doc),
        created_at=created,
    )


def assistant_document(operation: str, doc: dict[str, Any]) -> list[AssistantSeen]:
    """The assistant an answer to ``operation`` shows (one object of a list page at a time)."""
    if operation not in ASSISTANT_OPERATIONS:
        return []
    seen = assistant_seen(doc)
    return [] if seen is None else [seen]


# The requests that add a client's messages to a thread, and where their body lists them.
_MESSAGE_LISTS: Final[dict[str, tuple[str, ...]]] = {
    "threads.create": ("messages",),
    "threads.create_and_run": ("thread", "messages"),
    "threads.runs.create": ("additional_messages",),
}
MESSAGE_OPERATIONS: Final = frozenset({*_MESSAGE_LISTS, "threads.messages.create"})


def messages_added(operation: str, body: object) -> int:
    """How many messages a request's JSON body adds to its thread (0 if it cannot tell)."""
    if operation not in MESSAGE_OPERATIONS:
        return 0
    if operation == "threads.messages.create":
        return 1
    if not isinstance(body, bytes):
        return 0
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):
        return 0
    for key in _MESSAGE_LISTS[operation]:
        document = document.get(key) if isinstance(document, dict) else None
    return len(document) if isinstance(document, list) else 0
