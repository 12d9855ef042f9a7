"""Output items a response writes itself (reasoning, function calls, the answer) and ``include``."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.store import new_id
from tollhouse_simulator.tokens import TOOL_CALL_OVERHEAD, chunks, count_tokens

Item = dict[str, Any]
# An item's life is an ordered list of phases that the response spreads over the item's share
# of its time, so a poll between two phases sees the item half done, as a stream does.
Phase = Callable[[], None]

INCLUDABLE = (
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
)
TEXT_DELTAS = 3
# Schemas without an "incomplete" status call an interrupted item "failed".
_INTERRUPTED = {"web_search_call": "failed", "image_generation_call": "failed"}


class Writer(Protocol):
    """What an output item needs from the response it belongs to."""

    def emit(self, event_type: str, **fields: Any) -> None: ...

    def add(self, item: Item) -> int: ...

    def done(self, index: int) -> None: ...

    def note(self, text: str) -> None: ...

    def spend(self, *, read: int = 0, written: int = 0) -> None: ...

    def notes(self) -> list[str]: ...


def parse_include(values: Iterable[object], param: str = "include") -> frozenset[str]:
    found = set()
    for value in values:
        if value not in INCLUDABLE:
            raise bad_request(
                f"Invalid value: '{value}'. Supported values are: "
                + ", ".join(f"'{name}'" for name in INCLUDABLE)
                + ".",
                param=param,
                code="invalid_value",
            )
        found.add(str(value))
    return frozenset(found)


def render_item(item: Item, include: Collection[str]) -> Item:
    """A copy of the item showing the optional parts only when asked for."""
    shown = copy.deepcopy(item)
    kind = shown.get("type")
    if kind == "file_search_call" and "file_search_call.results" not in include:
        shown["results"] = None
    elif kind == "web_search_call" and "web_search_call.action.sources" not in include:
        shown.get("action", {}).pop("sources", None)
    elif kind == "code_interpreter_call" and "code_interpreter_call.outputs" not in include:
        shown["outputs"] = None
    elif kind == "reasoning" and "reasoning.encrypted_content" not in include:
        shown.pop("encrypted_content", None)
    elif kind == "message" and "message.output_text.logprobs" not in include:
        for part in shown.get("content", []):
            part.pop("logprobs", None)
    return shown


def interrupt(item: Item) -> None:
    """Marks an item left unfinished by a cancelled response."""
    if item.get("status") not in ("completed", None):
        item["status"] = _INTERRUPTED.get(str(item.get("type")), "incomplete")


def item_events(w: Writer, index: int, item_id: str, *names: str) -> None:
    for name in names:
        w.emit(name, output_index=index, item_id=item_id)


def complete_item(w: Writer, index: int, item: Item, **fields: Any) -> None:
    item.update(status="completed", **fields)
    w.done(index)


def reasoning_phases(w: Writer, tokens: int) -> list[Phase]:
    item: Item = {"id": new_id("rs_"), "type": "reasoning", "summary": [], "status": "in_progress"}
    index = -1

    def start() -> None:
        nonlocal index
        index = w.add(item)

    def end() -> None:
        digest = base64.b64encode(f"reasoned {tokens} tokens".encode()).decode()
        complete_item(w, index, item, encrypted_content=digest)

    return [start, end]


def function_phases(w: Writer, name: str) -> list[Phase]:
    item_id = new_id("fc_")
    item: Item = {"id": item_id, "type": "function_call", "call_id": new_id("call_"), "name": name}
    item.update(arguments="", status="in_progress")
    arguments = "{}"
    index = -1

    def start() -> None:
        nonlocal index
        index = w.add(item)

    def call() -> None:
        item["arguments"] = arguments
        fields = {"output_index": index, "item_id": item_id}
        w.emit("response.function_call_arguments.delta", **fields, delta=arguments)
        w.emit("response.function_call_arguments.done", **fields, name=name, arguments=arguments)

    def end() -> None:
        w.spend(written=TOOL_CALL_OVERHEAD + count_tokens(name) + count_tokens(arguments))
        complete_item(w, index, item)

    return [start, call, end]


def message_phases(w: Writer, reply: Callable[[list[str]], tuple[str, bool]]) -> list[Phase]:
    """The answer; ``reply`` writes it from the tools' notes once they are all in, and says
    whether it is whole (False when cut at the output token limit)."""
    item_id = new_id("msg_")
    item: Item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant"}
    item["content"] = []
    pieces: list[str] = []
    whole = True
    index = -1

    def fields() -> dict[str, Any]:
        return {"item_id": item_id, "output_index": index, "content_index": 0}

    def start() -> None:
        nonlocal index, whole
        text, whole = reply(w.notes())
        pieces.extend(chunks(text, TEXT_DELTAS))
        index = w.add(item)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item["content"].append(part)
        w.emit("response.content_part.added", **fields(), part=_text_part(part))

    def delta(number: int) -> Phase:
        def write() -> None:
            if number < len(pieces):
                item["content"][0]["text"] += pieces[number]
                w.emit("response.output_text.delta", **fields(), delta=pieces[number], logprobs=[])

        return write

    def end() -> None:
        text = "".join(pieces)
        part = item["content"][0]
        part["text"] = text
        w.spend(written=count_tokens(text))
        w.emit("response.output_text.done", **fields(), text=text, logprobs=[])
        w.emit("response.content_part.done", **fields(), part=_text_part(part))
        item["status"] = "completed" if whole else "incomplete"
        w.done(index)

    return [start, *(delta(n) for n in range(TEXT_DELTAS)), end]


def _text_part(part: dict[str, Any]) -> dict[str, Any]:
    return {key: copy.deepcopy(value) for key, value in part.items() if key != "logprobs"}
