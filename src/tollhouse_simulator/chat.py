"""Chat completion requests: the fields, the messages and the options the answer depends on."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tollhouse_simulator.bodies import (
    Body,
    invalid_type,
    metadata,
    missing,
    optional_bool,
    optional_int,
    optional_number,
    optional_object,
    optional_str,
    required_str,
)
from tollhouse_simulator.errors import bad_request

CHAT_FIELDS = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "messages",
        "metadata",
        "modalities",
        "model",
        "moderation",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
    }
)
ROLES = ("developer", "system", "user", "assistant", "tool", "function")
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast")


def served_tier(requested: str | None) -> str:
    """The tier an answer reports: the project default for ``auto``; fast mode as priority."""
    if requested in (None, "auto"):
        return "default"
    return "priority" if requested == "fast" else str(requested)


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    n: int = 1
    functions: list[str] = field(default_factory=list)
    tool_choice: Any = "auto"
    max_tokens: int | None = None
    store: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    service_tier: str | None = None
    stream: bool = False
    include_usage: bool = False
    reasoning_effort: str | None = None


def parse_chat(body: Body) -> ChatRequest:
    model = required_str(body, "model")
    messages = body.get("messages")
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    if not messages:
        raise bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but "
            "got an empty array instead.",
            param="messages",
            code="empty_array",
        )
    for index, message in enumerate(messages):
        _check_message(message, f"messages[{index}]")
    tier = body.get("service_tier")
    if tier is not None and tier not in SERVICE_TIERS:
        raise bad_request(
            f"Invalid value: '{tier}'. Supported values are: "
            + ", ".join(f"'{t}'" for t in SERVICE_TIERS)
            + ".",
            param="service_tier",
            code="invalid_value",
        )
    stream = bool(optional_bool(body, "stream"))
    options = optional_object(body, "stream_options")
    if options is not None and not stream:
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    optional_number(body, "temperature", 0, 2)
    optional_number(body, "top_p", 0, 1)
    limits = [optional_int(body, key, 1) for key in ("max_completion_tokens", "max_tokens")]
    return ChatRequest(
        model=model,
        messages=messages,
        n=optional_int(body, "n", 1, 128) or 1,
        functions=_functions(body),
        tool_choice=_tool_choice(body),
        max_tokens=next((limit for limit in limits if limit is not None), None),
        store=bool(optional_bool(body, "store")),
        metadata=metadata(body) or {},
        service_tier=tier,
        stream=stream,
        include_usage=bool(optional_bool(options or {}, "include_usage")),
        reasoning_effort=optional_str(body, "reasoning_effort"),
    )


def _tool_choice(body: Body) -> Any:
    value = body.get("tool_choice", "auto")
    if value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and value.get("type") in ("function", "allowed_tools", "custom"):
        return value
    raise bad_request(
        "Invalid 'tool_choice': expected 'none', 'auto', 'required' or an object naming a tool.",
        param="tool_choice",
        code="invalid_value",
    )


def _check_message(message: object, param: str) -> None:
    if not isinstance(message, dict):
        raise invalid_type(param, "an object", message)
    role = message.get("role")
    if role not in ROLES:
        raise bad_request(
            f"Invalid value: '{role}'. Supported values are: "
            + ", ".join(f"'{r}'" for r in ROLES)
            + ".",
            param=f"{param}.role",
            code="invalid_value",
        )
    content = message.get("content")
    if content is None and not (role == "assistant" and message.get("tool_calls")):
        raise missing(f"{param}.content")
    if content is not None and not isinstance(content, str | list):
        raise invalid_type(f"{param}.content", "a string or an array", content)
    if role == "tool" and not isinstance(message.get("tool_call_id"), str):
        raise missing(f"{param}.tool_call_id")


def _functions(body: Body) -> list[str]:
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)
    names = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(tool, dict) and tool.get("type") == "custom":
            continue
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise missing(f"tools[{index}].function.name")
        names.append(function["name"])
    return names


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        content = "\n".join(text for text in texts if isinstance(text, str))
    functions = [
        call.get("function") or {}
        for call in message.get("tool_calls") or []
        if isinstance(call, dict)
    ]
    calls = " ".join(f"{f.get('name', '')} {f.get('arguments', '')}" for f in functions)
    return " ".join(part for part in (content or "", calls) if part)
