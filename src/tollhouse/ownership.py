"""Which tenant owns which upstream object, and the 404 for everyone else.

Objects created through tollhouse are recorded with their tenant. A request
naming another tenant's object gets exactly the 404 the upstream gives for a
missing one, so tenants can neither touch nor discover each other's objects.
Objects tollhouse never saw created (older than tollhouse, or made directly
upstream) have no owner and are not restricted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy import Engine

from tollhouse import ledger
from tollhouse.classify import PARAM_KINDS, Kind, Operation
from tollhouse.errors import ErrorResponse
from tollhouse.meter import ObjectSeen
from tollhouse.writer import LedgerWriter

# The kinds whose owners are recorded (run steps belong to their run).
RECORDED = frozenset(
    {
        Kind.ASSISTANT,
        Kind.THREAD,
        Kind.MESSAGE,
        Kind.RUN,
        Kind.VECTOR_STORE,
        Kind.FILE,
        Kind.FILE_BATCH,
        Kind.UPLOAD,
    }
)
_NAMES = {
    Kind.ASSISTANT: "assistant",
    Kind.THREAD: "thread",
    Kind.MESSAGE: "message",
    Kind.RUN: "run",
    Kind.VECTOR_STORE: "vector store",
    Kind.FILE: "file",
    Kind.FILE_BATCH: "file batch",
    Kind.UPLOAD: "upload",
}
NOBODY = ""  # cached: the object has no recorded owner
# Request-body fields that name other objects (runs name an assistant, stores name files...).
REFERENCE_FIELDS = {
    "assistant_id": Kind.ASSISTANT,
    "file_id": Kind.FILE,
    "file_ids": Kind.FILE,
    "vector_store_ids": Kind.VECTOR_STORE,
}
MAX_REFERENCES = 1000


def referenced_ids(body: bytes) -> list[tuple[Kind, str]]:
    """The objects a JSON request body names, wherever they are nested; [] if not JSON."""
    try:
        document = json.loads(body)
    except ValueError:
        return []  # the upstream answers malformed bodies itself
    found: list[tuple[Kind, str]] = []
    pending: list[object] = [document]
    while pending and len(found) < MAX_REFERENCES:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            for key, value in node.items():
                kind = REFERENCE_FIELDS.get(key)
                if kind is None:
                    pending.append(value)
                elif isinstance(value, str):
                    found.append((kind, value))
                elif isinstance(value, list):
                    found.extend((kind, item) for item in value if isinstance(item, str))
    return found


def not_found(kind: Kind, object_id: str) -> ErrorResponse:
    return ErrorResponse(
        status=404,
        message=f"No {_NAMES[kind]} found with id '{object_id}'.",
        type="invalid_request_error",
    )


class Ownership:
    def __init__(
        self,
        engine: Engine,
        writer: LedgerWriter,
        capacity: int = 200_000,
        unknown_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._owners: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._capacity = capacity
        self._unknown_ttl = unknown_ttl
        self._clock = clock

    def _remember(self, object_id: str, tenant: str) -> None:
        owners = self._owners
        owners[object_id] = (tenant, self._clock())
        owners.move_to_end(object_id)
        if len(owners) > self._capacity:
            owners.popitem(last=False)

    def _cached(self, object_id: str) -> str | None:
        entry = self._owners.get(object_id)
        if entry is None:
            return None
        tenant, when = entry
        if tenant == NOBODY and self._clock() - when > self._unknown_ttl:
            return None  # another replica may have recorded it since
        return tenant

    def claim(self, tenant: str, objects: list[ObjectSeen]) -> None:
        """Enforce new owners in this process at once (the ledger write follows)."""
        for seen in objects:
            self._remember(seen.id, tenant)

    async def record(self, tenant: str, objects: list[ObjectSeen]) -> None:
        """Claim and write the owners; returns once the ledger has them (or spooled them)."""
        self.claim(tenant, objects)
        await self._writer.record_owned(tenant, objects)

    async def refusal(self, tenant: str, operation: Operation) -> ErrorResponse | None:
        """The 404 to answer if the request's path names an object another tenant owns."""
        named = [
            (kind, value)
            for name, value in operation.params.items()
            if (kind := PARAM_KINDS[name]) in RECORDED
        ]
        return await self.refusal_for(tenant, named)

    async def refusal_for(self, tenant: str, named: list[tuple[Kind, str]]) -> ErrorResponse | None:
        """The 404 for the first of ``named`` that another tenant owns, if any."""
        if not named:
            return None
        missing = [value for _, value in named if self._cached(value) is None]
        if missing:
            found = await asyncio.to_thread(ledger.owners, self._engine, missing)
            for value in missing:
                self._remember(value, found.get(value, NOBODY))
        for kind, value in named:
            owner = self._cached(value)
            if owner and owner != tenant:
                return not_found(kind, value)
        return None
