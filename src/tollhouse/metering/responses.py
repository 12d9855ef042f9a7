"""Usage extraction for the Responses era: responses, tool calls, containers, chat completions.

Pure and total like the rest of the meter: a document unlike the spec yields no observations, never
an exception. A response is reported wherever it is seen (created, polled, cancelled, streamed,
resumed); its tool calls are reported by item id, so whoever counts them counts each id once."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

RESPONSE_TERMINAL: Final = frozenset({"completed", "failed", "cancelled", "incomplete"})
# The object each operation answers with (in a list, for containers.list).
SUCCESSOR_OBJECTS: Final = {
    "responses.create": "response",
    "responses.retrieve": "response",
    "responses.cancel": "response",
    "containers.create": "container",
    "containers.retrieve": "container",
    "containers.list": "container",
    "chat.completions.create": "chat.completion",
}
# Stream events whose `response` is the whole response object.
RESPONSE_EVENTS: Final = frozenset(
    {"response.created", "response.queued", "response.in_progress"}
    | {"response.completed", "response.incomplete", "response.failed"}
)
ITEM_DONE: Final = "response.output_item.done"
# SPEC: a container's `memory_limit` defaults to 1g; an auto container the response names no
# id for is recorded under this prefix and the response's id.
AUTO_MEMORY_LIMIT: Final = "1g"
AUTO_PREFIX: Final = "auto:"
CHAT_CHUNK: Final = "chat.completion.chunk"


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Tokens a response or a chat completion used; a chat completion's prompt is its input."""

    input_tokens: int
    cached_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    total_tokens: int


@dataclass(frozen=True, slots=True)
class ResponseSeen:
    """A response as one answer or event showed it; ``usage`` only once it is terminal."""

    id: str
    model: str | None
    status: str
    created_at: int
    finished_at: int | None
    service_tier: str | None
    usage: TokenUsage | None
    conversation_id: str | None
    previous_response_id: str | None
    background: bool
    # The memory limit of a `container: auto` Code Interpreter the response offered (the API's
    # default, 1g, when the tool named none); None when it offered none.
    auto_container: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in RESPONSE_TERMINAL


@dataclass(frozen=True, slots=True)
class ToolItemSeen:
    """A tool call among a response's output items (any item whose type ends in ``_call``).

    ``response_id`` is None only for a streamed item whose stream never named its response.
    ``tool`` is the web search tool the response offered (``web_search``,
    ``web_search_preview`` or a dated version of either) when exactly one was; ``action`` what
    the search did. ``size`` and ``quality`` of a generated image come from the item, else from
    the response's image generation tool."""

    id: str
    type: str
    response_id: str | None
    status: str | None
    action: str | None = None
    tool: str | None = None
    container_id: str | None = None
    size: str | None = None
    quality: str | None = None


@dataclass(frozen=True, slots=True)
class ContainerSeen:
    """A container as the containers API shows it, or one a response's ``container: auto``
    Code Interpreter used (``auto``; see :func:`auto_containers`)."""

    id: str
    status: str
    created_at: int
    last_active_at: int | None
    memory_limit: str | None
    expires_after_minutes: int | None
    auto: bool = False
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChatCompletionSeen:
    """A chat completion; ``usage`` is None when a stream was not asked to include it."""

    id: str
    model: str | None
    created_at: int
    service_tier: str | None
    usage: TokenUsage | None


SuccessorSeen = ResponseSeen | ToolItemSeen | ContainerSeen | ChatCompletionSeen


def successor_document(operation: str, doc: dict[str, Any]) -> list[SuccessorSeen]:
    """What one object of a JSON answer to ``operation`` reports; ``[]`` for anything else."""
    kind = SUCCESSOR_OBJECTS.get(operation)
    if kind is None or doc.get("object") != kind:
        return []
    try:
        if kind == "response":
            return _response(doc)
        if kind == "container":
            return [_container(doc)]
        return [_chat(doc, _usage(doc, _chat_usage))]
    except _Malformed:
        return []


