"""Classification of a request: ``(method, path) -> Operation``.

Every endpoint fact tollhouse relies on lives in ``ROUTES``: the operation's
name, its quota class, the object ids in its path, the kind of object it
creates and whether it can answer with a server-sent event stream. Metering a
successor API means adding rows here (and an extractor in the meter), nothing
else. Other dialects of the same API (Azure OpenAI's ``/openai/...``) are read
through their canonical OpenAI path (``dialects.py``), never given routes of their own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from tollhouse.api.dialects import canonical_path


class RequestClass(enum.StrEnum):
    """The quota class of a request.

    The first four are the Assistants API's, with the organisation's published
    limits; the others have no limit unless the policy sets one.
    """

    GET = "GET"
    POST = "POST"
    RUN_CREATE = "RUN_CREATE"
    DELETE = "DELETE"
    RESPONSE_CREATE = "RESPONSE_CREATE"  # a model call on the Responses API
    CHAT_COMPLETION = "CHAT_COMPLETION"  # a model call on Chat Completions
    RESPONSES = "RESPONSES"  # the rest of the Responses era: reads, polls, conversations...
    UNKNOWN = "UNKNOWN"  # operations tollhouse does not know


ASSISTANTS_CLASSES: Final = frozenset(
    {RequestClass.GET, RequestClass.POST, RequestClass.RUN_CREATE, RequestClass.DELETE}
)


class Kind(enum.StrEnum):
    """Kinds of upstream object a request can create or name."""

    ASSISTANT = "assistant"
    THREAD = "thread"
    MESSAGE = "message"
    RUN = "run"
    STEP = "step"
    VECTOR_STORE = "vector_store"
    FILE_BATCH = "file_batch"
    FILE = "file"
    UPLOAD = "upload"
    RESPONSE = "response"
    CONVERSATION = "conversation"
    CONVERSATION_ITEM = "conversation_item"
    CONTAINER = "container"
    CONTAINER_FILE = "container_file"
    CHAT_COMPLETION = "chat_completion"


# Path parameter name -> the kind of object it names.
PARAM_KINDS: Final = MappingProxyType(
    {
        "assistant_id": Kind.ASSISTANT,
        "thread_id": Kind.THREAD,
        "message_id": Kind.MESSAGE,
        "run_id": Kind.RUN,
        "step_id": Kind.STEP,
        "vector_store_id": Kind.VECTOR_STORE,
        "batch_id": Kind.FILE_BATCH,
        "file_id": Kind.FILE,
        "upload_id": Kind.UPLOAD,
        "response_id": Kind.RESPONSE,
        "conversation_id": Kind.CONVERSATION,
        "item_id": Kind.CONVERSATION_ITEM,
        "container_id": Kind.CONTAINER,
        "container_file_id": Kind.CONTAINER_FILE,
        "completion_id": Kind.CHAT_COMPLETION,
    }
)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    template: str
    name: str
    request_class: RequestClass
    creates: Kind | None = None
    streams: bool = False
    segments: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.template.strip("/").split("/")))


@dataclass(frozen=True, slots=True)
class Operation:
    """What a request is: which endpoint, its quota class and the ids it names."""

    name: str
    request_class: RequestClass
    params: MappingProxyType[str, str]
    creates: Kind | None = None
    streams: bool = False

    @property
    def known(self) -> bool:
        return self.name != UNKNOWN


UNKNOWN: Final = "unknown"

_G, _P, _R, _D = RequestClass.GET, RequestClass.POST, RequestClass.RUN_CREATE, RequestClass.DELETE
_T = "/v1/threads/{thread_id}"
_RUN = _T + "/runs/{run_id}"
_VS = "/v1/vector_stores/{vector_store_id}"
_RC, _CC, _RS = RequestClass.RESPONSE_CREATE, RequestClass.CHAT_COMPLETION, RequestClass.RESPONSES
_RESP = "/v1/responses/{response_id}"
_CONV = "/v1/conversations/{conversation_id}"
_CONT = "/v1/containers/{container_id}"
_CHAT = "/v1/chat/completions/{completion_id}"
_BATCH = _VS + "/file_batches/{batch_id}"

ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/v1/assistants", "assistants.list", _G),
    Route("POST", "/v1/assistants", "assistants.create", _P, creates=Kind.ASSISTANT),
    Route("GET", "/v1/assistants/{assistant_id}", "assistants.retrieve", _G),
    Route("POST", "/v1/assistants/{assistant_id}", "assistants.update", _P),
    Route("DELETE", "/v1/assistants/{assistant_id}", "assistants.delete", _D),
    Route("POST", "/v1/threads", "threads.create", _P, creates=Kind.THREAD),
    Route("POST", "/v1/threads/runs", "threads.create_and_run", _R, Kind.RUN, streams=True),
    Route("GET", _T, "threads.retrieve", _G),
    Route("POST", _T, "threads.update", _P),
    Route("DELETE", _T, "threads.delete", _D),
    Route("GET", _T + "/messages", "threads.messages.list", _G),
    Route("POST", _T + "/messages", "threads.messages.create", _P, creates=Kind.MESSAGE),
    Route("GET", _T + "/messages/{message_id}", "threads.messages.retrieve", _G),
    Route("POST", _T + "/messages/{message_id}", "threads.messages.update", _P),
    Route("DELETE", _T + "/messages/{message_id}", "threads.messages.delete", _D),
    Route("GET", _T + "/runs", "threads.runs.list", _G),
    Route("POST", _T + "/runs", "threads.runs.create", _R, creates=Kind.RUN, streams=True),
    Route("GET", _RUN, "threads.runs.retrieve", _G),
    Route("POST", _RUN, "threads.runs.update", _P),
    Route("POST", _RUN + "/cancel", "threads.runs.cancel", _P),
    Route(
        "POST", _RUN + "/submit_tool_outputs", "threads.runs.submit_tool_outputs", _P, streams=True
    ),
    Route("GET", _RUN + "/steps", "threads.runs.steps.list", _G),
    Route("GET", _RUN + "/steps/{step_id}", "threads.runs.steps.retrieve", _G),
    Route("GET", "/v1/vector_stores", "vector_stores.list", _G),
    Route("POST", "/v1/vector_stores", "vector_stores.create", _P, creates=Kind.VECTOR_STORE),
    Route("GET", _VS, "vector_stores.retrieve", _G),
    Route("POST", _VS, "vector_stores.update", _P),
    Route("DELETE", _VS, "vector_stores.delete", _D),
    Route("POST", _VS + "/search", "vector_stores.search", _P),
    Route("GET", _VS + "/files", "vector_stores.files.list", _G),
    Route("POST", _VS + "/files", "vector_stores.files.create", _P),
    Route("GET", _VS + "/files/{file_id}", "vector_stores.files.retrieve", _G),
    Route("POST", _VS + "/files/{file_id}", "vector_stores.files.update", _P),
    Route("DELETE", _VS + "/files/{file_id}", "vector_stores.files.delete", _D),
    Route("GET", _VS + "/files/{file_id}/content", "vector_stores.files.content", _G),
    Route(
        "POST",
        _VS + "/file_batches",
        "vector_stores.file_batches.create",
        _P,
        creates=Kind.FILE_BATCH,
    ),
    Route("GET", _BATCH, "vector_stores.file_batches.retrieve", _G),
    Route("POST", _BATCH + "/cancel", "vector_stores.file_batches.cancel", _P),
    Route("GET", _BATCH + "/files", "vector_stores.file_batches.list_files", _G),
    Route("GET", "/v1/files", "files.list", _G),
    Route("POST", "/v1/files", "files.create", _P, creates=Kind.FILE),
    Route("GET", "/v1/files/{file_id}", "files.retrieve", _G),
    Route("DELETE", "/v1/files/{file_id}", "files.delete", _D),
    Route("GET", "/v1/files/{file_id}/content", "files.content", _G),
    Route("POST", "/v1/uploads", "uploads.create", _P, creates=Kind.UPLOAD),
    Route("POST", "/v1/uploads/{upload_id}/parts", "uploads.parts.create", _P),
    Route("POST", "/v1/uploads/{upload_id}/complete", "uploads.complete", _P, creates=Kind.FILE),
    Route("POST", "/v1/uploads/{upload_id}/cancel", "uploads.cancel", _P),
    # The Responses era: its own classes, never the Assistants API's limits.
    Route("POST", "/v1/responses", "responses.create", _RC, Kind.RESPONSE, streams=True),
    Route("POST", "/v1/responses/compact", "responses.compact", _RC),
    Route("POST", "/v1/responses/input_tokens", "responses.input_tokens", _RS),
    Route("GET", _RESP, "responses.retrieve", _RS, streams=True),
    Route("DELETE", _RESP, "responses.delete", _RS),
    Route("POST", _RESP + "/cancel", "responses.cancel", _RS),
    Route("GET", _RESP + "/input_items", "responses.input_items", _RS),
    Route("POST", "/v1/conversations", "conversations.create", _RS, Kind.CONVERSATION),
    Route("GET", _CONV, "conversations.retrieve", _RS),
    Route("POST", _CONV, "conversations.update", _RS),
    Route("DELETE", _CONV, "conversations.delete", _RS),
    Route("POST", _CONV + "/items", "conversations.items.create", _RS),
    Route("GET", _CONV + "/items", "conversations.items.list", _RS),
    Route("GET", _CONV + "/items/{item_id}", "conversations.items.retrieve", _RS),
    Route("DELETE", _CONV + "/items/{item_id}", "conversations.items.delete", _RS),
    Route("GET", "/v1/containers", "containers.list", _RS),
    Route("POST", "/v1/containers", "containers.create", _RS, Kind.CONTAINER),
    Route("GET", _CONT, "containers.retrieve", _RS),
    Route("DELETE", _CONT, "containers.delete", _RS),
    Route("POST", _CONT + "/files", "containers.files.create", _RS, Kind.CONTAINER_FILE),
    Route("GET", _CONT + "/files", "containers.files.list", _RS),
    Route("GET", _CONT + "/files/{container_file_id}", "containers.files.retrieve", _RS),
    Route("DELETE", _CONT + "/files/{container_file_id}", "containers.files.delete", _RS),
    Route("GET", _CONT + "/files/{container_file_id}/content", "containers.files.content", _RS),
    Route(
        "POST",
        "/v1/chat/completions",
        "chat.completions.create",
        _CC,
        Kind.CHAT_COMPLETION,
        streams=True,
    ),
    Route("GET", "/v1/chat/completions", "chat.completions.list", _RS),
    Route("GET", _CHAT, "chat.completions.retrieve", _RS),
    Route("POST", _CHAT, "chat.completions.update", _RS),
    Route("DELETE", _CHAT, "chat.completions.delete", _RS),
    Route("GET", _CHAT + "/messages", "chat.completions.messages.list", _RS),
)

# HEAD and OPTIONS read what GET reads: the same route, so ownership and quotas apply alike.
_LOOKUP_METHOD: Final = MappingProxyType({"HEAD": "GET", "OPTIONS": "GET"})
_NO_PARAMS: Final[MappingProxyType[str, str]] = MappingProxyType({})


def _index(routes: tuple[Route, ...]) -> dict[tuple[str, int], tuple[Route, ...]]:
    index: dict[tuple[str, int], list[Route]] = {}
    for route in routes:
        index.setdefault((route.method, len(route.segments)), []).append(route)
    # Literal segments win over parameters: /v1/threads/runs before /v1/threads/{thread_id}.
    return {
        key: tuple(sorted(group, key=lambda r: sum(s.startswith("{") for s in r.segments)))
        for key, group in index.items()
    }


_INDEX: Final = _index(ROUTES)


def _match(route: Route, segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for pattern, segment in zip(route.segments, segments, strict=True):
        if pattern[0] == "{":
            if not segment:
                return None
            params[pattern[1:-1]] = segment
        elif pattern != segment:
            return None
    return params


def classify(method: str, path: str) -> Operation:
    """Name the operation of a request. Unknown paths get the class ``UNKNOWN``.

    ``HEAD`` and ``OPTIONS`` are whatever ``GET`` on the same path is; an Azure
    OpenAI path is whatever its OpenAI twin is.
    """
    method = method.upper()
    segments = canonical_path(path).strip("/").split("/")
    lookup = _LOOKUP_METHOD.get(method, method)
    for route in _INDEX.get((lookup, len(segments)), ()):
        params = _match(route, segments)
        if params is not None:
            return Operation(
                name=route.name,
                request_class=route.request_class,
                params=MappingProxyType(params) if params else _NO_PARAMS,
                creates=route.creates,
                streams=route.streams,
            )
    return Operation(UNKNOWN, RequestClass.UNKNOWN, _NO_PARAMS)
