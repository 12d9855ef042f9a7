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


# -- spend budgets: counters in the same place as the buckets ----------------------------

# A period a spend store counts: (key, hard limit in micro-dollars, when it may be forgotten).
PeriodKey = tuple[str, int, int]
Parked = tuple[str, list[str]]  # a hold, and the keys of the periods it is in flight in


class SpendUnavailable(Exception):
    """The spend store could not be reached."""


class SpendStore(Protocol):
    """Committed and in-flight spend per tenant and period, in micro-dollars.

    Every method is one atomic step on the store: on Redis, one Lua script on the
    server, so the replicas sharing it hold one budget. A store out of reach raises
    ``SpendUnavailable``.
    """

    name: str

    async def reserve(
        self, hold: str, periods: list[PeriodKey], amount: int, ttl: float
    ) -> tuple[int | None, list[int]]:
        """Put ``amount`` in flight in every period if each stays within its limit, else in none.

        Returns the index of the first period that refused (None: reserved) and each
        period's spend (committed plus in flight) after the step. A hold not released
        within ``ttl`` seconds stops counting (its replica went away).
        """
        ...

    async def release(self, hold: str, keys: list[str]) -> None:
        """Take the hold out of flight (once; a second release changes nothing)."""
        ...

    async def park(self, hold: str, keys: list[str], object_id: str, ttl: float) -> bool:
        """Keep the hold in flight until ``object_id``'s cost is committed; False when it
        already was (the caller releases the hold)."""
        ...

    async def commit(
        self, object_id: str, periods: list[PeriodKey], amount: int, ttl: float
    ) -> tuple[bool, Parked | None]:
        """Add an object's cost once, however many replicas see it: whether it was
        added, and the hold parked on the object (the caller releases it)."""
        ...

    async def seed(self, periods: list[PeriodKey], amounts: list[int]) -> None:
        """Committed spend is at least ``amounts`` (what the ledger already holds)."""
        ...

    async def spent(self, periods: list[PeriodKey]) -> list[int]: ...

    async def close(self) -> None: ...


def spend_from_url(url: str, clock: Callable[[], float]) -> SpendStore:
    """Where spend budgets are counted: with the buckets (``TOLLHOUSE_BUCKETS_URL``)."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from tollhouse.quota.spend_memory import MemorySpend

        return MemorySpend(clock)
    if scheme in ("redis", "rediss", "unix"):
        from tollhouse.quota.spend_redis import RedisSpend

        return RedisSpend(url)
    raise UnknownBackend(f"buckets URL {url!r}: use memory:// or redis://host:port/db")
