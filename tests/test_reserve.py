"""Token-per-minute reservations: the arithmetic as tables, then every backend, then replicas."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tests.upstreams import Clock
from tollhouse.quota.admission import token_headers
from tollhouse.quota.backends import Buckets, buckets_from_url
from tollhouse.quota.bucket import Level, Limit
from tollhouse.quota.memory import MemoryBuckets
from tollhouse.quota.redis import RedisBuckets
from tollhouse.quota.reserve import draw, reserve_pair, settle

TPM = Limit(rate=1000 / 60, capacity=1000)  # 1,000 tokens a minute


@pytest.mark.parametrize(
    ("level", "now", "amount", "allowed", "wait", "after"),
    [
        (Level(1000, 0.0), 0.0, 400, True, 0.0, 600),
        (Level(400, 0.0), 0.0, 400, True, 0.0, 0),  # exactly what is left
        (Level(300, 0.0), 0.0, 400, False, 6.0, 300),  # 100 short: 6 s of refill
        (Level(300, 0.0), 6.0, 400, True, 0.0, 0),  # ... and 6 s later it fits
        (Level(-200, 0.0), 0.0, 1, False, 201 * 0.06, -200),  # a debt is paid back first
        (Level(1000, 0.0), 0.0, 1001, False, math.inf, 1000),  # never fits: too large
        (Level(1000, 0.0), 0.0, 0, True, 0.0, 1000),  # nothing to reserve
    ],
)
def test_draw(
    level: Level, now: float, amount: int, allowed: bool, wait: float, after: float
) -> None:
    result = draw(level, TPM, now, amount)
    assert result.allowed is allowed
    assert result.wait == pytest.approx(wait)
    assert result.level.tokens == pytest.approx(after)


def test_a_negative_reservation_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot reserve -1 tokens"):
        draw(Level(1000, 0.0), TPM, 0.0, -1)


@pytest.mark.parametrize(
    ("tenant", "org", "enforce_tenant", "allowed", "taken", "after"),
    [
        (Level(1000, 0), Level(1000, 0), True, True, (300, 300), (700, 700)),
        # the organisation lacks the tokens: the tenant's are not spent either
        (Level(1000, 0), Level(100, 0), True, False, (0, 0), (1000, 100)),
        # the tenant lacks them: nor are the organisation's
        (Level(100, 0), Level(1000, 0), True, False, (0, 0), (100, 1000)),
        # shadow mode: reported, let through, drawn only where it fits
        (Level(100, 0), Level(1000, 0), False, True, (0, 300), (100, 700)),
    ],
)
def test_reserve_pair_draws_from_both_or_neither(
    tenant: Level,
    org: Level,
    enforce_tenant: bool,
    allowed: bool,
    taken: tuple[int, int],
    after: tuple[float, float],
) -> None:
    result = reserve_pair(tenant, TPM, org, TPM, 0.0, 300, enforce_tenant=enforce_tenant)
    assert result.allowed is allowed
    assert (result.tenant_taken, result.org_taken) == taken
    assert result.tenant is not None
    assert result.org is not None
    assert (result.tenant.tokens, result.org.tokens) == pytest.approx(after)


def test_a_refusal_waits_for_the_slower_bucket_and_too_large_never_fits() -> None:
    slow = Limit(rate=10.0, capacity=500)
    refused = reserve_pair(Level(0, 0), TPM, Level(0, 0), slow, 0.0, 300)
    assert refused.wait == pytest.approx(30.0)  # 300 tokens at 10 a second
    assert not refused.too_large
    huge = reserve_pair(Level(0, 0), TPM, Level(0, 0), slow, 0.0, 600)
    assert huge.too_large
    assert not reserve_pair(None, None, None, None, 0.0, 10**9).too_large  # no buckets at all


@pytest.mark.parametrize(
    ("level", "now", "difference", "after"),
    [
        (Level(500, 0.0), 0.0, -200, 700),  # used 200 fewer than reserved: refunded
        (Level(900, 0.0), 0.0, -200, 1000),  # ... never past the capacity
        (Level(100, 0.0), 0.0, 300, -200),  # used 300 more: into debt
        (Level(100, 0.0), 6.0, 300, -100),  # refilled up to now first
        (Level(100, 0.0), 0.0, 0, 100),  # as estimated
    ],
)
def test_settle(level: Level, now: float, difference: int, after: float) -> None:
    assert settle(level, TPM, now, difference).tokens == pytest.approx(after)


@pytest.mark.parametrize(
    ("level", "remaining", "reset"),
    [
        (Level(1000, 0.0), b"1000", b"0s"),
        (Level(400, 0.0), b"400", b"36s"),
        (Level(-200, 0.0), b"0", b"1m12s"),  # in debt
    ],
)
def test_token_headers(level: Level, remaining: bytes, reset: bytes) -> None:
    assert token_headers(1000, TPM, level) == [
        (b"x-ratelimit-limit-tokens", b"1000"),
        (b"x-ratelimit-remaining-tokens", remaining),
        (b"x-ratelimit-reset-tokens", reset),
    ]


# -- every backend ---------------------------------------------------------------------------

SLOW_TPM = Limit(rate=1000 / 3600, capacity=1000)  # slow enough not to refill during a test
ORG_TPM = Limit(rate=3000 / 3600, capacity=3000)


async def flushed(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def buckets(request: pytest.FixtureRequest) -> AsyncIterator[Buckets]:
    if request.param == "memory":
        backend = buckets_from_url("memory://")
    else:
        url = request.getfixturevalue("redis_url")
        await flushed(url)
        backend = buckets_from_url(url)
    yield backend
    await backend.close()


async def reserve(buckets: Buckets, tenant: str, tokens: int) -> bool:
    reserved = await buckets.reserve(f"{tenant}:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, tokens)
    return reserved.result.allowed


async def test_a_reservation_draws_from_tenant_and_organisation(buckets: Buckets) -> None:
    reserved = await buckets.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 400)
    assert reserved.result.allowed
    assert reserved.reservation is not None
    assert reserved.reservation.tokens == 400
    assert reserved.result.tenant is not None
    assert reserved.result.org is not None
    assert reserved.result.tenant.tokens == pytest.approx(600, abs=0.1)
    assert reserved.result.org.tokens == pytest.approx(2600, abs=0.1)
    assert await reserve(buckets, "acme", 600)
    refused = await buckets.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 100)
    assert not refused.result.allowed
    assert refused.reservation is None
    assert refused.result.tenant_refused
    assert refused.result.wait == pytest.approx(360, abs=1)  # 100 tokens at 1,000 an hour
    # the refusal spent nothing at the organisation
    assert await reserve(buckets, "globex", 1000)


async def test_settling_refunds_or_charges_the_difference_once(buckets: Buckets) -> None:
    first = await buckets.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 800)
    assert first.reservation is not None
    settled = await buckets.settle(first.reservation, 300)  # used 500 fewer than reserved
    assert settled.applied
    assert settled.tenant is not None
    assert settled.tenant.tokens == pytest.approx(700, abs=0.1)
    again = await buckets.settle(first.reservation, 0)  # a second report changes nothing
    assert not again.applied
    assert await reserve(buckets, "acme", 700)
    assert not await reserve(buckets, "acme", 5)


async def test_a_call_that_used_more_than_reserved_puts_the_buckets_in_debt(
    buckets: Buckets,
) -> None:
    reserved = await buckets.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 900)
    assert reserved.reservation is not None
    settled = await buckets.settle(reserved.reservation, 1400)
    assert settled.tenant is not None
    assert settled.org is not None
    assert settled.tenant.tokens == pytest.approx(-400, abs=0.1)
    assert settled.org.tokens == pytest.approx(1600, abs=0.1)
    refused = await buckets.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 1)
    assert refused.result.wait == pytest.approx(401 * 3.6, abs=1)  # the debt first


async def test_a_call_that_never_reports_keeps_its_reservation(buckets: Buckets) -> None:
    assert await reserve(buckets, "acme", 1000)  # never settled
    assert not await reserve(buckets, "acme", 1)


async def test_an_estimate_larger_than_the_bucket_is_too_large(buckets: Buckets) -> None:
    refused = await buckets.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 1001)
    assert refused.result.too_large
    assert await reserve(buckets, "acme", 1000)  # and took nothing


async def test_concurrent_reservations_never_overspend(buckets: Buckets) -> None:
    results = await asyncio.gather(*(reserve(buckets, "acme", 100) for _ in range(30)))
    assert sum(results) == 10


async def test_an_unsettled_reservation_expires_and_is_kept() -> None:
    clock = Clock(0.0)
    buckets = MemoryBuckets(clock, reservation_ttl=60)
    reserved = await buckets.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 500)
    assert reserved.reservation is not None
    clock.advance(61)
    assert not (await buckets.settle(reserved.reservation, 0)).applied  # too late: kept


# -- replicas ----------------------------------------------------------------------------------


async def test_three_replicas_on_one_redis_hold_one_organisation_budget(redis_url: str) -> None:
    await flushed(redis_url)
    fallbacks: list[bool] = []
    replicas = [RedisBuckets(redis_url, replicas=3, on_fallback=fallbacks.append) for _ in range(3)]
    try:
        tenants = [f"tenant-{n}" for n in range(6)]  # each tenant could take 1,000 itself

        async def replica_asks(index: int) -> list[bool]:
            """One replica's twelve requests, one after another (one connection each), while
            the other two replicas send theirs."""
            replica = replicas[index]
            return [await reserve(replica, tenants[(index + 3 * k) % 6], 250) for k in range(12)]

        answers = await asyncio.gather(*(replica_asks(index) for index in range(3)))
        assert fallbacks == []  # every answer came from Redis, none from a local share
        assert sum(sum(each) for each in answers) == 12  # 3,000 at the organisation, not 9,000
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_refund_on_one_replica_serves_another(redis_url: str) -> None:
    await flushed(redis_url)
    one, two = RedisBuckets(redis_url), RedisBuckets(redis_url)
    try:
        taken = [await one.reserve(f"t{n}:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 1000) for n in "abc"]
        assert all(r.reservation is not None for r in taken)
        assert not (await two.reserve("d:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 600)).result.allowed
        reservation = taken[0].reservation
        assert reservation is not None
        assert (await one.settle(reservation, 200)).applied  # 800 back to the organisation
        assert (await two.reserve("d:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 600)).result.allowed
    finally:
        await one.close()
        await two.close()


async def test_without_redis_each_replica_reserves_from_its_share() -> None:
    from tests.services import free_port

    fallbacks: list[bool] = []
    away = RedisBuckets(
        f"redis://127.0.0.1:{free_port()}/0", replicas=2, on_fallback=fallbacks.append
    )
    try:
        first = await away.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 400)
        assert fallbacks == [True]
        assert first.reservation is not None
        assert first.reservation.local
        # this replica holds half of the tenant's 1,000
        assert not (
            await away.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 101)
        ).result.allowed
        assert (await away.settle(first.reservation, 100)).applied  # settled where it was drawn
        assert (await away.reserve("acme:tpm", SLOW_TPM, "_org:tpm", ORG_TPM, 400)).result.allowed
    finally:
        await away.close()
