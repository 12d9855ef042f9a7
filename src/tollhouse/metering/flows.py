"""Flow names: which flow a request belongs to, so two implementations can be compared.

A client tags a request with a flow in the ``X-Tollhouse-Flow`` header (removed before
the request goes upstream) or in a create body's ``metadata.tollhouse_flow`` (left in
place). Names are the client's choice, so they are checked here and their number per
tenant is capped: past the cap a tenant's new names are counted as ``other``. Pure.
"""

from __future__ import annotations

import json
import re
from typing import Final

FLOW_HEADER: Final = b"x-tollhouse-flow"
FLOW_METADATA_KEY: Final = "tollhouse_flow"
OTHER_FLOW: Final = "other"
MAX_FLOWS_PER_TENANT: Final = 20
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}")


class BadFlowName(ValueError):
    """A flow name tollhouse does not accept (it is ignored)."""


def flow_name(raw: str | bytes) -> str:
    """``raw`` as a flow name: 1 to 64 of letters, digits and ``. _ : / -``."""
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    text = text.strip()
    if not _NAME.fullmatch(text):
        shown = text[:80] + ("..." if len(text) > 80 else "")
        raise BadFlowName(
            f"flow name {shown!r}: use 1 to 64 letters, digits and . _ : / - "
            "(starting with a letter or digit)"
        )
    return text


def flow_in_body(body: bytes) -> str | None:
    """The raw ``metadata.tollhouse_flow`` of a JSON request body, if it has one (a body
    that does not even contain the key is not parsed)."""
    if FLOW_METADATA_KEY.encode() not in body:
        return None
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    metadata = document.get("metadata") if isinstance(document, dict) else None
    value = metadata.get(FLOW_METADATA_KEY) if isinstance(metadata, dict) else None
    return value if isinstance(value, str) else None


class FlowNames:
    """The flows each tenant has used, at most ``cap`` of them; later names become ``other``.

    Kept per process: replicas (and restarts) each admit up to ``cap`` names, so the
    ledger holds at most ``cap`` per tenant per replica lifetime, still bounded.
    """

    def __init__(self, cap: int = MAX_FLOWS_PER_TENANT) -> None:
        self._cap = cap
        self._names: dict[str, set[str]] = {}

    def admit(self, tenant: str, flow: str) -> str:
        names = self._names.setdefault(tenant, set())
        if flow in names:
            return flow
        if len(names) >= self._cap:
            return OTHER_FLOW
        names.add(flow)
        return flow


def api_of(operation: str) -> str:
    """The API family an operation belongs to, as the flow table compares them."""
    family = operation.split(".", 1)[0]
    if family in ("responses", "conversations", "containers"):
        return "responses"
    if family == "chat":
        return "chat"
    if family in ("assistants", "threads"):
        return "assistants"
    return "other"
