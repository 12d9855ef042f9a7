"""The fields of Responses requests, and the settings a response echoes from its request."""

from __future__ import annotations

from typing import Any

from tollhouse_simulator.bodies import (
    Body,
    metadata,
    optional_bool,
    optional_int,
    optional_number,
    optional_object,
    optional_str,
    required_str,
)
from tollhouse_simulator.chat import served_tier
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.response_tools import parse_tool_choice, parse_tools
from tollhouse_simulator.tokens import is_reasoning_model

RESPONSE_FIELDS = frozenset(
    {
        "background",
        "context_management",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "moderation",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "prompt_cache_options",
        "prompt_cache_retention",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    }
)
TOKEN_COUNT_FIELDS = frozenset(
    {"conversation", "input", "instructions", "model", "parallel_tool_calls", "personality"}
    | {"previous_response_id", "reasoning", "text", "tool_choice", "tools", "truncation"}
)
COMPACT_FIELDS = frozenset(
    {"input", "instructions", "model", "previous_response_id", "prompt_cache_key"}
    | {"prompt_cache_options", "prompt_cache_retention", "service_tier"}
)
SERVICE_TIERS = ("auto", "default", "flex", "scale", "priority", "fast", "ultrafast")
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


def _choice(body: Body, key: str, allowed: tuple[str, ...]) -> str | None:
    value = body.get(key)
    if value is not None and value not in allowed:
        raise bad_request(
            f"Invalid value: '{value}'. Supported values are: "
            + ", ".join(f"'{name}'" for name in allowed)
            + ".",
            param=key,
            code="invalid_value",
        )
    return value


def _reasoning(body: Body, model: str) -> dict[str, Any]:
    value = optional_object(body, "reasoning") or {}
    effort = _choice(value, "effort", EFFORTS)
    if effort is not None and not is_reasoning_model(model):
        raise bad_request(
            f"Unsupported parameter: 'reasoning.effort' is not supported with the {model} model.",
            param="reasoning.effort",
            code="unsupported_parameter",
        )
    if effort is None and is_reasoning_model(model):
        effort = "medium"
    return {"effort": effort, "summary": value.get("summary")}


def settings(body: Body) -> dict[str, Any]:
    """The request's fields as the response object echoes them."""
    model = required_str(body, "model")
    tools = parse_tools(body)
    text = optional_object(body, "text") or {}
    out = {
        "instructions": optional_str(body, "instructions"),
        "max_output_tokens": optional_int(body, "max_output_tokens", 16),
        "max_tool_calls": optional_int(body, "max_tool_calls", 1),
        "model": model,
        "parallel_tool_calls": optional_bool(body, "parallel_tool_calls") is not False,
        "previous_response_id": optional_str(body, "previous_response_id"),
        "prompt_cache_key": optional_str(body, "prompt_cache_key"),
        "prompt_cache_retention": body.get("prompt_cache_retention"),
        "reasoning": _reasoning(body, model),
        "safety_identifier": optional_str(body, "safety_identifier"),
        "service_tier": served_tier(_choice(body, "service_tier", SERVICE_TIERS)),
        "store": optional_bool(body, "store") is not False,
        "temperature": _or(optional_number(body, "temperature", 0, 2), 1.0),
        "text": {"format": {"type": "text"}, "verbosity": "medium", **text},
        "tool_choice": parse_tool_choice(body, tools),
        "tools": tools,
        "top_logprobs": _or(optional_int(body, "top_logprobs", 0, 20), 0),
        "top_p": _or(optional_number(body, "top_p", 0, 1), 1.0),
        "truncation": _choice(body, "truncation", ("auto", "disabled")) or "disabled",
        "metadata": metadata(body) or {},
    }
    user = optional_str(body, "user")
    if user is not None:
        out["user"] = user
    return out


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
