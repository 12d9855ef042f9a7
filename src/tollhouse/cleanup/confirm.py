"""What the upstream says about an object the cleaner would delete.

Is it still there, does its metadata carry the protect marker, when was a vector
store last active and how many bytes does it hold, and which vector stores hold
which files. Reads only, each paced through the GET budget.
"""

from __future__ import annotations

from typing import Final

from tollhouse.cleanup.pacing import PacedClient
from tollhouse.cleanup.stale import Record, Upstream, protected
from tollhouse.config.policy import KeepMarker
from tollhouse.upstream.forward import UpstreamError

PATHS: Final = {
    "thread": "/v1/threads/{}",
    "assistant": "/v1/assistants/{}",
    "vector_store": "/v1/vector_stores/{}",
    "file": "/v1/files/{}",
    "conversation": "/v1/conversations/{}",
    "container": "/v1/containers/{}",
    "response": "/v1/responses/{}",
    "chat_completion": "/v1/chat/completions/{}",
}
# Kinds whose upstream object says when it was last active: the later of that and the
# ledger's last use is when it was last touched.
ACTIVE_AT: Final = frozenset({"vector_store", "container"})


def path(record: Record) -> str:
    """The object's path: retrieved with GET, deleted with DELETE."""
    return PATHS[record.kind].format(record.id)


async def inspect(
    client: PacedClient, upstream: str, record: Record, marker: KeepMarker
) -> Upstream | None:
    """The object as the upstream reports it; None when it is gone (404)."""
    answer = await client.get(path(record))
    if answer.status == 404:
        return None
    if not answer.ok:
        raise UpstreamError(upstream, f"GET {path(record)}: status {answer.status}")
    body = answer.body
    active = body.get("last_active_at") if record.kind in ACTIVE_AT else None
    size = body.get("usage_bytes") if record.kind == "vector_store" else None
    return Upstream(
        last_active_at=active if isinstance(active, int) else None,
        keep=protected(body.get("metadata"), marker),
        usage_bytes=size if isinstance(size, int) else 0,
    )


async def attachments(client: PacedClient) -> dict[str, set[str]]:
    """File id -> the vector stores holding it, over every vector store upstream."""
    held: dict[str, set[str]] = {}
    async for store in client.pages("/v1/vector_stores"):
        async for attached in client.pages(f"/v1/vector_stores/{store['id']}/files"):
            held.setdefault(attached["id"], set()).add(store["id"])
    return held
