"""The tools of a response request, its ``tool_choice``, and which output items it will make."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tollhouse_simulator.bodies import Body, invalid_type, missing
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.inputs import Item

TOOL_TYPES = (
    "function",
    "file_search",
    "computer",
    "computer_use_preview",
    "web_search",
    "web_search_2025_08_26",
    "mcp",
    "code_interpreter",
    "programmatic_tool_calling",
    "image_generation",
    "local_shell",
    "shell",
    "custom",
    "namespace",
    "tool_search",
    "web_search_preview",
    "web_search_preview_2025_03_11",
    "apply_patch",
)
HOSTED = ("web_search", "file_search", "code_interpreter", "image_generation")
DEFAULT_MCP_TOOL = "lookup"
_IMAGE_DEFAULTS = {
    "model": "gpt-image-1",
    "background": "auto",
    "moderation": "auto",
    "output_compression": 100,
    "output_format": "png",
    "quality": "auto",
    "size": "auto",
}
_FILLER = {"for", "the", "about", "and", "then", "please"}
_FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Planned:
    """One output item the response will make; ``name`` is the function or MCP tool name, or
    the web search query; ``approval`` the approval request an MCP call answers."""

    kind: str
    tool: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    approval: str | None = None


def family(tool: dict[str, Any]) -> str:
    """web_search for every dated or preview variant of it, else the tool's type."""
    kind = str(tool.get("type"))
    return "web_search" if kind.startswith("web_search") else kind


def parse_tools(body: Body) -> list[dict[str, Any]]:
    value = body.get("tools")
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_type("tools", "an array", value)
    return [_tool(item, f"tools[{index}]") for index, item in enumerate(value)]


