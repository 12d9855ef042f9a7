"""Objects first seen in an answer under a parent the caller owns, so they are the caller's.

An assistant's reply message in a non-streamed run, the message a run step names,
files Code Interpreter wrote, a vector store made by a thread's ``vector_stores``
helper, a container a response's ``auto`` code interpreter made: none of these was
created by a request of the caller's, yet each reaches it only through its own
thread, run or response. They are read from their places in the reference's
objects only — never from anywhere a request could have written them itself
(a function's ``parameters``, metadata, a response format's schema). Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from tollhouse.api.classify import Kind


@dataclass(frozen=True, slots=True)
class Sighting:
    id: str
    kind: Kind
    parent_id: str | None
    created_at: int | None


# The answers that can hold objects the caller did not name.
SIGHTING_OPERATIONS: Final = frozenset(
    {
        "assistants.create",
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
        "thread.message.created",
        "thread.message.completed",
        "thread.run.step.created",
        "thread.run.step.completed",
        "response.output_item.done",
        "response.completed",
    }
)
Owned = Callable[[str], bool]


def _objects(document: Any) -> Iterator[dict[str, Any]]:
    """The objects of an answer: itself, a list page's items, a response event's object."""
    if not isinstance(document, dict):
        return
    if document.get("object") == "list" and isinstance(document.get("data"), list):
        yield from (item for item in document["data"] if isinstance(item, dict))
        return
    for key in ("response", "item"):  # response.completed / response.output_item.done
        if isinstance(document.get(key), dict) and "type" in document:
            yield document[key]
            return
    yield document


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _message(doc: dict[str, Any], owned: Owned) -> Iterator[Sighting]:
    thread = _str(doc.get("thread_id"))
    object_id = _str(doc.get("id"))
    if thread is None or object_id is None or not owned(thread):
        return
    created = doc.get("created_at")
    yield Sighting(object_id, Kind.MESSAGE, thread, created if isinstance(created, int) else None)
    if doc.get("role") != "assistant":
        return  # a user's message holds only what its request named (and was checked)
    for part in _dicts(doc.get("content")):
        image = part.get("image_file")
        if isinstance(image, dict) and (file_id := _str(image.get("file_id"))):
            yield Sighting(file_id, Kind.FILE, None, None)
        text = part.get("text")
        for note in _dicts(text.get("annotations") if isinstance(text, dict) else None):
            path = note.get("file_path")
            if isinstance(path, dict) and (file_id := _str(path.get("file_id"))):
                yield Sighting(file_id, Kind.FILE, None, None)


def _step(doc: dict[str, Any], owned: Owned) -> Iterator[Sighting]:
    thread = _str(doc.get("thread_id"))
    if thread is None or not owned(thread):
        return
    details = doc.get("step_details")
    if not isinstance(details, dict):
        return
    creation = details.get("message_creation")
    if isinstance(creation, dict) and (message := _str(creation.get("message_id"))):
        yield Sighting(message, Kind.MESSAGE, thread, None)
    for call in _dicts(details.get("tool_calls")):
        interpreter = call.get("code_interpreter")
        outputs = interpreter.get("outputs") if isinstance(interpreter, dict) else None
        for output in _dicts(outputs):
            image = output.get("image")
            if isinstance(image, dict) and (file_id := _str(image.get("file_id"))):
                yield Sighting(file_id, Kind.FILE, None, None)


def _stores(doc: dict[str, Any]) -> Iterator[Sighting]:
    """A created thread's or assistant's stores (those its request named are left out later)."""
    resources = doc.get("tool_resources")
    search = resources.get("file_search") if isinstance(resources, dict) else None
    ids = search.get("vector_store_ids") if isinstance(search, dict) else None
    for store in ids if isinstance(ids, list) else []:
        if isinstance(store, str):
            yield Sighting(store, Kind.VECTOR_STORE, None, None)


def _containers(doc: dict[str, Any]) -> Iterator[Sighting]:
    items = [doc] if doc.get("type") == "code_interpreter_call" else _dicts(doc.get("output"))
    for item in items:
        if item.get("type") == "code_interpreter_call" and (
            container := _str(item.get("container_id"))
        ):
            yield Sighting(container, Kind.CONTAINER, None, None)


def sightings(document: Any, owned: Owned, created: bool = False) -> list[Sighting]:
    """The objects an answer (an object, a list page, one event's data) holds for its caller.

    ``owned(id)``: whether the caller owns a thread (messages and steps count only
    in the caller's own threads). ``created``: the answer to the caller's create.
    """
    found: list[Sighting] = []
    for doc in _objects(document):
        kind = doc.get("object")
        if kind == "thread.message":
            found += _message(doc, owned)
        elif kind == "thread.run.step":
            found += _step(doc, owned)
        elif kind in ("thread", "assistant") and created:
            found += _stores(doc)
        elif kind == "response" or doc.get("type") == "code_interpreter_call":
            found += _containers(doc)
    return found
