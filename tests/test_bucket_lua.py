"""The Lua scripts on a real Redis server answer exactly as the bucket arithmetic in Python.

Redis's clock cannot be moved, so the script runs on its own time and each answer
is replayed through ``take_pair`` at the moment the script reports.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from tollhouse.quota.bucket import Level, Limit, take_pair
from tollhouse.quota.redis import RedisBuckets
from tollhouse.quota.reserve import Reservation, reserve_pair, settle

LIMITS = {
    "fast": Limit(rate=2000.0, capacity=3.0),  # refills between two calls
    "steady": Limit(rate=20.0, capacity=2.0),
    "slow": Limit(rate=0.5, capacity=2.0),
}
ORG = Limit(rate=300.0, capacity=10.0)


@pytest.fixture
async def redis_buckets(redis_url: str) -> AsyncIterator[RedisBuckets]:
    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    await client.aclose()
    buckets = RedisBuckets(redis_url)
    yield buckets
    await buckets.close()


def close(a: Level | None, b: Level | None) -> bool:
    if a is None or b is None:
        return a is b
    same_queue = a.queue == b.queue or a.queue == pytest.approx(b.queue, abs=1e-6)
    return a.tokens == pytest.approx(b.tokens, abs=1e-6) and same_queue


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_script_and_the_arithmetic_agree(redis_buckets: RedisBuckets, seed: int) -> None:
    rng = random.Random(seed)
    kept: dict[str, Level] = {}
    queued = shaped = 0
    for _ in range(600):
        kind = rng.choice(list(LIMITS))
        tenant = f"{kind}:{rng.randrange(3)}"
        org = rng.choice([ORG, None])
        max_wait = rng.choice([0.0, 0.0, 0.2])
        enforce_tenant = rng.random() < 0.9
        spread = rng.choice([0.0, 5.0, 60.0])
        got = await redis_buckets.take(
            tenant, LIMITS[kind], "org", org, max_wait, enforce_tenant, True, spread
        )
        assert got.tenant is not None
        now = got.tenant.at  # the server's clock at this step
        expected = take_pair(
            kept.get(tenant),
            LIMITS[kind],
            kept.get("org") if org else None,
            org,
            now,
            max_wait,
            enforce_tenant,
            True,
            spread,
        )
        assert (got.allowed, got.tenant_refused, got.org_refused) == (
            expected.allowed,
            expected.tenant_refused,
            expected.org_refused,
        )
        assert got.wait == pytest.approx(expected.wait, abs=1e-6)
        assert close(got.tenant, expected.tenant)
        assert close(got.org, expected.org)
        assert expected.tenant is not None
        kept[tenant] = expected.tenant
        if expected.org is not None:
            kept["org"] = expected.org
        queued += not got.allowed and got.wait > 1 / LIMITS[kind].rate + max_wait + 1e-3
        shaped += got.allowed and got.wait > 0
    assert queued > 10  # the sequence did queue callers behind others
    assert shaped > 10  # ... and shaped some


@pytest.mark.parametrize("seed", [4, 5])
async def test_the_reservation_scripts_and_the_arithmetic_agree(
    redis_buckets: RedisBuckets, seed: int
) -> None:
    rng = random.Random(seed)
    tpm = {"fast": Limit(rate=5000.0, capacity=800.0), "slow": Limit(rate=2.0, capacity=600.0)}
    org = Limit(rate=50.0, capacity=2000.0)
    kept: dict[str, Level] = {}
    open_: list[Reservation] = []
    outcomes = set()
    for _ in range(400):
        if open_ and rng.random() < 0.4:
            reservation = open_.pop(rng.randrange(len(open_)))
            actual = rng.choice([0, 100, 400, 900])
            settled = await redis_buckets.settle(reservation, actual)
            assert settled.applied
            for key, limit, taken, level in (
                (
                    reservation.tenant_key,
                    reservation.tenant_limit,
                    reservation.tenant_taken,
                    settled.tenant,
                ),
                (reservation.org_key, reservation.org_limit, reservation.org_taken, settled.org),
            ):
                if taken and limit is not None:
                    assert level is not None
                    kept[key] = settle(kept[key], limit, level.at, actual - taken)
                    assert close(level, kept[key])
            outcomes.add("settled")
            continue
        kind = rng.choice(list(tpm))
        tenant = f"{kind}:{rng.randrange(3)}"
        amount = rng.choice([0, 50, 300, 700, 900])
        enforce = rng.random() < 0.9
        got = await redis_buckets.reserve(tenant, tpm[kind], "org", org, amount, enforce)
        assert got.result.tenant is not None
        now = got.result.tenant.at
        expected = reserve_pair(
            kept.get(tenant), tpm[kind], kept.get("org"), org, now, amount, enforce
        )
        assert got.result.allowed == expected.allowed
        assert got.result.wait == pytest.approx(expected.wait, abs=1e-6)
        assert (got.result.tenant_taken, got.result.org_taken) == (
            expected.tenant_taken,
            expected.org_taken,
        )
        assert close(got.result.tenant, expected.tenant)
        assert close(got.result.org, expected.org)
        if expected.allowed:
            assert got.reservation is not None
            open_.append(got.reservation)
            assert expected.tenant is not None
            assert expected.org is not None
            kept[tenant], kept["org"] = expected.tenant, expected.org
        outcomes.add("too large" if expected.too_large else str(expected.allowed))
    assert outcomes == {"settled", "too large", "True", "False"}
