"""Usage extraction: what a JSON response body or one streamed event says was used or created.

Pure and total: a body unlike the spec (an error, truncated, not JSON, a field of the wrong
type) yields no observations, never an exception: metering must not break what it observes.
``observe_json`` and ``observe_event`` report what the ledger records (runs, steps, created
objects); the ``*_all`` forms report the Responses era's usage as well (``meter_responses``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from tollhouse.api.classify import ROUTES, Kind, Operation
from tollhouse.metering.assistants import ASSISTANT_OPERATIONS, AssistantSeen, assistant_document
from tollhouse.metering.responses import (
    ITEM_DONE,
    RESPONSE_EVENTS,
    SUCCESSOR_OBJECTS,
    SuccessorSeen,
    SuccessorStream,
    successor_document,
    successor_event,
)
from tollhouse.metering.sse import SSEEvent, SSEParser

TERMINAL_STATUSES: Final = frozenset({"completed", "failed", "cancelled", "expired", "incomplete"})
MAX_JSON_BODY: Final = 64 * 1024 * 1024
KEEP_MARKER: Final = "tollhouse_keep"

# Reads and updates whose responses carry runs, steps, vector stores, responses or containers;
# every create counts too.
_READ_OPERATIONS: Final = frozenset(
    {"threads.runs.list", "threads.runs.retrieve", "threads.runs.update", "threads.runs.cancel"}
    | {"threads.runs.submit_tool_outputs", "threads.runs.steps.list", "threads.runs.steps.retrieve"}
    | {"vector_stores.list", "vector_stores.retrieve", "vector_stores.update"}
    | SUCCESSOR_OBJECTS.keys()
    | ASSISTANT_OPERATIONS
)
METERED_OPERATIONS: Final[frozenset[str]] = _READ_OPERATIONS | {r.name for r in ROUTES if r.creates}

_USAGE_FIELDS: Final = ("prompt_tokens", "completion_tokens", "total_tokens")
# A terminal run's finish time, by preference (the spec has no `expired_at` on runs).
_FINISH_FIELDS: Final = ("completed_at", "failed_at", "cancelled_at", "expired_at", "incomplete_at")
# Objects whose state is reported whatever the request; they are runs, steps, vector stores.
_STATE_OBJECTS: Final = frozenset({"thread.run", "thread.run.step", "vector_store"})
# Objects reported when a create returns them: kind, the field naming the parent, the size field.
_CREATED: Final[dict[str, tuple[Kind, str | None, str | None]]] = {
    "assistant": (Kind.ASSISTANT, None, None),
    "thread": (Kind.THREAD, None, None),
    "thread.message": (Kind.MESSAGE, "thread_id", None),
    "thread.run": (Kind.RUN, "thread_id", None),
    "vector_store.files_batch": (Kind.FILE_BATCH, "vector_store_id", None),
    "file": (Kind.FILE, None, "bytes"),
    "upload": (Kind.UPLOAD, None, "bytes"),
    "response": (Kind.RESPONSE, None, None),
    "conversation": (Kind.CONVERSATION, None, None),
    "container": (Kind.CONTAINER, None, None),
    "chat.completion": (Kind.CHAT_COMPLETION, None, None),
    "chat.completion.chunk": (Kind.CHAT_COMPLETION, None, None),
}


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class RunSeen:
    id: str
    thread_id: str
    assistant_id: str | None
    model: str | None
    status: str
    created_at: int
    finished_at: int | None
    usage: Usage | None
    code_interpreter: bool
    file_search: bool

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class ToolCallSeen:
    id: str
    type: str
    step_id: str
    run_id: str
    thread_id: str
    at: int


@dataclass(frozen=True, slots=True)
class StepSeen:
    id: str
    run_id: str
    thread_id: str
    status: str
    created_at: int
    tool_calls: tuple[ToolCallSeen, ...]
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class ObjectSeen:
    """An object created through the proxy, or the current state of a vector store."""

    id: str
    kind: Kind
    parent_id: str | None
    created_at: int
    keep: bool
    last_active_at: int | None
    usage_bytes: int | None


# What the ledger records today; `Seen` is everything the meter reports.
Observation = RunSeen | StepSeen | ObjectSeen
Seen = Observation | SuccessorSeen | AssistantSeen
# Events the Responses era reports from, besides chat chunks (event "message").
_SUCCESSOR_EVENTS: Final = RESPONSE_EVENTS | {ITEM_DONE}


def wants_body(operation: Operation) -> bool:
    """Whether a response to ``operation`` can hold anything ``observe_json_all`` reports."""
    return operation.creates is not None or operation.name in METERED_OPERATIONS


def observe_json(
    operation: Operation, status: int, body: bytes, *, max_body: int = MAX_JSON_BODY
) -> list[Observation]:
    """What a complete JSON response says was used or created; ``[]`` for anything else."""
    objects = _objects(status, body, max_body)
    return [seen for doc in objects for seen in _observe(operation, doc)]


def observe_json_all(
    operation: Operation, status: int, body: bytes, *, max_body: int = MAX_JSON_BODY
) -> list[Seen]:
    """``observe_json`` and, from the same parse, the responses, tool calls, containers,
    chat completions and assistants the body shows."""
    found: list[Seen] = []
    for doc in _objects(status, body, max_body):
        found += _observe(operation, doc)
        found += successor_document(operation.name, doc)
        found += assistant_document(operation.name, doc)
    return found


def _objects(status: int, body: bytes, max_body: int) -> list[dict[str, Any]]:
    """The objects of a successful JSON answer: itself, or the items of a list."""
    if not 200 <= status < 300 or len(body) > max_body:
        return []
    document = _load(body)
    if document is None:
        return []
    if document.get("object") != "list":
        return [document]
    items = document.get("data")
    if not isinstance(items, list):
        return []
    return [item for item in items if isinstance(item, dict)]


def observe_event_all(event: SSEEvent, stream: SuccessorStream | None = None) -> list[Seen]:
    """``observe_event`` and the Responses era's usage. Alone, an event says what it can;
    with the ``stream`` it belongs to, items are attributed to their response and a chat
    stream that ends without usage (``data: [DONE]``) reports its completion unmetered."""
    name = event.event
    if name not in _SUCCESSOR_EVENTS and name != "message":
        return [*observe_event(event)]
    if name == "message" and event.data == "[DONE]":
        return [*stream.end()] if stream is not None else []
    document = _load(event.data) if name != "message" or event.data.startswith("{") else None
    if document is None:
        return []
    found: list[Seen] = [*_successor_created(name, document)]
    found += successor_event(name, document) if stream is None else stream.event(name, document)
    return found


def observe_event(event: SSEEvent) -> list[Observation]:
    """What one event of a stream says was used or created."""
    name = event.event
    if name == "response.created" or (name == "message" and event.data.startswith("{")):
        document = _load(event.data)
        return [] if document is None else _successor_created(name, document)
    # Deltas and message events are most of a stream and carry nothing metered: skip parsing.
    if name != "thread.created" and (
        not name.startswith("thread.run.") or name == "thread.run.step.delta"
    ):
        return []
    document = _load(event.data)
    if document is None:
        return []
    kind = str(document.get("object"))  # whatever else it is, a non-string names no kind
    try:
        if name == "thread.created":
            return [_created(document)] if kind == "thread" else []
        seen: list[Observation] = [_read(document)] if kind in _STATE_OBJECTS else []
        if name == "thread.run.created" and kind == "thread.run":
            seen.append(_created(document))
        return seen
    except _Malformed:
        return []


def _successor_created(name: str, document: dict[str, Any]) -> list[Observation]:
    """A Responses stream names its response first; each chunk of a chat stream, its completion."""
    if name == "response.created":
        created = document.get("response")
    elif name == "message" and document.get("object") == "chat.completion.chunk":
        created = document
    else:
        return []
    if not isinstance(created, dict) or str(created.get("object")) not in _CREATED:
        return []
    try:
        return [_created(created)]
    except _Malformed:
        return []


class StreamMeter:
    """Observations from an event stream, fed in chunks as they are relayed.

    ``feed`` reports what ``observe_event`` does; ``feed_all`` (or ``observe`` for events
    already parsed, then ``close`` when the stream ends however it ends) everything, with
    what only the whole stream tells. Use one family or the other on one meter."""

    def __init__(self, parser: SSEParser | None = None) -> None:
        self.parser = parser if parser is not None else SSEParser()
        self._successor = SuccessorStream()

    def feed(self, chunk: bytes) -> list[Observation]:
        return [seen for event in self.parser.feed(chunk) for seen in observe_event(event)]

    def feed_events(self, chunk: bytes) -> list[SSEEvent]:
        """The complete events in ``chunk``, for callers that read more than usage."""
        return self.parser.feed(chunk)

    def feed_all(self, chunk: bytes) -> list[Seen]:
        return [seen for event in self.parser.feed(chunk) for seen in self.observe(event)]

    def observe(self, event: SSEEvent) -> list[Seen]:
        return observe_event_all(event, self._successor)

    def close(self) -> list[Seen]:
        """The stream ended: what it still held (reported once; later calls give nothing)."""
        return [*self._successor.end()]


_T = TypeVar("_T", str, int)


class _Malformed(Exception):
    """An object without the shape the spec gives it."""


def _load(text: bytes | str) -> dict[str, Any] | None:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return document if isinstance(document, dict) else None


def _observe(operation: Operation, doc: dict[str, Any]) -> list[Observation]:
    kind = str(doc.get("object"))
    try:
        seen: list[Observation] = [_read(doc)] if kind in _STATE_OBJECTS else []
        if operation.creates is None or kind not in _CREATED:
            return seen
        if kind == "upload" and operation.creates == Kind.FILE:
            # uploads.complete answers with the upload, the new file nested in it.
            file = doc.get("file")
            if not isinstance(file, dict) or file.get("object") != "file":
                raise _Malformed("file")
            return [_created(file)]
        seen.append(_created(doc))
        if operation.name == "threads.create_and_run" and kind == "thread.run":
            # The response names the new thread but not its metadata: no keep marker here.
            thread = {
                "object": "thread",
                "id": doc.get("thread_id"),
                "created_at": doc.get("created_at"),
            }
            seen.append(_created(thread))
        return seen
    except _Malformed:
        return []


def _read(doc: dict[str, Any]) -> Observation:
    """The state of a run, a step or a vector store, whichever request returned it."""
    kind = doc["object"]
    if kind == "thread.run":
        return _run(doc)
    if kind == "thread.run.step":
        return _step(doc)
    return _object(doc, Kind.VECTOR_STORE, None, "usage_bytes", active=True)


def _created(doc: dict[str, Any]) -> ObjectSeen:
    return _object(doc, *_CREATED[doc["object"]])


def _run(doc: dict[str, Any]) -> RunSeen:
    status = _field(doc, "status", str)
    terminal = status in TERMINAL_STATUSES
    tools = doc.get("tools") or []
    if not isinstance(tools, list):
        raise _Malformed("tools")
    types = {tool.get("type") for tool in tools if isinstance(tool, dict)}
    return RunSeen(
        id=_field(doc, "id", str),
        thread_id=_field(doc, "thread_id", str),
        assistant_id=_optional(doc, "assistant_id", str),
        model=_optional(doc, "model", str),
        status=status,
        created_at=_field(doc, "created_at", int),
        finished_at=_finished_at(doc, status) if terminal else None,
        usage=_usage(doc) if terminal else None,
        code_interpreter="code_interpreter" in types,
        file_search="file_search" in types,
    )


def _finished_at(doc: dict[str, Any], status: str) -> int | None:
    # An expired run has no field of its own; `expires_at` is the moment, if still given.
    names = (*_FINISH_FIELDS, "expires_at") if status == "expired" else _FINISH_FIELDS
    times = [_optional(doc, name, int) for name in names]
    return next((at for at in times if at is not None), None)


def _step(doc: dict[str, Any]) -> StepSeen:
    ids = _field(doc, "id", str), _field(doc, "run_id", str), _field(doc, "thread_id", str)
    created_at = _field(doc, "created_at", int)
    details = doc.get("step_details")
    calls: object = []
    if isinstance(details, dict) and details.get("type") == "tool_calls":
        calls = details.get("tool_calls")
    if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
        raise _Malformed("step_details.tool_calls")
    return StepSeen(
        *ids,
        status=_field(doc, "status", str),
        created_at=created_at,
        tool_calls=tuple(
            ToolCallSeen(_field(call, "id", str), _field(call, "type", str), *ids, created_at)
            for call in calls
        ),
        usage=_usage(doc),
    )


def _object(
    doc: dict[str, Any], kind: Kind, parent: str | None, size: str | None, active: bool = False
) -> ObjectSeen:
    metadata = doc.get("metadata")
    return ObjectSeen(
        id=_field(doc, "id", str),
        kind=kind,
        parent_id=None if parent is None else _field(doc, parent, str),
        # Chat completions name their time `created`.
        created_at=_field(doc, "created_at" if "created_at" in doc else "created", int),
        keep=isinstance(metadata, dict) and metadata.get(KEEP_MARKER) == "true",
        last_active_at=_optional(doc, "last_active_at", int) if active else None,
        usage_bytes=None if size is None else _field(doc, size, int),
    )


def _usage(doc: dict[str, Any]) -> Usage | None:
    usage = doc.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise _Malformed("usage")
    counts = [_field(usage, name, int) for name in _USAGE_FIELDS]
    if min(counts) < 0:
        raise _Malformed("usage")
    return Usage(*counts)


def _field(doc: dict[str, Any], name: str, kind: type[_T]) -> _T:
    value = doc.get(name)
    if isinstance(value, kind) and not isinstance(value, bool):
        return value
    raise _Malformed(name)


def _optional(doc: dict[str, Any], name: str, kind: type[_T]) -> _T | None:
    return None if doc.get(name) is None else _field(doc, name, kind)