def successor_event(name: str, doc: dict[str, Any]) -> list[SuccessorSeen]:
    """What one event of a Responses or chat stream reports, seen alone: a finished item does
    not name its response (``SuccessorStream`` fills that in), a chat chunk only counts when it
    carries the usage."""
    try:
        if name in RESPONSE_EVENTS:
            response = doc.get("response")
            if not isinstance(response, dict) or response.get("object") != "response":
                return []
            return _response(response)
        if name == ITEM_DONE:
            item = _tool_item(doc.get("item"), _Offer())
            return [] if item is None else [item]
        if name == "message" and doc.get("object") == CHAT_CHUNK and doc.get("usage") is not None:
            return [_chat(doc, _usage(doc, _chat_usage))]
    except _Malformed:
        return []
    return []


class SuccessorStream:
    """What the events of one stream report, with what a lone event cannot know: the response
    a finished item belongs to (held until an event names it), and a chat completion streamed
    without usage (reported, usage None, when the stream ends)."""

    def __init__(self) -> None:
        self._offer: _Offer | None = None
        self._held: list[ToolItemSeen] = []
        self._chat: ChatCompletionSeen | None = None  # seen, its usage not yet
        self._chat_metered = False

    def event(self, name: str, doc: dict[str, Any]) -> list[SuccessorSeen]:
        if name == ITEM_DONE:
            item = _tool_item(doc.get("item"), self._offer or _Offer())
            if item is not None and self._offer is None:
                self._held.append(item)  # a resumed stream names its response later
                return []
            return [] if item is None else [item]
        seen = successor_event(name, doc)
        if name in RESPONSE_EVENTS and seen:  # the response read whole: its offer reads too
            self._offer = _offer(doc["response"])
            return [*seen, *self._release(self._offer)]
        if name == "message" and doc.get("object") == CHAT_CHUNK:
            self._chat_chunk(doc, seen)
        return seen

    def end(self) -> list[SuccessorSeen]:
        """The stream ended (``[DONE]``, its last event, or broken): what is still held."""
        seen: list[SuccessorSeen] = [*self._release(_Offer())]
        if self._chat is not None and not self._chat_metered:
            seen.append(self._chat)
        self._chat = None
        return seen

    def _release(self, offer: _Offer) -> list[ToolItemSeen]:
        held, self._held = self._held, []
        return [_offered(item, offer) for item in held]

    def _chat_chunk(self, doc: dict[str, Any], seen: list[SuccessorSeen]) -> None:
        if seen:
            self._chat_metered = True
        elif self._chat is None and not self._chat_metered:
            with contextlib.suppress(_Malformed):  # a later chunk may name it
                self._chat = _chat(doc, None)


# -- reading the objects ---------------------------------------------------------------------


class _Malformed(Exception):
    """An object without the shape the spec gives it."""


@dataclass(frozen=True, slots=True)
class _Offer:
    """What a response's request offered, for its items: its id and tools."""

    response_id: str | None = None
    web_search: str | None = None
    image_size: str | None = None
    image_quality: str | None = None


def _response(doc: dict[str, Any]) -> list[SuccessorSeen]:
    status = _text(doc, "status")
    terminal = status in RESPONSE_TERMINAL
    conversation = doc.get("conversation")
    if conversation is not None and not isinstance(conversation, dict):
        raise _Malformed("conversation")
    background = doc.get("background")
    if background is not None and not isinstance(background, bool):
        raise _Malformed("background")
    output = doc.get("output") or []
    if not isinstance(output, list):
        raise _Malformed("output")
    response = ResponseSeen(
        id=_text(doc, "id"),
        model=_optional_text(doc, "model"),
        status=status,
        created_at=_time(doc, "created_at"),
        finished_at=_optional_time(doc, "completed_at") if terminal else None,
        service_tier=_optional_text(doc, "service_tier"),
        usage=_usage(doc, _response_usage) if terminal else None,
        conversation_id=None if conversation is None else _text(conversation, "id"),
        previous_response_id=_optional_text(doc, "previous_response_id"),
        background=bool(background),
        auto_container=_auto_container(doc),
    )
    offer = _offer(doc)
    items = [_tool_item(item, offer) for item in output]
    return [response, *(item for item in items if item is not None)]