def _tool(item: object, param: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise invalid_type(param, "an object", item)
    kind = item.get("type")
    if kind not in TOOL_TYPES:
        raise bad_request(
            f"Invalid value: '{kind}'. Supported values are: "
            + ", ".join(f"'{name}'" for name in TOOL_TYPES)
            + ".",
            param=f"{param}.type",
            code="invalid_value",
        )
    check = _TOOL_CHECKS.get(str(kind))
    return check(item, param) if check is not None else dict(item)


def _function(item: dict[str, Any], param: str) -> dict[str, Any]:
    name = item.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        raise bad_request(
            f"Invalid '{param}.name': string does not match pattern. Expected a string "
            "that matches the pattern '^[a-zA-Z0-9_-]+$' with at most 64 characters.",
            param=f"{param}.name",
            code="invalid_value",
        )
    return {"description": None, "parameters": None, "strict": True, **item}


def _file_search(item: dict[str, Any], param: str) -> dict[str, Any]:
    ids = item.get("vector_store_ids")
    if ids is None:
        raise missing(f"{param}.vector_store_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise invalid_type(f"{param}.vector_store_ids", "an array of strings", ids)
    return dict(item)


def _code_interpreter(item: dict[str, Any], param: str) -> dict[str, Any]:
    container = item.get("container")
    if container is None:
        raise missing(f"{param}.container")
    if not isinstance(container, str) and not (
        isinstance(container, dict) and container.get("type") == "auto"
    ):
        raise bad_request(
            f"Invalid '{param}.container': expected a container id or {{'type': 'auto'}}.",
            param=f"{param}.container",
            code="invalid_value",
        )
    return dict(item)


def _mcp_tool(item: dict[str, Any], param: str) -> dict[str, Any]:
    if not isinstance(item.get("server_label"), str):
        raise missing(f"{param}.server_label")
    if not isinstance(item.get("server_url") or item.get("connector_id"), str):
        raise missing(f"{param}.server_url")
    return dict(item)


def _image_generation(item: dict[str, Any], param: str) -> dict[str, Any]:
    return {**_IMAGE_DEFAULTS, **item}


# Per tool type, what its entry must hold and the defaults it is echoed with.
_TOOL_CHECKS: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "function": _function,
    "file_search": _file_search,
    "code_interpreter": _code_interpreter,
    "mcp": _mcp_tool,
    "image_generation": _image_generation,
}


def parse_tool_choice(body: Body, tools: list[dict[str, Any]]) -> str | dict[str, Any]:
    value = body.get("tool_choice", "auto")
    if value in ("none", "auto", "required"):
        return str(value)
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise bad_request(
            "Invalid 'tool_choice': expected 'none', 'auto', 'required' or an object.",
            param="tool_choice",
            code="invalid_value",
        )
    kind = value["type"]
    if kind == "allowed_tools":
        if value.get("mode") not in ("auto", "required") or not isinstance(
            value.get("tools"), list
        ):
            raise missing("tool_choice.tools")
        return value
    if kind == "function" and not isinstance(value.get("name"), str):
        raise missing("tool_choice.name")
    if kind == "mcp" and not isinstance(value.get("server_label"), str):
        raise missing("tool_choice.server_label")
    if not any(_chosen(value, tool) for tool in tools):
        raise bad_request(
            f"Tool choice '{kind}' not found in 'tools' parameter.", param="tool_choice"
        )
    return value


def _chosen(choice: dict[str, Any], tool: dict[str, Any]) -> bool:
    """Whether a tool_choice object (or an allowed_tools entry) names this tool."""
    if family(choice) != family(tool) and not (
        choice["type"].startswith("computer") and str(tool["type"]).startswith("computer")
    ):
        return False
    for key in ("name", "server_label"):
        if choice.get(key) is not None and choice.get(key) != tool.get(key):
            return False
    return True


def search_queries(question: str) -> list[str]:
    """One query per word "search" in the question: the words up to the next one."""
    words = question.split()
    starts = [i for i, word in enumerate(words) if re.sub(r"\W", "", word).lower() == "search"]
    if not starts:
        return [question.strip() or "search"]
    queries = []
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(words)
        part = [word.strip(",.;:!?") for word in words[start + 1 : end]]
        while part and part[0].lower() in _FILLER:
            part.pop(0)
        while part and part[-1].lower() in _FILLER:
            part.pop()
        queries.append(" ".join(part) or question.strip())
    return queries


def mcp_tool_names(tool: dict[str, Any]) -> list[str]:
    allowed = tool.get("allowed_tools")
    if isinstance(allowed, dict):
        allowed = allowed.get("tool_names")
    names = [name for name in allowed or [] if isinstance(name, str)]
    return names or [DEFAULT_MCP_TOOL]


def needs_approval(tool: dict[str, Any], name: str) -> bool:
    rule = tool.get("require_approval", "always")
    if rule == "never":
        return False
    if isinstance(rule, dict):
        never = (rule.get("never") or {}).get("tool_names") or []
        return name not in never
    return True


def _mcp(tool: dict[str, Any], name: str | None, context: list[Item]) -> list[Planned]:
    label = tool["server_label"]
    listed = any(
        item.get("type") == "mcp_list_tools" and item.get("server_label") == label
        for item in context
    )
    plan = [] if listed else [Planned("mcp_list_tools", tool)]
    chosen = name or mcp_tool_names(tool)[0]
    kind = "mcp_approval_request" if needs_approval(tool, chosen) else "mcp_call"
    return [*plan, Planned(kind, tool, chosen)]


def _hosted(tool: dict[str, Any], question: str) -> list[Planned]:
    if family(tool) == "web_search":
        return [Planned("web_search", tool, query) for query in search_queries(question)]
    return [Planned(family(tool), tool)]


def plan_outputs(
    tools: list[dict[str, Any]],
    choice: str | dict[str, Any],
    question: str,
    context: list[Item],
    max_tool_calls: int | None,
) -> list[Planned]:
    """The items of a response answering ``question`` with these tools (a fresh turn).

    The simulated model is predictable: it calls every hosted tool it is given once, in a fixed
    order (a web search per "search" in the question), then calls the first function or
    answers.
    """
    if choice == "none":
        return [Planned("message")]
    if isinstance(choice, dict):
        if choice["type"] == "allowed_tools":
            allowed = [t for t in tools if any(_chosen(c, t) for c in choice["tools"])]
            return plan_outputs(allowed, choice["mode"], question, context, max_tool_calls)
        tools = [tool for tool in tools if _chosen(choice, tool)]
        if choice["type"] == "function":
            return [Planned("function", tools[0], choice["name"])]
    calls: list[Planned] = []
    for kind in HOSTED:
        for tool in tools:
            if family(tool) == kind and not any(p.kind == kind for p in calls):
                calls.extend(_hosted(tool, question))
    for tool in tools:
        if tool["type"] == "mcp":
            name = choice.get("name") if isinstance(choice, dict) else None
            calls.extend(_mcp(tool, name, context))
    if max_tool_calls is not None:
        counted = [p for p in calls if p.kind != "mcp_list_tools"][:max_tool_calls]
        calls = [p for p in calls if p.kind == "mcp_list_tools" or p in counted]
    functions = [tool for tool in tools if tool["type"] == "function"]
    if functions and not isinstance(choice, dict):
        return [*calls, Planned("function", functions[0], functions[0]["name"])]
    if any(p.kind == "mcp_approval_request" for p in calls):
        return calls  # the response waits for the client's approval
    return [*calls, Planned("message")]


def plan_continuation(
    tools: list[dict[str, Any]], new_items: list[Item], context: list[Item]
) -> list[Planned] | None:
    """The items answering tool results the client sent (None when it sent none)."""
    outputs = [
        i for i in new_items if i["type"] in ("function_call_output", "mcp_approval_response")
    ]
    if not outputs:
        return None
    known = {i["call_id"] for i in context + new_items if i.get("type") == "function_call"}
    requests = {i["id"]: i for i in context if i.get("type") == "mcp_approval_request"}
    plan: list[Planned] = []
    for item in outputs:
        if item["type"] == "function_call_output" and item["call_id"] not in known:
            raise bad_request(
                f"No tool call found for function call output with call_id {item['call_id']}.",
                param="input",
            )
        if item["type"] != "mcp_approval_response":
            continue
        request = requests.get(item["approval_request_id"])
        if request is None:
            raise bad_request(
                f"No approval request found with id '{item['approval_request_id']}'.",
                param="input",
            )
        servers = [t for t in tools if t["type"] == "mcp"]
        label = request["server_label"]
        server = next((t for t in servers if t["server_label"] == label), {"server_label": label})
        if item["approve"]:
            plan.append(Planned("mcp_call", server, request["name"], request["id"]))
    return [*plan, Planned("message")]
