"""Token-bucket backends, chosen from a URL in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol
from urllib.parse import urlsplit

from tollhouse.quota.bucket import Limit, PairTake
from tollhouse.quota.reserve import Reservation, Reserved, Settled


class Buckets(Protocol):
    name: str

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
        """One admission against both buckets; see ``bucket.take_pair``."""
        ...

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
        """Draw an estimate of tokens from both buckets or neither; see ``reserve``."""
        ...

    async def settle(self, reservation: Reservation, actual: int) -> Settled:
        """Refund or charge the difference between ``actual`` and the reservation, once."""
        ...

    async def close(self) -> None: ...


class UnknownBackend(ValueError):
    pass


def buckets_from_url(
    url: str, replicas: int = 1, on_fallback: Callable[[bool], None] = lambda active: None
) -> Buckets:
    """``memory://`` (the default) or ``redis://host:port/db`` / ``rediss://``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from tollhouse.quota.memory import MemoryBuckets

        return MemoryBuckets()
    if scheme in ("redis", "rediss", "unix"):
        from tollhouse.quota.redis import RedisBuckets

        return RedisBuckets(url, replicas=replicas, on_fallback=on_fallback)
    raise UnknownBackend(f"buckets URL {url!r}: use memory:// or redis://host:port/db")
