"""Token buckets in process memory: one replica's own view of every bucket."""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from tollhouse.quota.bucket import Level, Limit, PairTake, take_pair
from tollhouse.quota.reserve import Reservation, Reserved, Settled, reserve_pair, settle

# How long a reservation can be settled; a call that reports later keeps what it reserved.
RESERVATION_TTL = 3600.0

# Buckets looked at for eviction per admission. More than one, so the sweep gets
# round faster than admissions can add buckets (each adds at most one new tenant bucket).
SWEEP_PER_TAKE = 2


class MemoryBuckets:
    """Buckets in a dict; every admission is one synchronous step on the event loop.

    A bucket that has refilled to its capacity, with no refused caller still due
    back, is the same as one that was never used, so it is forgotten: each admission
    looks at the ``SWEEP_PER_TAKE`` buckets at the head of a ring, drops them if they
    are full by now and moves them to the back otherwise. The number of buckets kept
    is thereby bounded by about twice (admissions per second times the longest time
    a bucket takes to refill), however many tenants come and go. (After a policy
    reload a forgotten bucket comes back full under the new limit: it only gets there
    sooner than a kept one would.)
    """

    name = "memory"

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        reservation_ttl: float = RESERVATION_TTL,
    ) -> None:
        self._clock = clock
        # key -> (level, when it is full again); OrderedDict pops its head in O(1).
        self._levels: OrderedDict[str, tuple[Level, float]] = OrderedDict()
        # reservations not yet settled -> when they stop being settleable, oldest first
        self._open: OrderedDict[str, float] = OrderedDict()
        self._reservation_ttl = reservation_ttl

    def __len__(self) -> int:
        return len(self._levels)

    async def take(
        self,
        tenant_key: str,
        tenant_limit: Limit | None,
        org_key: str,
        org_limit: Limit | None,
        max_wait: float = 0.0,
        enforce_tenant: bool = True,
        enforce_org: bool = True,
        spread: float = 0.0,
    ) -> PairTake:
        return self.take_now(
            tenant_key,
            tenant_limit,
            org_key,
            org_limit,
            max_wait,
            enforce_tenant,
            enforce_org,
            spread,
        )

    def take_now(
        self,
        tenant_key: str,
        tenant_limit: Limit | None,
        org_key: str,
        org_limit: Limit | None,
        max_wait: float = 0.0,
        enforce_tenant: bool = True,
        enforce_org: bool = True,
        spread: float = 0.0,
    ) -> PairTake:
        levels = self._levels
        now = self._clock()
        tenant = levels.get(tenant_key)
        org = levels.get(org_key)
        result = take_pair(
            tenant[0] if tenant is not None else None,
            tenant_limit,
            org[0] if org is not None else None,
            org_limit,
            now,
            max_wait,
            enforce_tenant,
            enforce_org,
            spread,
        )
        if result.tenant is not None and tenant_limit is not None:
            levels[tenant_key] = (result.tenant, _full_at(result.tenant, tenant_limit))
        if result.org is not None and org_limit is not None:
            levels[org_key] = (result.org, _full_at(result.org, org_limit))
        self._sweep(now)
        return result

    async def reserve(
        self,
        tenant_key: str,
        tenant_limit: Limit | None,
        org_key: str,
        org_limit: Limit | None,
        tokens: int,
        enforce_tenant: bool = True,
        enforce_org: bool = True,
    ) -> Reserved:
        return self.reserve_now(
            tenant_key, tenant_limit, org_key, org_limit, tokens, enforce_tenant, enforce_org
        )

    def reserve_now(
        self,
        tenant_key: str,
        tenant_limit: Limit | None,
        org_key: str,
        org_limit: Limit | None,
        tokens: int,
        enforce_tenant: bool = True,
        enforce_org: bool = True,
        local: bool = False,
    ) -> Reserved:
        """Draw ``tokens`` from both buckets or from neither; see ``reserve.reserve_pair``."""
        now = self._clock()
        result = reserve_pair(
            self._level(tenant_key),
            tenant_limit,
            self._level(org_key),
            org_limit,
            now,
            tokens,
            enforce_tenant,
            enforce_org,
        )
        self._expire(now)
        if not result.allowed:
            return Reserved(result, None)
        self._store(tenant_key, result.tenant, tenant_limit)
        self._store(org_key, result.org, org_limit)
        reservation = Reservation(
            uuid.uuid4().hex,
            tenant_key,
            tenant_limit,
            org_key,
            org_limit,
            result.tenant_taken,
            result.org_taken,
            local,
        )
        self._open[reservation.id] = now + self._reservation_ttl
        self._sweep(now)
        return Reserved(result, reservation)

    async def settle(self, reservation: Reservation, actual: int) -> Settled:
        return self.settle_now(reservation, actual)

    def settle_now(self, reservation: Reservation, actual: int) -> Settled:
        """Refund or charge the difference between ``actual`` and what was drawn, once."""
        now = self._clock()
        self._expire(now)
        if self._open.pop(reservation.id, None) is None:
            return Settled(False, None, None)
        levels = []
        for key, limit, taken in (
            (reservation.tenant_key, reservation.tenant_limit, reservation.tenant_taken),
            (reservation.org_key, reservation.org_limit, reservation.org_taken),
        ):
            level = self._level(key)
            if limit is not None and taken > 0:
                level = settle(level or Level(limit.capacity, now), limit, now, actual - taken)
                self._store(key, level, limit)
            levels.append(level)
        return Settled(True, *levels)

    def _level(self, key: str) -> Level | None:
        entry = self._levels.get(key)
        return entry[0] if entry is not None else None

    def _store(self, key: str, level: Level | None, limit: Limit | None) -> None:
        if level is not None and limit is not None:
            self._levels[key] = (level, _full_at(level, limit))

    def _expire(self, now: float) -> None:
        opened = self._open
        while opened and next(iter(opened.values())) <= now:
            opened.popitem(last=False)

    def _sweep(self, now: float) -> None:
        levels = self._levels
        for _ in range(min(SWEEP_PER_TAKE, len(levels))):
            key, entry = levels.popitem(last=False)
            if entry[1] > now:
                levels[key] = entry  # still refilling: to the back of the ring

    async def close(self) -> None:
        self._levels.clear()
        self._open.clear()


def _full_at(level: Level, limit: Limit) -> float:
    """When the bucket is as good as new: full, and nobody queued for a retry any more."""
    return max(level.at + max(0.0, limit.capacity - level.tokens) / limit.rate, level.queue)
