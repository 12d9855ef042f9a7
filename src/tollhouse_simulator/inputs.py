"""Responses-era items as clients send them (``input``, conversation items) and what they say."""

from __future__ import annotations

import base64
import binascii
import copy
from collections.abc import Callable
from typing import Any

from tollhouse_simulator.bodies import invalid_type, missing
from tollhouse_simulator.errors import SimulatorError, bad_request
from tollhouse_simulator.store import new_id

Item = dict[str, Any]
Lookup = Callable[[str], Item | None]

MESSAGE_ROLES = ("user", "assistant", "system", "developer")
# Items a model produced earlier, passed back as given; the API requires their ids.
_ECHOED = (
    "reasoning",
    "web_search_call",
    "file_search_call",
    "code_interpreter_call",
    "image_generation_call",
    "mcp_list_tools",
    "mcp_approval_request",
    "mcp_call",
    "compaction",
)
ITEM_TYPES = (
    "message",
    "function_call",
    "function_call_output",
    "mcp_approval_response",
    "item_reference",
    *_ECHOED,
)
_INPUT_PARTS = ("input_text", "input_image", "input_file")
_COMPACTION_PREFIX = "sim-compaction:"


def text_part(text: str, role: str) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": []}
    return {"type": "input_text", "text": text}


def message_item(role: str, content: list[dict[str, Any]], item_id: str | None = None) -> Item:
    return {
        "id": item_id or new_id("msg_"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": content,
    }


def parse_items(
    value: object, param: str, lookup: Lookup, *, max_items: int | None = None
) -> list[Item]:
    """``input`` (a string or an array of items) as stored items, each with an id."""
    if isinstance(value, str):
        return [message_item("user", [text_part(value, "user")])]
    if not isinstance(value, list):
        raise invalid_type(param, "a string or an array", value)
    if max_items is not None and len(value) > max_items:
        raise bad_request(
            f"Invalid '{param}': array too long. Expected an array with maximum length "
            f"{max_items}, but got an array with length {len(value)} instead.",
            param=param,
            code="array_above_max_length",
        )
    return [parse_item(item, f"{param}[{index}]", lookup) for index, item in enumerate(value)]


def parse_item(value: object, param: str, lookup: Lookup) -> Item:
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    kind = value.get("type", "message" if "role" in value else None)
    if kind not in ITEM_TYPES:
        raise bad_request(
            f"Invalid value: '{kind}'. Supported values are: "
            + ", ".join(f"'{name}'" for name in ITEM_TYPES)
            + ".",
            param=f"{param}.type",
            code="invalid_value",
        )
    if kind == "message":
        return _message(value, param)
    if kind == "item_reference":
        item_id = _string(value, "id", param)
        found = lookup(item_id)
        if found is None:
            raise SimulatorError(404, f"Item with id '{item_id}' not found.", param=f"{param}.id")
        return copy.deepcopy(found)
    if kind == "function_call":
        return {
            "id": _optional_id(value, "fc_"),
            "type": kind,
            "call_id": _string(value, "call_id", param),
            "name": _string(value, "name", param),
            "arguments": _string(value, "arguments", param),
            "status": "completed",
        }
    if kind == "function_call_output":
        output = value.get("output")
        if not isinstance(output, str | list):
            raise invalid_type(f"{param}.output", "a string or an array", output)
        return {
            "id": _optional_id(value, "fco_"),
            "type": kind,
            "call_id": _string(value, "call_id", param),
            "output": output,
            "status": "completed",
        }
    if kind == "mcp_approval_response":
        approve = value.get("approve")
        if not isinstance(approve, bool):
            raise invalid_type(f"{param}.approve", "a boolean", approve)
        return {
            "id": _optional_id(value, "mcpa_"),
            "type": kind,
            "approval_request_id": _string(value, "approval_request_id", param),
            "approve": approve,
            "reason": value.get("reason"),
        }
    _string(value, "id", param)
    return copy.deepcopy(value)


def _message(value: dict[str, Any], param: str) -> Item:
    role = value.get("role")
    if role is None:
        raise missing(f"{param}.role")
    if role not in MESSAGE_ROLES:
        raise bad_request(
            f"Invalid value: '{role}'. Supported values are: 'user', 'assistant', 'system', "
            "and 'developer'.",
            param=f"{param}.role",
            code="invalid_value",
        )
    content = value.get("content")
    if content is None:
        raise missing(f"{param}.content")
    if isinstance(content, str):
        parts = [text_part(content, role)]
    elif isinstance(content, list):
        parts = [_part(part, role, f"{param}.content[{i}]") for i, part in enumerate(content)]
    else:
        raise invalid_type(f"{param}.content", "a string or an array", content)
    item_id = value.get("id")
    return message_item(role, parts, item_id if isinstance(item_id, str) else None)


def _part(part: object, role: str, param: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise invalid_type(param, "an object", part)
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        return text_part(_string(part, "text", param), role)
    if role == "assistant" and kind == "refusal":
        return {"type": "refusal", "refusal": _string(part, "refusal", param)}
    if role != "assistant" and kind == "input_image":
        return {"detail": "auto", **part}
    if role != "assistant" and kind == "input_file":
        return dict(part)
    allowed = "'output_text' or 'refusal'" if role == "assistant" else ", ".join(_INPUT_PARTS)
    raise bad_request(
        f"Invalid value: '{kind}'. Supported values are: {allowed}.",
        param=f"{param}.type",
        code="invalid_value",
    )


def _string(value: dict[str, Any], key: str, param: str) -> str:
    found = value.get(key)
    if found is None:
        raise missing(f"{param}.{key}")
    if not isinstance(found, str):
        raise invalid_type(f"{param}.{key}", "a string", found)
    return found


def _optional_id(value: dict[str, Any], prefix: str) -> str:
    given = value.get("id")
    return given if isinstance(given, str) and given else new_id(prefix)


def compaction_item(summary: str) -> Item:
    """Stands for compacted items; its opaque content carries what the model keeps of them."""
    encoded = base64.b64encode(summary.encode()).decode()
    return {
        "id": new_id("cmp_"),
        "type": "compaction",
        "encrypted_content": _COMPACTION_PREFIX + encoded,
    }


def _compaction_text(item: Item) -> str:
    content = str(item.get("encrypted_content", ""))
    if not content.startswith(_COMPACTION_PREFIX):
        return ""
    try:
        return base64.b64decode(content[len(_COMPACTION_PREFIX) :]).decode()
    except (binascii.Error, UnicodeDecodeError):
        return ""


def _texts(parts: object) -> list[str]:
    if not isinstance(parts, list):
        return []
    found = []
    for part in parts:
        if isinstance(part, dict):
            text = part.get("text", part.get("refusal"))
            if isinstance(text, str):
                found.append(text)
    return found


def item_text(item: Item) -> str:
    """What the model reads of an item, for counting tokens."""
    kind = item.get("type")
    if kind == "message":
        return "\n".join(_texts(item.get("content")))
    if kind == "function_call":
        return f"{item.get('name', '')} {item.get('arguments', '')}"
    if kind == "function_call_output":
        output = item.get("output")
        return output if isinstance(output, str) else "\n".join(_texts(output))
    if kind == "compaction":
        return _compaction_text(item)
    if kind == "reasoning":
        return "\n".join(_texts(item.get("summary")) + _texts(item.get("content")))
    if kind == "web_search_call":
        return str((item.get("action") or {}).get("query") or "")
    if kind == "code_interpreter_call":
        logs = _texts([{"text": out.get("logs")} for out in item.get("outputs") or []])
        return "\n".join([str(item.get("code") or ""), *logs])
    if kind in ("mcp_call", "mcp_approval_request"):
        return f"{item.get('arguments', '')} {item.get('output') or ''}"
    return ""


def last_user_text(items: list[Item]) -> str:
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            return item_text(item)
    return ""
