"""A response's life: its object, output items and numbered events, planned on the clock."""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import partial
from typing import Any

from tollhouse_simulator import outputs as out
from tollhouse_simulator import tool_calls as calls
from tollhouse_simulator.inputs import Item, item_text
from tollhouse_simulator.response_tools import Planned, mcp_tool_names
from tollhouse_simulator.search import Hit
from tollhouse_simulator.timeline import Timeline
from tollhouse_simulator.tokens import (
    MESSAGE_OVERHEAD,
    PROMPT_OVERHEAD,
    count_tokens,
    prompt_tokens,
    reasoning_tokens,
    reply_text,
    truncate,
)

TERMINAL = frozenset({"completed", "incomplete", "failed", "cancelled"})
Searcher = Callable[[dict[str, Any], str], list[Hit]]
ContainerUse = Callable[[dict[str, Any], float], str]


@dataclass
class Turn:
    """What the response reads: earlier items (``prior`` of them, from the previous response
    or the conversation) followed by the new input."""

    context: list[Item]
    prior: int
    question: str
    instructions: str

    @property
    def new_items(self) -> list[Item]:
        return self.context[self.prior :]

    def prompt_tokens(self) -> int:
        return prompt_tokens(self.instructions, [item_text(item) for item in self.context])

    def cached_tokens(self) -> int:
        """The repeated prefix: what the previous response or the conversation already sent."""
        if not self.prior:
            return 0
        repeated = self.context[: self.prior]
        return PROMPT_OVERHEAD + sum(
            MESSAGE_OVERHEAD + count_tokens(item_text(i)) for i in repeated
        )


def _tool_results(turn: Turn) -> list[str]:
    """What the function outputs sent with this turn say, for the answer."""
    names = {i["call_id"]: i["name"] for i in turn.context if i.get("type") == "function_call"}
    return [
        f"The function {names.get(item['call_id'], 'function')} returned: {item_text(item)[:200]}"
        for item in turn.new_items
        if item["type"] == "function_call_output"
    ]


