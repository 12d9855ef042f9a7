"""The objects a JSON request body names, and the body with some of them replaced.

A write's body is parsed whole, duplicate keys included: a parser upstream may
keep the first of two ``assistant_id`` keys where Python keeps the last, so every
occurrence of every field that names an object is checked, however deep, with no
count past which ids go unchecked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Final

from tollhouse.api.classify import Kind

# Request-body fields of the reference that name objects another tenant may own.
# (`part_ids` name parts of the upload in the path, `tool_call_id` a call of the run.)
REFERENCE_FIELDS: Final = {
    "assistant_id": Kind.ASSISTANT,
    "file_id": Kind.FILE,
    "file_ids": Kind.FILE,
    "vector_store_ids": Kind.VECTOR_STORE,
    "previous_response_id": Kind.RESPONSE,
    "conversation": Kind.CONVERSATION,  # an id, or an object with one
    "container": Kind.CONTAINER,  # a code_interpreter tool's container: an id, or `auto`
}
# A value shaped like an object id (``thread_abc…``, ``file-abc…``, ``chatcmpl-abc…``).
ID_SHAPE: Final = re.compile(r"^[a-z]+[_-][A-Za-z0-9_-]{8,}$")
# Fields whose value may be an object naming the referenced one in its own `id`.
_BY_ID: Final = frozenset({"conversation"})


class Pairs(list[tuple[str, object]]):
    """A JSON object as its key/value pairs in order, duplicates kept."""


class UnreadableBody(ValueError):
    """A body that is not JSON this module can check."""


def parse(body: bytes) -> object:
    """The JSON document, objects as ``Pairs``; raises ``UnreadableBody``."""
    try:
        return json.loads(body, object_pairs_hook=Pairs)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UnreadableBody(str(exc)) from None


def references(document: object) -> list[tuple[Kind, str]]:
    """Every object id the document names in a reference field, in no particular order."""
    found: list[tuple[Kind, str]] = []
    pending: list[object] = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, Pairs):
            for key, value in node:
                kind = REFERENCE_FIELDS.get(key)
                if kind is None:
                    pending.append(value)
                elif isinstance(value, str):
                    found.append((kind, value))
                elif isinstance(value, Pairs):  # (a Pairs is a list too: ask first)
                    if key in _BY_ID:
                        found.extend(
                            (kind, v) for k, v in value if k == "id" and isinstance(v, str)
                        )
                    pending.append(value)
                elif isinstance(value, list):
                    found.extend((kind, item) for item in value if isinstance(item, str))
                    pending.extend(item for item in value if not isinstance(item, str))
                else:
                    pending.append(value)
        elif isinstance(node, list):
            pending.extend(node)
    return found


def id_strings(document: object) -> list[str]:
    """Every string in the document shaped like an object id, wherever it is."""
    found: list[str] = []
    pending: list[object] = [document]
    while pending:
        node = pending.pop()
        if isinstance(node, Pairs):
            pending.extend(value for _, value in node)
        elif isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, str) and ID_SHAPE.match(node.strip()):
            found.append(node.strip())
    return found


def replaced(document: object, replacements: Mapping[str, str], anywhere: bool = False) -> bytes:
    """The document serialised again, each id in a reference field replaced.

    ``anywhere``: every string equal to a replaced id is replaced, in any field
    (for operations whose fields tollhouse does not know).
    """
    try:
        return _dump(document, replacements, "*" if anywhere else None).encode()
    except RecursionError:
        raise UnreadableBody("nested too deeply") from None


def _dump(node: object, replacements: Mapping[str, str], field: str | None) -> str:
    anywhere = field == "*"
    if isinstance(node, Pairs):
        by_id = field in _BY_ID
        members = (
            json.dumps(key)
            + ":"
            + _dump(
                value, replacements, "*" if anywhere else field if by_id and key == "id" else key
            )
            for key, value in node
        )
        return "{" + ",".join(members) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_dump(item, replacements, field) for item in node) + "]"
    if isinstance(node, str) and (anywhere or field in REFERENCE_FIELDS):
        return json.dumps(replacements.get(node.strip(), node))
    return json.dumps(node)
