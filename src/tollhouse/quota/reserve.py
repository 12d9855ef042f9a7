"""Token-per-minute arithmetic: reserve an estimate from two buckets at once, settle the actual.

A model call's tokens are known only once it has finished, so admission takes an
estimate from the tenant's bucket and the organisation's together (from both or
from neither, like ``bucket.take_pair``), and the call settles later: the
difference between what it used and what was reserved is refunded or charged. A
charge may take a bucket below zero (into debt, paid back by the refill before
anything else is admitted); a call that never reports keeps what it reserved.
Pure functions of the levels, the limits and ``now``, like ``bucket.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tollhouse.quota.bucket import EARLY, Level, Limit, full, refill


@dataclass(frozen=True, slots=True)
class Draw:
    """One bucket's answer to a reservation: drawn or not, and how long until it would be."""

    allowed: bool
    wait: float  # refused: seconds until the estimate fits; inf when it never can
    level: Level


@dataclass(frozen=True, slots=True)
class PairReserve:
    """A reservation against a tenant bucket and the organisation bucket together."""

    allowed: bool
    wait: float  # refused: seconds until the estimate fits both; inf: it never will
    tenant_refused: bool
    org_refused: bool
    tenant: Level | None
    org: Level | None
    tenant_taken: int  # tokens drawn from each bucket (0: none, or no bucket)
    org_taken: int

    @property
    def too_large(self) -> bool:
        """The estimate exceeds a bucket's capacity: no wait makes it fit."""
        return not self.allowed and math.isinf(self.wait)


def draw(level: Level, limit: Limit, now: float, amount: int) -> Draw:
    """Take ``amount`` tokens if the bucket holds them now; a refusal takes nothing."""
    if amount < 0:
        raise ValueError(f"cannot reserve {amount} tokens")
    current = refill(level, limit, now)
    if amount > limit.capacity:
        return Draw(False, math.inf, current)
    short = (amount - current.tokens) / limit.rate
    if short <= EARLY:
        return Draw(True, 0.0, Level(current.tokens - amount, current.at, current.queue))
    return Draw(False, short, current)


def reserve_pair(
    tenant: Level | None,
    tenant_limit: Limit | None,
    org: Level | None,
    org_limit: Limit | None,
    now: float,
    amount: int,
    enforce_tenant: bool = True,
    enforce_org: bool = True,
) -> PairReserve:
    """Draw ``amount`` from both buckets, or from neither.

    A missing limit means no bucket. A refusal that is not enforced (shadow mode)
    is reported, does not block, and draws nothing from the bucket that refused.
    """
    t = _draw(tenant, tenant_limit, now, amount)
    o = _draw(org, org_limit, now, amount)
    t_refused = t is not None and not t.allowed
    o_refused = o is not None and not o.allowed
    t_blocks, o_blocks = t_refused and enforce_tenant, o_refused and enforce_org
    if t_blocks or o_blocks:
        wait = max(r.wait for r, blocks in ((t, t_blocks), (o, o_blocks)) if r and blocks)
        t_level = _current(tenant, tenant_limit, now)
        o_level = _current(org, org_limit, now)
        return PairReserve(False, wait, t_refused, o_refused, t_level, o_level, 0, 0)
    return PairReserve(
        True,
        0.0,
        t_refused,
        o_refused,
        t.level if t else None,
        o.level if o else None,
        amount if t and t.allowed else 0,
        amount if o and o.allowed else 0,
    )


def settle(level: Level, limit: Limit, now: float, difference: int) -> Level:
    """Charge ``difference`` more tokens (a negative one is a refund).

    A charge may take the bucket into debt; a refund never fills it past its capacity.
    """
    current = refill(level, limit, now)
    return Level(min(limit.capacity, current.tokens - difference), current.at, current.queue)


def _draw(level: Level | None, limit: Limit | None, now: float, amount: int) -> Draw | None:
    if limit is None:
        return None
    return draw(level if level is not None else full(limit, now), limit, now, amount)


def _current(level: Level | None, limit: Limit | None, now: float) -> Level | None:
    if limit is None:
        return None
    return refill(level, limit, now) if level is not None else full(limit, now)


@dataclass(frozen=True, slots=True)
class Reservation:
    """What a backend drew for one call, to be settled once its usage is known."""

    id: str
    tenant_key: str
    tenant_limit: Limit | None
    org_key: str
    org_limit: Limit | None
    tenant_taken: int
    org_taken: int
    local: bool = False  # drawn from this replica's own buckets while Redis was away

    @property
    def tokens(self) -> int:
        return max(self.tenant_taken, self.org_taken)


@dataclass(frozen=True, slots=True)
class Reserved:
    """A backend's answer: the arithmetic's, and the reservation when it was allowed."""

    result: PairReserve
    reservation: Reservation | None


@dataclass(frozen=True, slots=True)
class Settled:
    """``applied`` is False for a reservation already settled, or kept past its time."""

    applied: bool
    tenant: Level | None
    org: Level | None