class ResponseRun:
    """Like runs, nothing happens in the background: creating a response plans its items on a
    Timeline and every reader advances it to the current clock first. A background response is
    ``queued`` for ``queued_seconds``, then ``in_progress`` for ``in_progress_seconds``, which
    its output items share; a streamed one starts ``in_progress`` and takes as long; any other
    response is finished when create answers. Every event is kept, numbered from 0, so a stream
    can be resumed after any ``sequence_number``.
    """

    def __init__(
        self,
        obj: dict[str, Any],
        turn: Turn,
        plan: list[Planned],
        *,
        include: Collection[str],
        search: Searcher,
        container: ContainerUse,
        on_finish: Callable[[ResponseRun, float], None],
    ) -> None:
        self.obj = obj
        self.turn = turn
        self.include = frozenset(include)
        self.output: list[Item] = []
        self.events: list[dict[str, Any]] = []
        self.timeline = Timeline()
        self._search = search
        self._container = container
        self._on_finish = on_finish
        self._at = 0.0  # the planned time of the phase being applied
        self._notes = _tool_results(turn)
        self._read = 0
        self._written = 0
        effort = (obj.get("reasoning") or {}).get("effort")
        self._reasoning = reasoning_tokens(obj["model"], effort, turn.question)
        self.plan = [Planned("reasoning"), *plan] if self._reasoning else plan

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def status(self) -> str:
        return str(self.obj["status"])

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def render(self, include: Collection[str] | None = None) -> dict[str, Any]:
        shown = copy.deepcopy(self.obj)
        shown["output"] = [
            out.render_item(item, self.include if include is None else include)
            for item in self.output
        ]
        return shown

    def advance(self, now: float) -> None:
        self.timeline.advance(now)

    # -- the Writer the output items use -------------------------------------------------

    def emit(self, event_type: str, **fields: Any) -> None:
        self.events.append({"type": event_type, "sequence_number": len(self.events), **fields})

    def add(self, item: Item) -> int:
        self.output.append(item)
        index = len(self.output) - 1
        rendered = out.render_item(item, self.include)
        self.emit("response.output_item.added", output_index=index, item=rendered)
        return index

    def done(self, index: int) -> None:
        rendered = out.render_item(self.output[index], self.include)
        self.emit("response.output_item.done", output_index=index, item=rendered)

    def note(self, text: str) -> None:
        self._notes.append(text)

    def notes(self) -> list[str]:
        return list(self._notes)

    def spend(self, *, read: int = 0, written: int = 0) -> None:
        self._read += read
        self._written += written

    # -- what clients ask for ------------------------------------------------------------

    def start(self, now: float, *, queued: float, span: float) -> None:
        """Plans the response: ``queued`` seconds waiting, then ``span`` seconds of work."""
        self._emit_response("response.created")
        if self.obj["background"]:
            self._emit_response("response.queued")
        begin = now + queued
        self.timeline.at(begin, self._in_progress)
        items = [self._phases(planned) for planned in self.plan]
        for number, phases in enumerate(items):
            first = begin + span * number / len(items)
            last = begin + span * (number + 1) / len(items)
            for step, phase in enumerate(phases):
                when = first + (last - first) * step / max(1, len(phases) - 1)
                self.timeline.at(when, partial(self._apply, phase))
        self.timeline.at(begin + span, self._finish)
        self.advance(now)

    def cancel(self) -> None:
        self.timeline.clear()
        for item in self.output:
            out.interrupt(item)
        self.obj["status"] = "cancelled"

    # -- planned transitions -------------------------------------------------------------

    def _emit_response(self, event_type: str) -> None:
        self.emit(event_type, response=self.render())

    def _apply(self, phase: out.Phase, at: float) -> None:
        self._at = at
        phase()

    def _in_progress(self, at: float) -> None:
        self.obj["status"] = "in_progress"
        self._emit_response("response.in_progress")

    def _phases(self, planned: Planned) -> list[out.Phase]:
        question, tool = self.turn.question, planned.tool
        kind = planned.kind
        if kind == "reasoning":
            return out.reasoning_phases(self, self._reasoning)
        if kind == "web_search":
            return calls.web_search_phases(self, planned.name)
        if kind == "file_search":
            return calls.file_search_phases(self, question, lambda: self._search(tool, question))
        if kind == "code_interpreter":
            return calls.code_phases(self, question, lambda: self._container(tool, self._at))
        if kind == "image_generation":
            return calls.image_phases(self, int(tool.get("partial_images") or 0))
        if kind == "mcp_list_tools":
            return calls.mcp_list_phases(self, tool["server_label"], mcp_tool_names(tool))
        if kind == "mcp_call":
            label = tool["server_label"]
            return calls.mcp_call_phases(self, label, planned.name, planned.approval)
        if kind == "mcp_approval_request":
            return calls.mcp_approval_phases(self, tool["server_label"], planned.name)
        if kind == "function":
            return out.function_phases(self, planned.name)
        return out.message_phases(self, self._reply)

    def _reply(self, notes: list[str]) -> tuple[str, bool]:
        """The answer, cut where the output would pass ``max_output_tokens``."""
        text = reply_text(self.obj["model"], self.turn.question, notes)
        limit = self.obj["max_output_tokens"]
        if limit is None:
            return text, True
        budget = limit - self._written - self._reasoning
        if count_tokens(text) <= budget:
            return text, True
        return truncate(text, max(0, budget)), False

    def _finish(self, at: float) -> None:
        limit = self.obj["max_output_tokens"]
        written = self._written + self._reasoning
        cut = any(item.get("status") == "incomplete" for item in self.output)
        if cut or (limit is not None and written > limit):
            self.obj.update(status="incomplete", incomplete_details={"reason": "max_output_tokens"})
        else:
            self.obj.update(status="completed", completed_at=int(at))
        self.obj["usage"] = self._usage(limit)
        self._emit_response(f"response.{self.status}")
        self._on_finish(self, at)

    def _usage(self, limit: int | None) -> dict[str, Any]:
        reasoning = self._reasoning if limit is None else min(self._reasoning, limit)
        written = self._written + self._reasoning
        output = written if limit is None else min(written, limit)
        input_tokens = self.turn.prompt_tokens() + self._read
        return {
            "input_tokens": input_tokens,
            "input_tokens_details": {
                "cached_tokens": self.turn.cached_tokens(),
                "cache_write_tokens": 0,
            },
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output,
        }
