"""A run's life: the transitions it is planned to go through, the steps and message it makes.

Nothing runs in the background. Creating a run (or resuming it with tool outputs) plans its
transitions on a Timeline; every reader advances the run to the current clock first, so
polling clients and streams see the same history whenever they look.

A leg is ``queued`` for ``queued_seconds``, then ``in_progress`` for ``in_progress_seconds``,
which its steps share equally; it ends ``completed`` (or ``incomplete`` past a token limit) or
``requires_action`` when a function is called. Submitting tool outputs starts a second leg
(queued, in progress, the message). A ``requires_action`` run expires at ``expires_at``; a
cancelled run is ``cancelling`` for ``cancelling_seconds``, then ``cancelled``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from tollhouse_simulator import steps as st
from tollhouse_simulator.config import SimulatorConfig
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.messages import message_object, text_content
from tollhouse_simulator.search import Hit
from tollhouse_simulator.store import Table, new_id
from tollhouse_simulator.timeline import Timeline
from tollhouse_simulator.tokens import (
    TOOL_CALL_OVERHEAD,
    add_usage,
    chunks,
    count_tokens,
    exceeded_limit,
    reply_text,
    usage,
)

Searcher = Callable[[list[str], str, int, float], list[Hit]]
LIVE = frozenset({"queued", "in_progress", "requires_action", "cancelling"})
LEG_ENDS = frozenset(
    f"thread.run.{status}"
    for status in ("completed", "incomplete", "failed", "cancelled", "expired", "requires_action")
)
DELTAS_PER_MESSAGE = 3
_CLOSED_AT = {"completed": "completed_at", "cancelled": "cancelled_at", "expired": "expired_at"}


@dataclass
class RunInputs:
    """What the run reads at creation: the question, the prompt size, where to search."""

    question: str
    prompt_tokens: int
    vector_store_ids: list[str]
    include_search_content: bool


class Run:
    def __init__(
        self,
        obj: dict[str, Any],
        inputs: RunInputs,
        *,
        messages: Table[dict[str, Any]],
        search: Searcher,
        config: SimulatorConfig,
    ) -> None:
        self.obj = obj
        self.inputs = inputs
        self.steps: Table[dict[str, Any]] = Table()
        self.timeline = Timeline()
        self._messages = messages
        self._search = search
        self._config = config
        self._fed_back = 0  # tokens of tool results the model reads before answering
        self._notes: list[str] = []  # what the tools found, for the answer
        self._open_steps: list[str] = []
        self._open_message: str | None = None
        self._reply: list[str] = []
        self._usage: dict[str, dict[str, int]] = {}  # planned step usage, shown once closed

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def status(self) -> str:
        return str(self.obj["status"])

    @property
    def live(self) -> bool:
        return self.status in LIVE

    def render(self) -> dict[str, Any]:
        return copy.deepcopy(self.obj)

    def advance(self, now: float) -> None:
        self.timeline.advance(now)

    def _emit(self, name: str, data: Callable[[], dict[str, Any]]) -> None:
        self.timeline.emit(name, data)

    def _emit_run(self, name: str) -> None:
        self._emit(name, self.render)

    def _emit_step(self, name: str, step: dict[str, Any]) -> None:
        self._emit(name, lambda: st.render_step(step, self.inputs.include_search_content))

    # -- what clients ask for ------------------------------------------------------------

    def start(self, now: float) -> None:
        self._emit_run("thread.run.created")
        self._emit_run("thread.run.queued")
        self._plan_leg(now, st.plan_first_leg(self.obj["tools"], self.obj["tool_choice"]))

    def cancel(self, now: float) -> None:
        if self.status not in ("queued", "in_progress", "requires_action"):
            raise bad_request(f"Cannot cancel run with status '{self.status}'.")
        self.timeline.clear()
        self.obj["status"] = "cancelling"
        self._emit_run("thread.run.cancelling")
        self.timeline.at(now + self._config.cancelling_seconds, self._cancelled)

    def check_tool_outputs(self, outputs: dict[str, str]) -> None:
        if self.status != "requires_action":
            raise bad_request(f'Runs in status "{self.status}" do not accept tool outputs.')
        expected = [
            c["id"] for c in self.obj["required_action"]["submit_tool_outputs"]["tool_calls"]
        ]
        if sorted(outputs) != sorted(expected):
            raise bad_request(
                f"Expected tool outputs for call_ids {expected}, got {list(outputs)}",
                param="tool_outputs",
            )

    def submit_tool_outputs(self, outputs: dict[str, str], now: float) -> None:
        self.check_tool_outputs(outputs)
        self.timeline.clear()
        for step_id in list(self._open_steps):
            step = self._step(step_id)
            for call in step["step_details"]["tool_calls"]:
                output = outputs[call["id"]]
                call["function"]["output"] = output
                self._fed_back += count_tokens(output)
                name = call["function"]["name"]
                self._notes.append(f"The function {name} returned: {output[:200]}")
            self._close_step(step, "completed", now)
        self.obj.update(status="queued", required_action=None)
        self._emit_run("thread.run.queued")
        self._plan_leg(now, [st.Planned("message")])

    # -- planning ------------------------------------------------------------------------

    def _plan_leg(self, start: float, plan: list[st.Planned]) -> None:
        begin = start + self._config.queued_seconds
        span = self._config.in_progress_seconds
        bounds = [begin + span * i / len(plan) for i in range(len(plan) + 1)]
        self.timeline.at(begin, self._in_progress)
        for index, item in enumerate(plan):
            first, last = bounds[index], bounds[index + 1]
            if item.kind == "message":
                self._plan_message(first, last)
            elif item.kind == "function":
                self.timeline.at(first, partial(self._function_step, name=item.function_name))
            else:
                self._plan_tool(item.kind, first, last)
        finish = self._requires_action if plan[-1].kind == "function" else self._finish
        self.timeline.at(bounds[-1], finish)

    def _plan_tool(self, kind: str, first: float, last: float) -> None:
        step_id, call_id = new_id("step_"), new_id("call_")
        self.timeline.at(first, lambda at: self._tool_started(at, kind, step_id, call_id))
        self.timeline.at((first + last) / 2, lambda at: self._tool_worked(step_id))
        self.timeline.at(last, lambda at: self._close_step(self._step(step_id), "completed", at))

    def _plan_message(self, first: float, last: float) -> None:
        step_id, message_id = new_id("step_"), new_id("msg_")
        self.timeline.at(first, lambda at: self._message_started(at, step_id, message_id))
        for index in range(DELTAS_PER_MESSAGE):
            when = first + (last - first) * (index + 1) / (DELTAS_PER_MESSAGE + 1)
            self.timeline.at(when, partial(self._message_delta, message_id=message_id, index=index))
        self.timeline.at(last, lambda at: self._message_completed(at, step_id, message_id))

    # -- planned transitions -------------------------------------------------------------

    def _in_progress(self, at: float) -> None:
        self.obj["status"] = "in_progress"
        if self.obj["started_at"] is None:
            self.obj["started_at"] = int(at)
        self._emit_run("thread.run.in_progress")

    def _new_step(self, at: float, step_id: str, details: dict[str, Any]) -> dict[str, Any]:
        step = st.step_object(step_id=step_id, run=self.obj, created_at=int(at), details=details)
        self.steps.insert(step_id, int(at), step)
        self._open_steps.append(step_id)
        self._emit_step("thread.run.step.created", step)
        self._emit_step("thread.run.step.in_progress", step)
        return step

    def _step(self, step_id: str) -> dict[str, Any]:
        step = self.steps.get(step_id)
        assert step is not None, step_id
        return step

    def _tool_started(self, at: float, kind: str, step_id: str, call_id: str) -> None:
        step = self._new_step(at, step_id, st.tool_calls_details([]))
        if kind == "code_interpreter":
            call, _ = st.code_interpreter_call(call_id, self.inputs.question)
            delta = st.call_delta(0, call)
        else:
            call = st.file_search_call(call_id, st.search_options(self.obj["tools"])[1])
            delta = st.search_call_delta(call_id)
        step["step_details"]["tool_calls"].append(call)
        self._emit("thread.run.step.delta", lambda: st.step_delta(step_id, [delta]))

    def _tool_worked(self, step_id: str) -> None:
        call = self._step(step_id)["step_details"]["tool_calls"][0]
        question = self.inputs.question
        prompt = self._prompt()  # what the model read before calling the tool
        if call["type"] == "code_interpreter":
            work = st.run_code(call, question)
        else:
            limit, ranking = st.search_options(self.obj["tools"])
            threshold = ranking.get("score_threshold", 0.0)
            hits = self._search(self.inputs.vector_store_ids, question, limit, threshold)
            work = st.record_search(call, hits, question)
        delta = work.delta
        if delta is not None:
            self._emit("thread.run.step.delta", lambda: st.step_delta(step_id, [delta]))
        self._fed_back += work.read_tokens
        self._notes.append(work.note)
        self._usage[step_id] = usage(prompt, work.completion_tokens + TOOL_CALL_OVERHEAD)

    def _function_step(self, at: float, *, name: str) -> None:
        step_id = new_id("step_")
        step = self._new_step(at, step_id, st.tool_calls_details([]))
        call = st.function_call(new_id("call_"), name)
        step["step_details"]["tool_calls"].append(call)
        self._usage[step_id] = usage(self._prompt(), count_tokens(name) + TOOL_CALL_OVERHEAD)
        delta = st.call_delta(0, call)
        self._emit("thread.run.step.delta", lambda: st.step_delta(step_id, [delta]))

    def _message_started(self, at: float, step_id: str, message_id: str) -> None:
        reply = reply_text(self.obj["model"], self.inputs.question, self._notes)
        self._reply = chunks(reply, DELTAS_PER_MESSAGE)
        message = message_object(
            message_id=message_id,
            thread_id=self.obj["thread_id"],
            created_at=int(at),
            role="assistant",
            content=[],
            assistant_id=self.obj["assistant_id"],
            run_id=self.id,
            status="in_progress",
        )
        self._messages.insert(message_id, int(at), message)
        self._open_message = message_id
        self._new_step(at, step_id, st.message_creation_details(message_id))
        self._usage[step_id] = usage(self._prompt(), count_tokens(reply))
        self._emit("thread.message.created", lambda: copy.deepcopy(message))
        self._emit("thread.message.in_progress", lambda: copy.deepcopy(message))

    def _message_delta(self, at: float, *, message_id: str, index: int) -> None:
        message = self._messages.get(message_id)
        if message is None or index >= len(self._reply):
            return
        piece = self._reply[index]
        if not message["content"]:
            message["content"].append(text_content(""))
        message["content"][0]["text"]["value"] += piece
        self._emit("thread.message.delta", lambda: st.message_delta(message_id, piece))

    def _message_completed(self, at: float, step_id: str, message_id: str) -> None:
        message = self._messages.get(message_id)
        if message is not None:
            message["content"] = [text_content("".join(self._reply))]
            message.update(status="completed", completed_at=int(at))
            self._emit("thread.message.completed", lambda: copy.deepcopy(message))
        self._open_message = None
        self._close_step(self._step(step_id), "completed", at)

    def _close_step(self, step: dict[str, Any], status: str, at: float) -> None:
        """Ends a step; its usage (planned when it started) becomes visible now."""
        planned = self._usage.pop(step["id"], None) or usage(self._prompt(), 0)
        if status == "cancelled":
            planned = usage(planned["prompt_tokens"], 0)
        step.update(status=status, usage=planned)
        step[_CLOSED_AT[status]] = int(at)
        self._open_steps.remove(step["id"])
        self._emit_step(f"thread.run.step.{status}", step)

    def _prompt(self) -> int:
        return self.inputs.prompt_tokens + self._fed_back

    def _requires_action(self, at: float) -> None:
        open_steps = [self._step(step_id) for step_id in self._open_steps]
        self.obj.update(status="requires_action", required_action=st.required_action(open_steps))
        self._emit_run("thread.run.requires_action")
        self.timeline.at(float(self.obj["expires_at"]), self._expired)

    def _finish(self, at: float) -> None:
        limits = self.obj["max_prompt_tokens"], self.obj["max_completion_tokens"]
        exceeded = exceeded_limit(self._total_usage(), *limits)
        if exceeded is not None:
            self._end("incomplete", incomplete_details={"reason": exceeded})
        else:
            self._end("completed", completed_at=int(at))

    def _cancelled(self, at: float) -> None:
        for step_id in list(self._open_steps):
            self._close_step(self._step(step_id), "cancelled", at)
        message = self._messages.get(self._open_message or "")
        if message is not None:
            message.update(
                status="incomplete",
                incomplete_at=int(at),
                incomplete_details={"reason": "run_cancelled"},
            )
            self._emit("thread.message.incomplete", lambda: copy.deepcopy(message))
        self._end("cancelled", cancelled_at=int(at))

    def _expired(self, at: float) -> None:
        for step_id in list(self._open_steps):
            self._close_step(self._step(step_id), "expired", at)
        self._end("expired")

    def _total_usage(self) -> dict[str, int]:
        return add_usage(step["usage"] for step in self.steps if step["status"] != "in_progress")

    def _end(self, status: str, **fields: Any) -> None:
        self.timeline.clear()
        self.obj.update(
            status=status,
            required_action=None,
            expires_at=None,
            usage=self._total_usage(),
            **fields,
        )
        self._emit_run(f"thread.run.{status}")
