"""Which objects are stale: pure decisions from the policy, what is known of an object, and ``now``.

An object is stale when nobody has touched it for its time-to-live: the tenant's
override for its kind, else the policy's TTL for the kind (``null``: never). "Last
touched" is the later of what the proxy last saw (the ledger's ``last_used_at``,
which for a thread includes its messages and runs) and what the upstream reports
(a vector store's or a container's ``last_active_at``). A protect marker, in the ledger or in the
object's metadata upstream, exempts it; a file is in use while any vector store
that stays holds it.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from tollhouse.config.policy import Cleanup, CleanupKind, KeepMarker

# Ledger kind -> the policy's name for it; only these kinds are ever deleted.
POLICY_KINDS: Final[Mapping[str, CleanupKind]] = {
    "thread": "threads",
    "assistant": "assistants",
    "vector_store": "vector_stores",
    "file": "files",
    "conversation": "conversations",
    "container": "containers",
    "response": "responses",
    "chat_completion": "chat_completions",
}
# Deletion order: vector stores before files, so a file is judged after the stores
# holding it are gone; threads and conversations first, they are the most numerous and
# cheapest to check.
ORDER: Final = (
    "thread",
    "conversation",
    "response",
    "chat_completion",
    "assistant",
    "container",
    "vector_store",
    "file",
)


class Finding(enum.StrEnum):
    STALE = "stale"
    FRESH = "fresh"  # touched within its time-to-live
    TOUCHED = "touched"  # touched since the sweep began
    KEPT = "kept"  # carries the protect marker
    OFF = "off"  # no time-to-live for this kind and tenant
    IN_USE = "in_use"  # a file held by a vector store that stays


@dataclass(frozen=True, slots=True)
class Record:
    """An object as the ledger knows it."""

    id: str
    kind: str
    tenant: str
    last_used_at: int  # the latest the proxy saw it (or a child of it) used
    keep: bool = False


@dataclass(frozen=True, slots=True)
class Upstream:
    """An object as the upstream reports it now."""

    last_active_at: int | None = None
    keep: bool = False
    usage_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Verdict:
    finding: Finding
    last_touched: int
    ttl: int | None
    reason: str

    @property
    def stale(self) -> bool:
        return self.finding is Finding.STALE


def last_touched(record: Record, upstream: Upstream | None = None) -> int:
    seen = upstream.last_active_at if upstream is not None else None
    return max(record.last_used_at, seen or 0)


def protected(metadata: object, marker: KeepMarker) -> bool:
    """Whether an object's ``metadata`` carries the protect marker."""
    return isinstance(metadata, dict) and metadata.get(marker.key) == marker.value


def decide(
    record: Record,
    cleanup: Cleanup,
    now: float,
    upstream: Upstream | None = None,
    began: float | None = None,
) -> Verdict:
    """Whether ``record`` is stale at ``now``; ``began``: when the sweep started."""
    touched = last_touched(record, upstream)
    kind = POLICY_KINDS.get(record.kind)
    ttl = cleanup.ttl_for(record.tenant, kind) if kind is not None else None
    if record.keep or (upstream is not None and upstream.keep):
        marker = cleanup.keep_marker
        return Verdict(
            Finding.KEPT, touched, ttl, f"protected by metadata.{marker.key}={marker.value}"
        )
    if ttl is None:
        return Verdict(Finding.OFF, touched, None, f"no time-to-live for {record.kind}s")
    if began is not None and touched >= began:
        return Verdict(Finding.TOUCHED, touched, ttl, "touched since the sweep began")
    idle = now - touched
    if idle < ttl:
        return Verdict(Finding.FRESH, touched, ttl, f"used {duration(idle)} ago")
    return Verdict(
        Finding.STALE,
        touched,
        ttl,
        f"untouched for {duration(idle)} (time-to-live {duration(ttl)})",
    )


def find_stale(
    records: Iterable[Record], cleanup: Cleanup, now: float
) -> list[tuple[Record, Verdict]]:
    """The stale records, in deletion order (kind, then longest untouched first)."""
    found = [(r, v) for r in records if (v := decide(r, cleanup, now)).stale]
    found.sort(key=lambda item: (_rank(item[0].kind), item[1].last_touched, item[0].id))
    return found


def cutoffs(cleanup: Cleanup, now: float, kinds: Collection[str] | None = None) -> dict[str, int]:
    """Per ledger kind, the last use before which an object may be stale for some tenant.

    Kinds no tenant has a time-to-live for are left out: nothing of theirs is looked at.
    """
    found = {}
    for kind, name in POLICY_KINDS.items():
        if kinds is not None and kind not in kinds:
            continue
        ttls = [cleanup.ttl.get(name)]
        ttls += [tenant.ttl[name] for tenant in cleanup.tenants.values() if name in tenant.ttl]
        shortest = min((ttl for ttl in ttls if ttl is not None), default=None)
        if shortest is not None:
            found[kind] = int(now - shortest)
    return found


def holders(
    file_id: str, attachments: Mapping[str, Collection[str]], leaving: Collection[str]
) -> list[str]:
    """The vector stores that hold ``file_id`` and are not being deleted by this sweep."""
    return sorted(store for store in attachments.get(file_id, ()) if store not in leaving)


def in_use(verdict: Verdict, stores: list[str]) -> Verdict:
    """A stale file's verdict once it is known which stores that stay hold it."""
    if not stores:
        return verdict
    more = f" and {len(stores) - 1} more" if len(stores) > 1 else ""
    return Verdict(
        Finding.IN_USE, verdict.last_touched, verdict.ttl, f"in vector store {stores[0]}{more}"
    )


def duration(seconds: float) -> str:
    """``31d 2h``, ``5h 3m``, ``12m``, ``40s``: the largest unit and the next one, if not 0."""
    left = max(0, int(seconds))
    units = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    first = next((i for i, (_, size) in enumerate(units) if left >= size), len(units) - 1)
    parts: list[str] = []
    for unit, size in units[first : first + 2]:
        amount, left = divmod(left, size)
        if amount or not parts:
            parts.append(f"{amount}{unit}")
    return " ".join(parts)


def _rank(kind: str) -> int:
    return ORDER.index(kind) if kind in ORDER else len(ORDER)
