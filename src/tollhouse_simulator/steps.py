"""Run step objects and the tool calls they carry, in the shapes the API returns."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tollhouse_simulator.search import Hit
from tollhouse_simulator.tokens import count_tokens
from tollhouse_simulator.tools import DEFAULT_RANKING

SEARCH_CONTENT_INCLUDE = "step_details.tool_calls[*].file_search.results[*].content"


@dataclass(frozen=True)
class Planned:
    """One step a run will take: a tool call (``code_interpreter``, ``file_search``,
    ``function``) or the answer (``message``)."""

    kind: str
    function_name: str = ""


def plan_first_leg(tools: list[dict[str, Any]], tool_choice: Any) -> list[Planned]:
    """The steps before the run answers or waits: built-in tools first, then a function call
    (which ends the leg in ``requires_action``) or the message."""
    functions = [t["function"]["name"] for t in tools if t["type"] == "function"]
    if tool_choice == "none":
        return [Planned("message")]
    if isinstance(tool_choice, dict):
        if tool_choice["type"] == "function":
            return [Planned("function", tool_choice["function"]["name"])]
        return [Planned(tool_choice["type"]), Planned("message")]
    kinds = {t["type"] for t in tools}
    plan = [Planned(k) for k in ("code_interpreter", "file_search") if k in kinds]
    plan.append(Planned("function", functions[0]) if functions else Planned("message"))
    return plan


def step_object(
    *, step_id: str, run: dict[str, Any], created_at: int, details: dict[str, Any]
) -> dict[str, Any]:
    return {
        "id": step_id,
        "object": "thread.run.step",
        "created_at": created_at,
        "assistant_id": run["assistant_id"],
        "thread_id": run["thread_id"],
        "run_id": run["id"],
        "type": details["type"],
        "status": "in_progress",
        "step_details": details,
        "last_error": None,
        "expired_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "metadata": {},
        "usage": None,
    }


@dataclass(frozen=True)
class ToolWork:
    """What a tool call's outcome gives the run."""

    delta: dict[str, Any] | None  # the step delta streaming the outcome, if it streams
    read_tokens: int  # tokens of the outcome the model reads afterwards
    completion_tokens: int  # tokens the model wrote to make the call
    note: str  # what the answer says about it


def run_code(call: dict[str, Any], question: str) -> ToolWork:
    """Adds the logs output to a code interpreter call."""
    code = call["code_interpreter"]["input"]
    _, logs = code_interpreter_call(call["id"], question)
    call["code_interpreter"]["outputs"].append(logs_output(logs))
    return ToolWork(
        delta=logs_delta(logs),
        read_tokens=count_tokens(f"{code} {logs}"),
        completion_tokens=count_tokens(code),
        note=f"The code interpreter printed {logs.strip()}.",
    )


def record_search(call: dict[str, Any], hits: list[Hit], question: str) -> ToolWork:
    """Puts the hits into a file search call (they stream with the completed step)."""
    call["file_search"]["results"] = search_results(hits)
    names = sorted({hit.filename for hit in hits})
    return ToolWork(
        delta=None,
        read_tokens=sum(count_tokens(hit.text) for hit in hits),
        completion_tokens=count_tokens(question),
        note=f"File search found {len(hits)} passages in {names or 'no files'}.",
    )


def search_options(tools: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """max_num_results and ranking_options of the run's file search tool."""
    for tool in tools:
        if tool["type"] == "file_search":
            options = tool["file_search"]
            return options.get("max_num_results", 20), options["ranking_options"]
    return 20, dict(DEFAULT_RANKING)


def render_step(step: dict[str, Any], include_search_content: bool) -> dict[str, Any]:
    """A copy of the step; file-search results carry ``content`` only when asked for."""
    rendered = copy.deepcopy(step)
    if not include_search_content and rendered["type"] == "tool_calls":
        for call in rendered["step_details"]["tool_calls"]:
            if call["type"] == "file_search":
                for result in call["file_search"].get("results", []):
                    result.pop("content", None)
    return rendered


def tool_calls_details(calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "tool_calls", "tool_calls": calls}


def message_creation_details(message_id: str) -> dict[str, Any]:
    return {"type": "message_creation", "message_creation": {"message_id": message_id}}


def code_interpreter_call(call_id: str, question: str) -> tuple[dict[str, Any], str]:
    """A call counting the question's words, and the logs it prints."""
    code = f"text = {json.dumps(question[:200])}\nprint(len(text.split()))"
    logs = f"{len(question[:200].split())}\n"
    call = {
        "id": call_id,
        "type": "code_interpreter",
        "code_interpreter": {"input": code, "outputs": []},
    }
    return call, logs


def logs_output(logs: str) -> dict[str, Any]:
    return {"type": "logs", "logs": logs}


def logs_delta(logs: str) -> dict[str, Any]:
    """The delta adding the logs output to the first (only) code interpreter call."""
    output = {"index": 0, **logs_output(logs)}
    return {"index": 0, "type": "code_interpreter", "code_interpreter": {"outputs": [output]}}


def file_search_call(call_id: str, ranking_options: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "file_search",
        "file_search": {"ranking_options": dict(ranking_options), "results": []},
    }


def search_results(hits: Iterable[Hit]) -> list[dict[str, Any]]:
    return [
        {
            "file_id": hit.file_id,
            "file_name": hit.filename,
            "score": hit.score,
            "content": [{"type": "text", "text": hit.text}],
        }
        for hit in hits
    ]


def search_call_delta(call_id: str) -> dict[str, Any]:
    """File search calls stream as an empty object; results come with the completed step."""
    return {"index": 0, "id": call_id, "type": "file_search", "file_search": {}}


def function_call(call_id: str, name: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": "{}", "output": None},
    }


def call_delta(index: int, call: dict[str, Any]) -> dict[str, Any]:
    """The first delta of a tool call: its index, id, type and what is known so far."""
    return {"index": index, **copy.deepcopy(call)}


def required_action(steps: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The run's ``required_action`` for the function calls of the given (open) steps."""
    calls = [
        {
            "id": call["id"],
            "type": "function",
            "function": {
                "name": call["function"]["name"],
                "arguments": call["function"]["arguments"],
            },
        }
        for step in steps
        for call in step["step_details"]["tool_calls"]
        if call["type"] == "function"
    ]
    return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}


def step_delta(step_id: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": step_id,
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": calls}},
    }


def message_delta(message_id: str, text: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "object": "thread.message.delta",
        "delta": {
            "content": [{"index": 0, "type": "text", "text": {"value": text, "annotations": []}}]
        },
    }
