"""Which tenant owns which upstream object, and which ids a tenant may not reach.

Objects created through tollhouse are recorded with their tenant; objects first
seen in an answer under a tenant's own parent are that tenant's too. What an
ordinary tenant gets for an object with no owner is the policy's
``isolation.unowned``; admins, and the one tenant of ``default`` mode, reach
everything. The proxy never refuses locally: it forwards a foreign id's twin
(see ``twins``), so the caller sees the upstream's own answer for a missing object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tollhouse.api.classify import PARAM_KINDS, Kind, Operation
from tollhouse.api.errors import ErrorResponse, TollhouseError
from tollhouse.config.policy import Policy
from tollhouse.ledger import store as ledger
from tollhouse.ledger.writer import LedgerWriter
from tollhouse.metering.meter import ObjectSeen
from tollhouse.proxy.sightings import Sighting

log = logging.getLogger(__name__)

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
        Kind.RESPONSE,
        Kind.CONVERSATION,
        Kind.CONTAINER,
        Kind.CHAT_COMPLETION,
    }
)
NOBODY = ""  # cached: the object has no recorded owner
LOOKUP_CHUNK = 500  # ids per ledger query
LOOKUP_THREADS = 8


class LedgerUnavailable(TollhouseError):
    """An owner could not be looked up: the request cannot be checked, so it is not sent."""

    def response(self) -> ErrorResponse:
        return ErrorResponse(
            status=503,
            message=(
                "tollhouse cannot check which tenant owns the objects this request names "
                "because its ledger database is unreachable. Please retry shortly."
            ),
            type="server_error",
            code="ledger_unavailable",
            headers=[(b"retry-after", b"1")],
        )


def path_ids(operation: Operation) -> tuple[list[str], list[str]]:
    """The ids in a path: the first (the object itself, or the parent of the rest) and the rest.

    The upstream only finds a child under its own parent, so a child needs only not to
    be another tenant's; the first id must be the caller's.
    """
    ids = [value for name, value in operation.params.items() if PARAM_KINDS[name] in RECORDED]
    return ids[:1], ids[1:]


class Ownership:
    def __init__(
        self,
        engine: Engine,
        writer: LedgerWriter,
        policy: Callable[[], Policy],
        capacity: int = 200_000,
        unknown_ttl: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        lookup_timeout: float = 6.0,
    ) -> None:
        self._engine = engine
        # Lookups have threads of their own and a deadline of their own: while the
        # database hangs, calls stuck in threads must not make later requests queue
        # past the bound (the database's own timeouts free the threads later).
        self._lookups = ThreadPoolExecutor(LOOKUP_THREADS, thread_name_prefix="owner-lookup")
        self._lookup_timeout = lookup_timeout
        self._writer = writer
        self._policy = policy
        self._owners: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._capacity = capacity
        self._unknown_ttl = unknown_ttl
        self._clock = clock
        self._checks: set[asyncio.Task[None]] = set()

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

    def reaches_all(self, tenant: str) -> bool:
        return self._policy().reaches_all(tenant)

    def claim(self, tenant: str, objects: list[ObjectSeen]) -> None:
        """Enforce new owners in this process at once (the ledger write follows)."""
        for seen in objects:
            self._remember(seen.id, tenant)

    async def record(self, tenant: str, objects: list[ObjectSeen]) -> None:
        """Claim and write the owners; returns once the ledger has them (or spooled them)."""
        self.claim(tenant, objects)
        await self._writer.record_owned(tenant, objects)

    async def owners(self, ids: Iterable[str]) -> dict[str, str]:
        """The owner of each id, ``NOBODY`` for none; raises ``LedgerUnavailable``."""
        ids = set(ids)
        missing = sorted(i for i in ids if self._cached(i) is None)
        for start in range(0, len(missing), LOOKUP_CHUNK):
            chunk = missing[start : start + LOOKUP_CHUNK]
            try:
                found = await self._lookup(chunk)
            except (SQLAlchemyError, TimeoutError) as exc:
                log.warning("owner lookup failed, request not forwarded: %r", exc)
                raise LedgerUnavailable("owner lookup failed") from exc
            for object_id in chunk:
                self._remember(object_id, found.get(object_id, NOBODY))
        return {i: self._cached(i) or NOBODY for i in ids}

    async def foreign(
        self, tenant: str, strict: Iterable[str] = (), loose: Iterable[str] = ()
    ) -> set[str]:
        """The ids ``tenant`` may not reach.

        A ``strict`` id must be the tenant's (or unowned, where the policy allows
        that); a ``loose`` one (a child under a parent already checked) must only not
        be another tenant's.
        """
        strict, loose = set(strict), set(loose) - set(strict)
        if not (strict or loose) or self.reaches_all(tenant):
            return set()
        owners = await self.owners(strict | loose)
        open_unowned = self._policy().isolation.unowned == "allow"
        denied = {i for i in loose if owners[i] not in (tenant, NOBODY)}
        for object_id in strict:
            owner = owners[object_id]
            if owner != tenant and not (owner == NOBODY and open_unowned):
                denied.add(object_id)
        return denied

    async def owns(self, tenant: str, object_id: str) -> bool:
        return (await self.owners([object_id]))[object_id] == tenant

    def known_owner(self, object_id: str) -> str | None:
        """The owner this process knows of, without asking the ledger."""
        return self._cached(object_id)

    def sighted(self, tenant: str, seen: list[Sighting]) -> None:
        """Objects seen under ``tenant``'s own parent: those with no owner become its own.

        The ledger is asked first, off the request path; only an object it has no
        owner for is claimed. If the ledger cannot answer, nothing is claimed.
        """
        fresh = [s for s in seen if s.kind in RECORDED and not self._cached(s.id)]
        if not fresh:
            return
        check = asyncio.ensure_future(self._confirm(tenant, fresh))
        self._checks.add(check)
        check.add_done_callback(self._checks.discard)

    async def _lookup(self, ids: list[str]) -> Mapping[str, str]:
        loop = asyncio.get_running_loop()
        call = loop.run_in_executor(self._lookups, ledger.owners, self._engine, ids)
        return await asyncio.wait_for(call, self._lookup_timeout)

    def close(self) -> None:
        self._lookups.shutdown(wait=False)

    async def settled(self) -> None:
        """Wait for the sightings being confirmed now (tests, and a clean shutdown)."""
        while self._checks:
            await asyncio.gather(*self._checks)

    async def _confirm(self, tenant: str, fresh: list[Sighting]) -> None:
        try:
            found = await self._lookup([s.id for s in fresh])
        except (SQLAlchemyError, TimeoutError) as exc:
            log.warning(
                "owner lookup for %d sighted objects failed; none claimed: %s", len(fresh), exc
            )
            return
        now = int(time.time())
        claimed = []
        for sighting in fresh:
            owner = found.get(sighting.id)
            if owner is not None:
                self._remember(sighting.id, owner)
            else:
                self._remember(sighting.id, tenant)
                at = sighting.created_at if sighting.created_at is not None else now
                claimed.append(
                    ObjectSeen(
                        sighting.id, sighting.kind, sighting.parent_id, at, False, None, None
                    )
                )
        if claimed:
            self._writer.add(tenant, claimed)
