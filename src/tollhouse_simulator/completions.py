"""The simulated chat completion: its answer, usage, chunks, and completions kept with store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from tollhouse_simulator.chat import ChatRequest, message_text, served_tier
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.store import Table, new_id
from tollhouse_simulator.tokens import (
    TOOL_CALL_OVERHEAD,
    chunks,
    count_tokens,
    prompt_tokens,
    reasoning_tokens,
    reply_text,
    truncate,
)

FINGERPRINT = "fp_simulator"
DELTAS = 3


def _prefix_key(model: str, messages: list[dict[str, Any]]) -> str:
    encoded = json.dumps([model, messages], sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def cached_tokens(request: ChatRequest, seen: set[str]) -> int:
    """Tokens of the longest leading run of messages an earlier request already sent (a
    multi-turn chat resending its history); then remembers this request's prefixes."""
    messages = request.messages
    cached = 0
    for length in range(len(messages) - 1, 0, -1):
        if _prefix_key(request.model, messages[:length]) in seen:
            cached = prompt_tokens("", [message_text(m) for m in messages[:length]])
            break
    for length in range(1, len(messages) + 1):
        seen.add(_prefix_key(request.model, messages[:length]))
    return cached


def _called_function(request: ChatRequest) -> str | None:
    choice = request.tool_choice
    last = request.messages[-1].get("role")
    if not request.functions or choice == "none" or last in ("tool", "function"):
        return None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if name not in request.functions:
            raise bad_request(
                f"Invalid 'tool_choice': no function named '{name}' is among the tools.",
                param="tool_choice",
            )
        return str(name)
    return request.functions[0]


def _answer(request: ChatRequest) -> tuple[str, str]:
    """The reply text and its finish reason."""
    question = next(
        (message_text(m) for m in reversed(request.messages) if m.get("role") == "user"), ""
    )
    names = {
        call.get("id"): (call.get("function") or {}).get("name", "function")
        for m in request.messages
        for call in m.get("tool_calls") or []
        if isinstance(call, dict)
    }
    notes = [
        f"The function {names.get(m.get('tool_call_id'), 'function')} returned: "
        f"{message_text(m)[:200]}"
        for m in request.messages
        if m.get("role") == "tool"
    ]
    text = reply_text(request.model, question, notes)
    thinking = reasoning_tokens(request.model, request.reasoning_effort, question)
    if request.max_tokens is not None and count_tokens(text) + thinking > request.max_tokens:
        return truncate(text, max(0, request.max_tokens - thinking)), "length"
    return text, "stop"


def complete(request: ChatRequest, now: float, cached: int) -> dict[str, Any]:
    """The chat.completion object answering the request.

    Like the other simulated models, this one is predictable: given function tools it calls the
    first one (unless told otherwise or answering tool results), else it answers in words.
    """
    question = next(
        (message_text(m) for m in reversed(request.messages) if m.get("role") == "user"), ""
    )
    thinking = reasoning_tokens(request.model, request.reasoning_effort, question)
    function = _called_function(request)
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    message["annotations"] = []
    if function is not None:
        call: dict[str, Any] = {"id": new_id("call_"), "type": "function"}
        call["function"] = {"name": function, "arguments": "{}"}
        message["tool_calls"] = [call]
        written, finish = TOOL_CALL_OVERHEAD + count_tokens(function), "tool_calls"
    else:
        message["content"], finish = _answer(request)
        written = count_tokens(message["content"])
    prompt = prompt_tokens("", [message_text(m) for m in request.messages])
    completion = request.n * (written + thinking)
    choices = [
        {"index": index, "message": json.loads(json.dumps(message)), "finish_reason": finish}
        for index in range(request.n)
    ]
    for choice in choices:
        choice["logprobs"] = None
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(now),
        "model": request.model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": request.n * thinking,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": served_tier(request.service_tier),
        "system_fingerprint": FINGERPRINT,
    }


def stream_chunks(completion: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    """The chat.completion.chunk objects that stream the completion, in order."""
    base = {key: completion[key] for key in ("id", "created", "model", "service_tier")}
    base |= {"object": "chat.completion.chunk", "system_fingerprint": FINGERPRINT}
    if include_usage:
        base["usage"] = None

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**base, "choices": [choice]}

    found = []
    for choice in completion["choices"]:
        index, message = choice["index"], choice["message"]
        calls = message.get("tool_calls")
        if calls:
            opened = [{"index": 0, **calls[0], "function": {**calls[0]["function"]}}]
            opened[0]["function"]["arguments"] = ""
            found.append(chunk(index, {"role": "assistant", "content": None, "tool_calls": opened}))
            arguments = calls[0]["function"]["arguments"]
            tail = [{"index": 0, "function": {"arguments": arguments}}]
            found.append(chunk(index, {"tool_calls": tail}))
        else:
            found.append(chunk(index, {"role": "assistant", "content": "", "refusal": None}))
            for piece in chunks(message["content"], DELTAS):
                found.append(chunk(index, {"content": piece}))
        found.append(chunk(index, {}, choice["finish_reason"]))
    if include_usage:
        found.append({**base, "choices": [], "usage": completion["usage"]})
    return found


@dataclass
class StoredCompletion:
    """A completion made with ``store: true``, and the messages it answered."""

    completion: dict[str, Any]
    metadata: dict[str, str]
    messages: Table[dict[str, Any]] = field(default_factory=Table)

    @property
    def id(self) -> str:
        return str(self.completion["id"])

    def render(self) -> dict[str, Any]:
        return {**json.loads(json.dumps(self.completion)), "metadata": dict(self.metadata)}


def store_completion(completion: dict[str, Any], request: ChatRequest) -> StoredCompletion:
    stored = StoredCompletion(completion, dict(request.metadata))
    for index, message in enumerate(request.messages):
        entry_id = f"{stored.id}-{index}"
        content = message.get("content")
        parts = content if isinstance(content, list) else None
        entry = {
            "id": entry_id,
            "role": message["role"],
            "content": message_text({"content": content}) if parts else content,
            "refusal": None,
            "name": message.get("name"),
            "content_parts": parts,
        }
        if message.get("tool_calls"):
            entry["tool_calls"] = message["tool_calls"]
        stored.messages.insert(entry_id, completion["created"], entry)
    return stored