def _auto_container(doc: dict[str, Any]) -> str | None:
    """The memory limit of the first `container: auto` Code Interpreter among the tools."""
    tools = doc.get("tools") or []
    if not isinstance(tools, list):
        raise _Malformed("tools")
    for tool in tools:
        if not isinstance(tool, dict) or tool.get("type") != "code_interpreter":
            continue
        container = tool.get("container")
        if isinstance(container, dict) and container.get("type") == "auto":
            return _loose_text(container, "memory_limit") or AUTO_MEMORY_LIMIT
    return None


def auto_containers(seen: Sequence[object]) -> list[ContainerSeen]:
    """The containers the terminal responses among ``seen`` ran on with ``container: auto``.

    An auto container is created, and billed, even when the model never calls the tool; the
    response then names no container, so one is recorded under ``auto:<response id>``. When
    the model did call it, each container its calls name (found among ``seen``, which holds
    the response's output items with it) is one. Ids are stable, so recording them again
    changes nothing."""
    calls: dict[str, set[str]] = {}
    for item in seen:
        if (
            isinstance(item, ToolItemSeen)
            and item.type == "code_interpreter_call"
            and item.response_id is not None
            and item.container_id
        ):
            calls.setdefault(item.response_id, set()).add(item.container_id)
    found: list[ContainerSeen] = []
    for response in seen:
        if not isinstance(response, ResponseSeen) or response.auto_container is None:
            continue
        if not response.terminal:
            continue
        last = response.finished_at or response.created_at
        ids = sorted(calls.get(response.id, ())) or [f"{AUTO_PREFIX}{response.id}"]
        found += [
            ContainerSeen(
                id=container_id,
                status="auto",
                created_at=response.created_at,
                last_active_at=last,
                memory_limit=response.auto_container,
                expires_after_minutes=None,
                auto=True,
                response_id=response.id,
            )
            for container_id in ids
        ]
    return found


def _offer(doc: dict[str, Any]) -> _Offer:
    tools = doc.get("tools") or []
    if not isinstance(tools, list):
        raise _Malformed("tools")
    offered = [tool for tool in tools if isinstance(tool, dict)]
    searches = {
        kind
        for tool in offered
        if isinstance(kind := tool.get("type"), str) and kind.startswith("web_search")
    }
    images = [tool for tool in offered if tool.get("type") == "image_generation"]
    image = images[0] if len(images) == 1 else {}
    return _Offer(
        response_id=_text(doc, "id"),
        web_search=searches.pop() if len(searches) == 1 else None,
        image_size=_loose_text(image, "size"),
        image_quality=_loose_text(image, "quality"),
    )


