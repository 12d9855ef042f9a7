"""Validates tool definitions, tool resources and the run options that shape tool use."""

from __future__ import annotations

import re
from typing import Any

from tollhouse_simulator.bodies import (
    Body,
    invalid_type,
    missing,
    optional_int,
    optional_object,
    string_list,
)
from tollhouse_simulator.errors import bad_request

TOOL_TYPES = ("code_interpreter", "file_search", "function")
DEFAULT_RANKING = {"ranker": "default_2024_08_21", "score_threshold": 0.0}
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def tools(body: Body, *, max_items: int) -> list[dict[str, Any]] | None:
    """The ``tools`` array, normalised the way the API echoes it; None when absent."""
    value = body.get("tools")
    if value is None:
        return None
    if not isinstance(value, list):
        raise invalid_type("tools", "an array", value)
    if len(value) > max_items:
        raise bad_request(
            f"Invalid 'tools': array too long. Expected an array with maximum length "
            f"{max_items}, but got an array with length {len(value)} instead.",
            param="tools",
            code="array_above_max_length",
        )
    return [_tool(item, f"tools[{index}]") for index, item in enumerate(value)]


def _tool(item: object, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid_type(param, "an object", item)
    kind = item.get("type")
    if kind not in TOOL_TYPES:
        raise bad_request(
            f"Invalid value: '{kind}'. Supported values are: 'code_interpreter', "
            "'file_search', and 'function'.",
            param=f"{param}.type",
            code="invalid_value",
        )
    if kind == "code_interpreter":
        return {"type": "code_interpreter"}
    if kind == "file_search":
        options = optional_object(item, "file_search", prefix=param + ".") or {}
        max_results = optional_int(options, "max_num_results", 1, 50)
        ranking = optional_object(options, "ranking_options", prefix=param + ".file_search.")
        file_search: dict[str, Any] = {
            "ranking_options": _ranking(ranking or {}, f"{param}.file_search.ranking_options")
        }
        if max_results is not None:
            file_search["max_num_results"] = max_results
        return {"type": "file_search", "file_search": file_search}
    function = optional_object(item, "function", prefix=param + ".")
    if function is None:
        raise missing(f"{param}.function")
    name = function.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise bad_request(
            f"Invalid '{param}.function.name': string does not match pattern. Expected a "
            "string that matches the pattern '^[a-zA-Z0-9_-]+$' with at most 64 characters.",
            param=f"{param}.function.name",
            code="invalid_value",
        )
    return {"type": "function", "function": {"strict": False, **function}}


def _ranking(value: dict[str, Any], param: str) -> dict[str, Any]:
    ranker = value.get("ranker", DEFAULT_RANKING["ranker"])
    if ranker == "auto":
        ranker = DEFAULT_RANKING["ranker"]
    if ranker != DEFAULT_RANKING["ranker"]:
        raise bad_request(
            f"Invalid '{param}.ranker': expected 'auto' or 'default_2024_08_21'.",
            param=param + ".ranker",
            code="invalid_value",
        )
    threshold = value.get("score_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise invalid_type(param + ".score_threshold", "a number", threshold)
    if not 0 <= threshold <= 1:
        raise bad_request(
            f"Invalid '{param}.score_threshold': expected a value between 0 and 1.",
            param=param + ".score_threshold",
            code="invalid_value",
        )
    return {"ranker": ranker, "score_threshold": float(threshold)}


def tool_resources(
    body: Body, *, allow_new_stores: bool = False
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The ``tool_resources`` object and, where allowed, vector stores to create for it."""
    value = optional_object(body, "tool_resources")
    if value is None:
        return None, []
    resources: dict[str, Any] = {}
    new_stores: list[dict[str, Any]] = []
    code = optional_object(value, "code_interpreter", prefix="tool_resources.")
    if code is not None:
        prefix = "tool_resources.code_interpreter."
        resources["code_interpreter"] = {
            "file_ids": string_list(code, "file_ids", max_items=20, prefix=prefix) or []
        }
    search = optional_object(value, "file_search", prefix="tool_resources.")
    if search is not None:
        prefix = "tool_resources.file_search."
        ids = string_list(search, "vector_store_ids", max_items=1, prefix=prefix) or []
        stores = search.get("vector_stores")
        if stores is not None:
            if not allow_new_stores:
                raise bad_request(
                    "Unrecognized request argument supplied: tool_resources.file_search."
                    "vector_stores",
                    code="unknown_parameter",
                )
            if not isinstance(stores, list) or len(stores) + len(ids) > 1:
                raise bad_request(
                    "Invalid 'tool_resources.file_search': at most one vector store can be "
                    "attached.",
                    param=prefix + "vector_stores",
                )
            for index, store in enumerate(stores):
                if not isinstance(store, dict):
                    raise invalid_type(f"{prefix}vector_stores[{index}]", "an object", store)
                new_stores.append(store)
        resources["file_search"] = {"vector_store_ids": ids}
    return resources, new_stores


def response_format(body: Body) -> str | dict[str, Any] | None:
    value = body.get("response_format")
    if value is None or value == "auto":
        return value
    if not isinstance(value, dict) or value.get("type") not in (
        "text",
        "json_object",
        "json_schema",
    ):
        raise bad_request(
            "Invalid 'response_format': expected 'auto' or an object with type 'text', "
            "'json_object' or 'json_schema'.",
            param="response_format",
            code="invalid_value",
        )
    return value


def tool_choice(body: Body) -> str | dict[str, Any] | None:
    value = body.get("tool_choice")
    if value is None or value in ("none", "auto", "required"):
        return value
    if isinstance(value, dict) and value.get("type") in TOOL_TYPES:
        if value["type"] == "function" and not isinstance(
            (value.get("function") or {}).get("name"), str
        ):
            raise missing("tool_choice.function.name")
        return value
    raise bad_request(
        "Invalid 'tool_choice': expected 'none', 'auto', 'required' or an object naming a tool.",
        param="tool_choice",
        code="invalid_value",
    )


def truncation_strategy(body: Body) -> dict[str, Any] | None:
    value = optional_object(body, "truncation_strategy")
    if value is None:
        return None
    if value.get("type") not in ("auto", "last_messages"):
        raise bad_request(
            "Invalid 'truncation_strategy.type': expected 'auto' or 'last_messages'.",
            param="truncation_strategy.type",
            code="invalid_value",
        )
    last = optional_int(value, "last_messages", 1)
    return {"type": value["type"], "last_messages": last}
