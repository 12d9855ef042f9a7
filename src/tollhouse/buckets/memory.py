"""Token buckets in process memory: one replica's own view of every bucket."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from tollhouse.buckets.bucket import Level, Limit, PairTake, take_pair

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

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # key -> (level, when it is full again); OrderedDict pops its head in O(1).
        self._levels: OrderedDict[str, tuple[Level, float]] = OrderedDict()

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

    def _sweep(self, now: float) -> None:
        levels = self._levels
        for _ in range(min(SWEEP_PER_TAKE, len(levels))):
            key, entry = levels.popitem(last=False)
            if entry[1] > now:
                levels[key] = entry  # still refilling: to the back of the ring

    async def close(self) -> None:
        self._levels.clear()


def _full_at(level: Level, limit: Limit) -> float:
    """When the bucket is as good as new: full, and nobody queued for a retry any more."""
    return max(level.at + max(0.0, limit.capacity - level.tokens) / limit.rate, level.queue)