def _tool_item(item: object, offer: _Offer) -> ToolItemSeen | None:
    """A tool call item; None for other items, and for one that cannot be counted."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type")
    if not isinstance(kind, str) or not kind.endswith("_call"):
        return None
    try:
        action = item.get("action") if kind == "web_search_call" else None
        seen = ToolItemSeen(
            id=_text(item, "id"),
            type=kind,
            response_id=None,
            status=_optional_text(item, "status"),
            action=_loose_text(action, "type") if isinstance(action, dict) else None,
            container_id=_optional_text(item, "container_id")
            if kind == "code_interpreter_call"
            else None,
            size=_loose_text(item, "size") if kind == "image_generation_call" else None,
            quality=_loose_text(item, "quality") if kind == "image_generation_call" else None,
        )
    except _Malformed:
        return None
    return _offered(seen, offer)


def _offered(item: ToolItemSeen, offer: _Offer) -> ToolItemSeen:
    image = item.type == "image_generation_call"
    return replace(
        item,
        response_id=offer.response_id,
        tool=offer.web_search if item.type == "web_search_call" else None,
        size=item.size or (offer.image_size if image else None),
        quality=item.quality or (offer.image_quality if image else None),
    )


def _container(doc: dict[str, Any]) -> ContainerSeen:
    expires = doc.get("expires_after")
    if expires is not None and not isinstance(expires, dict):
        raise _Malformed("expires_after")
    return ContainerSeen(
        id=_text(doc, "id"),
        status=_text(doc, "status"),
        created_at=_time(doc, "created_at"),
        last_active_at=_optional_time(doc, "last_active_at"),
        memory_limit=_optional_text(doc, "memory_limit"),
        expires_after_minutes=None if expires is None else _optional_count(expires, "minutes"),
    )


def _chat(doc: dict[str, Any], usage: TokenUsage | None) -> ChatCompletionSeen:
    return ChatCompletionSeen(
        id=_text(doc, "id"),
        model=_optional_text(doc, "model"),
        created_at=_time(doc, "created"),
        service_tier=_optional_text(doc, "service_tier"),
        usage=usage,
    )


def _usage(doc: dict[str, Any], read: Callable[[dict[str, Any]], TokenUsage]) -> TokenUsage | None:
    usage = doc.get("usage")
    if usage is None:
        return None
    if not isinstance(usage, dict):
        raise _Malformed("usage")
    return read(usage)


def _response_usage(usage: dict[str, Any]) -> TokenUsage:
    """ResponseUsage: both breakdowns are required; cache writes are newer, 0 when absent."""
    given = _details(usage, "input_tokens_details")
    written = _details(usage, "output_tokens_details")
    if given is None or written is None:
        raise _Malformed("usage")
    return TokenUsage(
        input_tokens=_count(usage, "input_tokens"),
        cached_tokens=_count(given, "cached_tokens"),
        cache_write_tokens=_optional_count(given, "cache_write_tokens") or 0,
        output_tokens=_count(usage, "output_tokens"),
        reasoning_tokens=_count(written, "reasoning_tokens"),
        total_tokens=_count(usage, "total_tokens"),
    )


def _chat_usage(usage: dict[str, Any]) -> TokenUsage:
    """CompletionUsage: the breakdowns are optional, each count defaulting to 0."""
    prompt = _details(usage, "prompt_tokens_details") or {}
    completion = _details(usage, "completion_tokens_details") or {}
    return TokenUsage(
        input_tokens=_count(usage, "prompt_tokens"),
        cached_tokens=_optional_count(prompt, "cached_tokens") or 0,
        cache_write_tokens=_optional_count(prompt, "cache_write_tokens") or 0,
        output_tokens=_count(usage, "completion_tokens"),
        reasoning_tokens=_optional_count(completion, "reasoning_tokens") or 0,
        total_tokens=_count(usage, "total_tokens"),
    )


def _details(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, dict):
        raise _Malformed(name)
    return value


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name)
    if isinstance(value, str):
        return value
    raise _Malformed(name)


def _optional_text(doc: dict[str, Any], name: str) -> str | None:
    return None if doc.get(name) is None else _text(doc, name)


def _loose_text(doc: dict[str, Any], name: str) -> str | None:
    """A descriptive field outside the spec's schema: read when it is a string, else ignored."""
    value = doc.get(name)
    return value if isinstance(value, str) else None


def _count(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _Malformed(name)


def _optional_count(doc: dict[str, Any], name: str) -> int | None:
    return None if doc.get(name) is None else _count(doc, name)


def _time(doc: dict[str, Any], name: str) -> int:
    """A Unix time in seconds; the Responses spec types some as numbers, so whole seconds."""
    value = doc.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    raise _Malformed(name)


def _optional_time(doc: dict[str, Any], name: str) -> int | None:
    return None if doc.get(name) is None else _time(doc, name)
