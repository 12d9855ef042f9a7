"""Thread messages: validating a message body and building the message object."""

from __future__ import annotations

from typing import Any

from tollhouse_simulator.bodies import Body, invalid_type, metadata, missing
from tollhouse_simulator.errors import bad_request

MESSAGE_FIELDS = frozenset({"role", "content", "attachments", "metadata"})
_ATTACHMENT_TOOLS = ("code_interpreter", "file_search")


def text_content(value: str) -> dict[str, Any]:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def message_object(
    *,
    message_id: str,
    thread_id: str,
    created_at: int,
    role: str,
    content: list[dict[str, Any]],
    attachments: list[dict[str, Any]] | None = None,
    metadata: dict[str, str] | None = None,
    assistant_id: str | None = None,
    run_id: str | None = None,
    status: str = "completed",
) -> dict[str, Any]:
    return {
        "id": message_id,
        "object": "thread.message",
        "created_at": created_at,
        "thread_id": thread_id,
        "status": status,
        "incomplete_details": None,
        "completed_at": created_at if status == "completed" else None,
        "incomplete_at": None,
        "role": role,
        "content": content,
        "assistant_id": assistant_id,
        "run_id": run_id,
        "attachments": attachments or [],
        "metadata": metadata or {},
    }


def parse_message(body: Body, prefix: str = "") -> dict[str, Any]:
    """role, content, attachments and metadata of a message body, as message_object takes them."""
    unknown = set(body) - MESSAGE_FIELDS
    if unknown:
        raise bad_request(
            f"Unrecognized request argument supplied: {prefix}{sorted(unknown)[0]}",
            code="unknown_parameter",
        )
    role = body.get("role")
    if role is None:
        raise missing(prefix + "role")
    if role not in ("user", "assistant"):
        raise bad_request(
            f"Invalid value: '{role}'. Supported values are: 'user' and 'assistant'.",
            param=prefix + "role",
            code="invalid_value",
        )
    return {
        "role": role,
        "content": _content(body.get("content"), prefix + "content"),
        "attachments": _attachments(body.get("attachments"), prefix + "attachments"),
        "metadata": metadata(body) or {},
    }


def _content(value: object, param: str) -> list[dict[str, Any]]:
    if value is None:
        raise missing(param)
    if isinstance(value, str):
        return [text_content(value)]
    if not isinstance(value, list):
        raise invalid_type(param, "a string or an array", value)
    if not value:
        raise bad_request(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            param=param,
            code="empty_array",
        )
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(part, dict):
            raise invalid_type(where, "an object", part)
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise invalid_type(where + ".text", "a string", part.get("text"))
            parts.append(text_content(part["text"]))
        elif kind == "image_file" and isinstance(part.get("image_file"), dict):
            parts.append({"type": "image_file", "image_file": part["image_file"]})
        elif kind == "image_url" and isinstance(part.get("image_url"), dict):
            parts.append({"type": "image_url", "image_url": part["image_url"]})
        else:
            raise bad_request(
                f"Invalid '{where}': expected a text, image_file or image_url content part.",
                param=where,
                code="invalid_value",
            )
    return parts


def _attachments(value: object, param: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_type(param, "an array", value)
    attachments = []
    for index, item in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(item, dict) or not isinstance(item.get("file_id"), str):
            raise missing(where + ".file_id")
        tools = item.get("tools") or []
        if not isinstance(tools, list) or any(
            not isinstance(tool, dict) or tool.get("type") not in _ATTACHMENT_TOOLS
            for tool in tools
        ):
            raise bad_request(
                f"Invalid '{where}.tools': expected tools of type 'code_interpreter' or "
                "'file_search'.",
                param=where + ".tools",
                code="invalid_value",
            )
        attachments.append(
            {"file_id": item["file_id"], "tools": [{"type": t["type"]} for t in tools]}
        )
    return attachments


def message_text(message: dict[str, Any]) -> str:
    """The message's text parts joined, what the simulated model reads."""
    return "\n".join(
        part["text"]["value"] for part in message["content"] if part.get("type") == "text"
    )
