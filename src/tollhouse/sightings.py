"""Objects first seen in an answer under a parent the caller owns, so they are the caller's.

An assistant's reply message in a non-streamed run, the run steps' messages, files
Code Interpreter wrote, a vector store made by a thread's ``vector_stores`` helper:
none of these was created by a request of the caller's, yet each is visible to it
only through its own thread or run. Pure: a document in, sightings out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from tollhouse.classify import Kind


@dataclass(frozen=True, slots=True)
class Sighting:
    id: str
    kind: Kind
    parent_id: str | None
    created_at: int | None


# Fields, anywhere in an answer under the caller's parent, that name an object it
# came to hold without naming it: tool output files, a step's message, helper stores.
_NAMED = {
    "file_id": Kind.FILE,
    "message_id": Kind.MESSAGE,
    "vector_store_ids": Kind.VECTOR_STORE,
    "container_id": Kind.CONTAINER,  # a code_interpreter call's `auto` container
}
_OBJECTS = {"thread.message": Kind.MESSAGE, "thread.run": Kind.RUN, "thread": Kind.THREAD}
# Named by the request that put them there (and checked then), not held by the answer:
# a message's attachments; a thread's or assistant's stores, except in its create.
_NAMED_BY_CALLER = frozenset({"attachments", "tool_resources"})
# The answers that can hold objects the caller did not name.
SIGHTING_OPERATIONS: Final = frozenset(
    {
        "assistants.create",
        "assistants.update",
        "threads.create",
        "threads.create_and_run",
        "threads.messages.list",
        "threads.messages.retrieve",
        "threads.runs.create",
        "threads.runs.list",
        "threads.runs.retrieve",
        "threads.runs.submit_tool_outputs",
        "threads.runs.steps.list",
        "threads.runs.steps.retrieve",
        "responses.create",
        "responses.retrieve",
    }
)
# Stream events whose objects can hold such objects (deltas are skipped).
SIGHTING_EVENTS: Final = frozenset(
    {
        "thread.created",
        "thread.run.created",
        "thread.message.created",
        "thread.message.completed",
        "thread.run.step.created",
        "thread.run.step.completed",
        "response.output_item.done",
        "response.completed",
    }
)


def sightings(document: Any, created: bool = False) -> list[Sighting]:
    """Every object an answer (an object, a list page, one event's data) holds.

    ``created``: the answer to a create, whose stores made by a ``vector_stores``
    helper are new (the ids its request named are left out by the caller).
    """
    found: list[Sighting] = []
    pending: list[Any] = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = _OBJECTS.get(node.get("object"))  # type: ignore[arg-type]
        object_id = node.get("id")
        if kind is not None and isinstance(object_id, str):
            parent = node.get("thread_id")
            created_at = node.get("created_at")
            found.append(
                Sighting(
                    object_id,
                    kind,
                    parent if isinstance(parent, str) else None,
                    created_at if isinstance(created_at, int) else None,
                )
            )
        for key, value in node.items():
            named = _NAMED.get(key)
            if key in _NAMED_BY_CALLER and not (created and key == "tool_resources"):
                continue
            if named is None:
                if isinstance(value, dict | list):
                    pending.append(value)
            elif isinstance(value, str):
                found.append(Sighting(value, named, None, None))
            elif isinstance(value, list):
                found.extend(Sighting(v, named, None, None) for v in value if isinstance(v, str))
    return found
