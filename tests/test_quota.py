"""Admission through ``Quota``: the same test bodies against every bucket backend."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator

import pytest

from tests.upstreams import Clock
from tollhouse.api.classify import RequestClass
from tollhouse.config.policy import Policy, parse_policy
from tollhouse.quota.admission import Decision, Quota, go_duration
from tollhouse.quota.backends import Buckets, buckets_from_url
from tollhouse.quota.memory import MemoryBuckets

RUN = RequestClass.RUN_CREATE


@pytest.fixture(params=["memory", "redis"])
async def buckets(request: pytest.FixtureRequest) -> AsyncIterator[Buckets]:
    if request.param == "memory":
        backend = buckets_from_url("memory://")
    else:
        url = request.getfixturevalue("redis_url")
        backend = buckets_from_url(url)
        # a clean slate per test: the buckets live in a shared server
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        await client.flushdb()
        await client.aclose()
    yield backend
    await backend.close()


def policy(**overrides: object) -> Policy:
    data: dict[str, object] = {
        "tenants": {
            "acme": {"limits": {"RUN_CREATE": {"requests_per_unit": 100, "burst": 50}}},
            "globex": {"limits": {"RUN_CREATE": {"requests_per_unit": 100, "burst": 50}}},
            "initech": {
                "limits": {"RUN_CREATE": {"requests_per_unit": 100, "burst": 50}},
                "shadow_mode": True,
            },
        },
        "organization": {"RUN_CREATE": {"requests_per_unit": 60, "burst": 60}},
    }
    data.update(overrides)
    return parse_policy(data, "test")


async def burst(quota: Quota, tenant: str, n: int) -> list[str]:
    return [(await quota.admit(tenant, RUN)).outcome for _ in range(n)]


async def test_a_burst_admits_the_bucket_capacity_within_one_refill(buckets: Buckets) -> None:
    quota = Quota(buckets, policy())
    outcomes = await burst(quota, "acme", 250)
    admitted = outcomes.count("forwarded")
    # 50 tokens of burst; 100/min refills one token per 0.6 s while the loop runs
    assert 50 <= admitted <= 51
    assert outcomes[:50] == ["forwarded"] * 50
    assert outcomes.count("throttled") == 250 - admitted


async def test_the_refusal_names_the_tenant_limit_and_says_when_to_retry(buckets: Buckets) -> None:
    quota = Quota(buckets, policy())
    await burst(quota, "acme", 50)
    decision = await quota.admit("acme", RUN)
    assert not decision.allowed
    assert decision.refused_by == "tenant"
    error = decision.refusal()
    assert error.status == 429
    assert error.type == "requests"
    assert error.code == "rate_limit_exceeded"
    assert "tenant 'acme'" in error.message
    assert "RUN_CREATE" in error.message
    headers = dict(error.headers)
    assert 0.0 < decision.wait <= 0.6
    assert headers[b"retry-after"] == b"1"
    assert 1 <= int(headers[b"retry-after-ms"]) <= 600
    assert headers[b"x-ratelimit-limit-requests"] == b"100"
    assert headers[b"x-ratelimit-remaining-requests"] == b"0"
    assert headers[b"x-ratelimit-reset-requests"].endswith(b"s")


async def test_the_organisation_bucket_caps_the_sum_of_all_tenants(buckets: Buckets) -> None:
    quota = Quota(buckets, policy())
    acme = await burst(quota, "acme", 40)
    globex = await burst(quota, "globex", 40)
    admitted = acme.count("forwarded") + globex.count("forwarded")
    assert 60 <= admitted <= 61
    assert acme.count("forwarded") == 40  # acme came first and fit
    refused = await quota.admit("globex", RUN)
    assert refused.refused_by == "organization"
    assert "organization" in refused.refusal().message


async def test_a_refused_tenant_does_not_spend_the_organisation_budget(buckets: Buckets) -> None:
    quota = Quota(buckets, policy())
    await burst(quota, "acme", 200)  # 50 admitted, 150 refused by acme's own bucket
    globex = await burst(quota, "globex", 10)
    assert globex.count("forwarded") == 10


async def test_shadow_mode_counts_refusals_and_lets_requests_through(buckets: Buckets) -> None:
    quota = Quota(buckets, policy())
    outcomes = await burst(quota, "initech", 55)
    assert outcomes[:50] == ["forwarded"] * 50
    assert set(outcomes[50:]) == {"shadow_throttled"} or outcomes.count("shadow_throttled") >= 4


async def test_tenants_without_limits_only_meet_the_organisation_bucket(buckets: Buckets) -> None:
    quota = Quota(buckets, policy())
    outcomes = await burst(quota, "walk-in", 70)
    assert 60 <= outcomes.count("forwarded") <= 61


async def test_shaping_waits_first_come_first_served_then_refuses(buckets: Buckets) -> None:
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    shaped = policy(
        organization={"RUN_CREATE": {"requests_per_unit": 60, "burst": 2}},
        shaping={"RUN_CREATE": {"max_wait": 3.0}},
    )
    quota = Quota(buckets, shaped, sleep=record)
    outcomes = await burst(quota, "walk-in", 8)
    # two from the burst, then one per second of refill for up to 3 s of waiting
    assert outcomes[:5] == ["forwarded"] * 5
    assert outcomes[5:] == ["throttled"] * 3
    assert waits == sorted(waits)  # later arrivals wait longer: first come, first served
    assert [round(w) for w in waits] == [1, 2, 3]


async def test_reloading_the_policy_keeps_bucket_levels(buckets: Buckets) -> None:
    quota = Quota(buckets, policy())
    await burst(quota, "acme", 50)
    quota.update(policy(organization={"RUN_CREATE": {"requests_per_unit": 1000}}))
    assert (await quota.admit("acme", RUN)).outcome == "throttled"


async def test_concurrent_admissions_never_overspend(buckets: Buckets) -> None:
    quota = Quota(buckets, policy())
    outcomes = await asyncio.gather(*(quota.admit("acme", RUN) for _ in range(120)))
    assert 50 <= sum(d.allowed for d in outcomes) <= 51


# -- clients refused in the same moment are told retry times of their own ---------------

SLOW = {"requests_per_unit": 120, "unit": "hour", "burst": 2}  # one token every 30 s


def slow_policy(**retries: object) -> Policy:
    return policy(
        tenants={"acme": {"limits": {"RUN_CREATE": SLOW}}},
        retries={"max_retry_after": 120, **retries},
    )


async def refusals(quota: Quota, tenant: str, n: int) -> list[Decision]:
    decisions = await asyncio.gather(*(quota.admit(tenant, RUN) for _ in range(n)))
    return [decision for decision in decisions if not decision.allowed]


async def test_clients_refused_at_once_are_told_to_come_back_one_token_apart(
    buckets: Buckets,
) -> None:
    quota = Quota(buckets, slow_policy())
    refused = await refusals(quota, "acme", 7)
    waits = sorted(decision.wait for decision in refused)
    # 2 of burst, then one retry time per token to come, 30 s apart, up to 120 s
    assert waits == pytest.approx([30, 60, 90, 120, 120], abs=0.5)
    for decision in refused:
        headers = dict(decision.refusal().headers)
        assert int(headers[b"retry-after-ms"]) == math.ceil(decision.wait * 1000)
        assert int(headers[b"retry-after"]) == math.ceil(decision.wait)
        assert headers[b"x-ratelimit-limit-requests"] == b"120"
        assert headers[b"x-ratelimit-remaining-requests"] == b"0"
        # full again only once the last client told to retry has had its token
        reset = go_seconds(headers[b"x-ratelimit-reset-requests"].decode())
        assert reset == pytest.approx(decision.wait + 60, abs=0.5)
        assert f"Please try again in {go_duration(decision.wait)}." in decision.refusal().message


async def test_without_spread_every_client_refused_at_once_hears_the_same_time(
    buckets: Buckets,
) -> None:
    quota = Quota(buckets, slow_policy(spread=False))
    refused = await refusals(quota, "acme", 7)
    assert [decision.wait for decision in refused] == pytest.approx([30] * 5, abs=0.5)


async def test_the_organisation_queues_every_tenant_it_refuses_in_one_line(
    buckets: Buckets,
) -> None:
    slow_org = {"RUN_CREATE": {"requests_per_unit": 120, "unit": "hour", "burst": 1}}
    quota = Quota(buckets, policy(organization=slow_org))
    assert (await quota.admit("acme", RUN)).allowed
    refused = [await quota.admit(tenant, RUN) for tenant in ("globex", "acme", "walk-in")]
    assert {decision.refused_by for decision in refused} == {"organization"}
    # one line across tenants, no further ahead than the default spread of 60 s
    assert [decision.wait for decision in refused] == pytest.approx([30, 60, 60], abs=0.5)
    # globex's own bucket spent nothing and queued nobody: it is as good as new
    globex = refused[0].tenant_view
    assert globex is not None
    assert (globex.remaining, globex.reset) == (50, 0.0)


async def test_shadow_mode_queues_nobody(buckets: Buckets) -> None:
    quota = Quota(
        buckets,
        policy(tenants={"initech": {"limits": {"RUN_CREATE": SLOW}, "shadow_mode": True}}),
    )
    outcomes = await burst(quota, "initech", 6)
    assert outcomes == ["forwarded"] * 2 + ["shadow_throttled"] * 4
    decision = await quota.admit("initech", RUN)
    assert decision.tenant_view is not None
    assert decision.tenant_view.reset == pytest.approx(60, abs=0.5)  # nobody queued ahead


def go_seconds(text: str) -> float:
    """Read back a ``go_duration``: ``1m30.5s``, ``250ms``."""
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    seconds = 0.0
    for value, unit in re.findall(r"([\d.]+)([hms])", text):
        seconds += float(value) * {"h": 3600, "m": 60, "s": 1}[unit]
    return seconds


async def test_the_queue_drains_as_its_retry_times_pass() -> None:
    clock = Clock(1000.0)
    quota = Quota(MemoryBuckets(clock), slow_policy())
    refused = await refusals(quota, "acme", 7)  # none of them ever comes back
    assert max(decision.wait for decision in refused) == pytest.approx(120)
    clock.advance(45)  # one token earned; the times handed out run to 120 s
    assert (await quota.admit("acme", RUN)).allowed  # not held back for anyone
    late = await quota.admit("acme", RUN)
    assert late.wait == pytest.approx(120 - 45 + 30)  # behind those still due
    clock.advance(200)  # every time handed out has passed
    await burst(quota, "acme", 2)
    drained = await quota.admit("acme", RUN)
    assert drained.wait == pytest.approx(30)  # the next token, as if nobody had queued
