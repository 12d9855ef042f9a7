"""Token buckets in process memory: one replica's own view of every bucket."""

from __future__ import annotations

import time
from collections.abc import Callable

from tollhouse.buckets.bucket import Level, Limit, PairTake, take_pair


class MemoryBuckets:
    """Buckets in a dict; every admission is one synchronous step on the event loop."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._levels: dict[str, Level] = {}

    async def take(
        self,
        tenant_key: str,
        tenant_limit: Limit | None,
        org_key: str,
        org_limit: Limit | None,
        max_wait: float = 0.0,
        enforce_tenant: bool = True,
        enforce_org: bool = True,
    ) -> PairTake:
        return self.take_now(
            tenant_key, tenant_limit, org_key, org_limit, max_wait, enforce_tenant, enforce_org
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
    ) -> PairTake:
        levels = self._levels
        result = take_pair(
            levels.get(tenant_key),
            tenant_limit,
            levels.get(org_key),
            org_limit,
            self._clock(),
            max_wait,
            enforce_tenant,
            enforce_org,
        )
        if result.tenant is not None:
            levels[tenant_key] = result.tenant
        if result.org is not None:
            levels[org_key] = result.org
        return result

    async def close(self) -> None:
        self._levels.clear()
