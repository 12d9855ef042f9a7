"""Tenant identity: the header allow-list, upstream organisation and project, bounded buckets."""

from __future__ import annotations

import logging
import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from sqlmodel import Session, select

from tests.conftest import running_proxy
from tests.servers import ServerThread, serve
from tests.upstreams import Clock
from tollhouse.api.classify import RequestClass
from tollhouse.config.policy import Policy, parse_policy
from tollhouse.ledger.models import RequestCount
from tollhouse.proxy.tenants import (
    IdentityRefused,
    Tenants,
    UnknownKey,
    UnknownTenant,
    hash_key,
    new_key,
)
from tollhouse.quota.admission import Quota
from tollhouse.quota.bucket import Level, Limit, take_pair
from tollhouse.quota.memory import SWEEP_PER_TAKE, MemoryBuckets
from tollhouse_simulator import Simulator, SimulatorConfig, create_app

HEADER = "X-Tollhouse-Tenant"
GET = RequestClass.GET
ACME_KEY, GLOBEX_KEY = new_key(), new_key()
EVIL = [(b"OpenAI-Organization", b"org-evil"), (b"openai-project", b"proj_evil")]


def header_policy(unlisted: str = "deny", **acme: Any) -> Policy:
    return parse_policy(
        {
            "identify": {"mode": "header", "unlisted": unlisted},
            "tenants": {
                "acme": {
                    "upstream": {"organization": "org-acme1", "project": "proj_acme1"},
                    **acme,
                },
                "globex": {"upstream": {"project": "proj_globex1"}},
                "initech": {},
            },
            "default_limits": {GET: {"requests_per_unit": 300, "unit": "minute", "burst": 100}},
            "organization": {GET: {"requests_per_unit": 1_000_000, "unit": "minute"}},
        },
        "test",
    )


def keys_policy() -> Policy:
    return parse_policy(
        {
            "identify": {"mode": "keys"},
            "tenants": {
                "acme": {"keys": [hash_key(ACME_KEY)], "upstream": {"project": "proj_acme1"}},
                "globex": {"keys": [hash_key(GLOBEX_KEY)]},
            },
        },
        "test",
    )


def bearer(key: str) -> tuple[bytes, bytes]:
    return (b"authorization", f"Bearer {key}".encode())


# -- which headers go upstream --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "upstream_key", "sent", "forwarded"),
    [
        # keys mode: the tenant's organisation and project never pass, in any case
        (
            "keys",
            "sk-real",
            [bearer(GLOBEX_KEY), *EVIL, (b"OPENAI-PROJECT", b"proj_evil2"), (b"x-app", b"1")],
            [(b"x-app", b"1"), (b"authorization", b"Bearer sk-real")],
        ),
        # ... and a tenant with `upstream` set gets its own
        (
            "keys",
            "sk-real",
            [bearer(ACME_KEY), *EVIL],
            [(b"openai-project", b"proj_acme1"), (b"authorization", b"Bearer sk-real")],
        ),
        # header mode with tollhouse's key: the policy's values replace the app's
        (
            "header",
            "sk-real",
            [(b"x-tollhouse-tenant", b"acme"), bearer("sk-app"), *EVIL],
            [
                (b"openai-organization", b"org-acme1"),
                (b"openai-project", b"proj_acme1"),
                (b"authorization", b"Bearer sk-real"),
            ],
        ),
        (
            "header",
            "sk-real",
            [(b"x-tollhouse-tenant", b"globex"), *EVIL],
            [
                (b"OpenAI-Organization", b"org-evil"),
                (b"openai-project", b"proj_globex1"),
                (b"authorization", b"Bearer sk-real"),
            ],
        ),
        (
            "header",
            "sk-real",
            [(b"x-tollhouse-tenant", b"initech"), *EVIL],
            [*EVIL, (b"authorization", b"Bearer sk-real")],
        ),
        # header mode with the app's own key: the app's own headers pass
        (
            "header",
            None,
            [(b"x-tollhouse-tenant", b"acme"), bearer("sk-app"), *EVIL],
            [bearer("sk-app"), *EVIL],
        ),
        # default mode: nothing is changed
        ("default", None, [bearer("sk-app"), *EVIL], [bearer("sk-app"), *EVIL]),
    ],
)
def test_forwarded_headers(
    mode: str,
    upstream_key: str | None,
    sent: list[tuple[bytes, bytes]],
    forwarded: list[tuple[bytes, bytes]],
) -> None:
    policy = keys_policy() if mode == "keys" else header_policy()
    if mode == "default":
        policy = parse_policy({}, "test")
    _, headers = Tenants(policy, upstream_api_key=upstream_key).identify(sent)
    assert headers == forwarded


def test_upstream_values_that_would_be_ignored_are_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="tollhouse.proxy.tenants"):
        Tenants(header_policy())
    assert "tenants acme, globex: upstream organization/project" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="tollhouse.proxy.tenants"):
        Tenants(header_policy(), upstream_api_key="sk-real")
    assert caplog.text == ""


# -- the header-mode allow-list --------------------------------------------------------------


@pytest.mark.parametrize(
    ("unlisted", "value", "tenant", "label"),
    [
        ("deny", b"acme", "acme", "acme"),
        ("deny", b" initech ", "initech", "initech"),
        ("deny", b"default", "default", "default"),  # the default tenant is always accepted
        ("deny", b"", "default", "default"),
        (None, None, "default", "default"),  # no header at all
        ("deny", b"mallory", None, None),
        ("deny", b"Acme", None, None),
        ("deny", b"other", None, None),
        ("allow", b"mallory", "mallory", "other"),
        ("allow", b"tenant-7.eu_west", "tenant-7.eu_west", "other"),
        ("allow", b"acme", "acme", "acme"),
        ("allow", b"other", None, None),  # reserved
        ("allow", b"_org", None, None),
        ("allow", b"two words", None, None),
        ("allow", b"caf\xc3\xa9", None, None),
        ("allow", b"a" * 64, None, None),  # longer than a tenant name may be
        ("allow", b"x\x00y", None, None),
    ],
)
def test_header_mode_accepts_listed_tenants_only(
    unlisted: str | None, value: bytes | None, tenant: str | None, label: str | None
) -> None:
    tenants = Tenants(header_policy(unlisted or "deny"))
    headers = [] if value is None else [(b"X-Tollhouse-Tenant", value)]
    if tenant is None:
        with pytest.raises(UnknownTenant) as refused:
            tenants.identify(headers)
        response = refused.value.response()
        assert (response.status, response.type, response.code) == (
            403,
            "invalid_request_error",
            "unknown_tenant",
        )
        assert response.message.startswith(f"The {HEADER} header names tenant ")
        reason = "not a usable tenant name" if unlisted == "allow" else "not in this tollhouse's"
        assert reason in response.message
        assert isinstance(refused.value, IdentityRefused)
        return
    identity, forwarded = tenants.identify(headers)
    assert (identity.tenant, identity.label) == (tenant, label)
    assert forwarded == []


def test_an_unknown_tenant_is_echoed_short_and_escaped() -> None:
    tenants = Tenants(header_policy())
    with pytest.raises(UnknownTenant) as refused:
        tenants.identify([(b"x-tollhouse-tenant", b"\x1b[31" + b"z" * 10_000)])
    message = refused.value.response().message
    assert "\x1b" not in message
    assert "'\\x1b[31" + "z" * 60 + "'..." in message  # 64 characters of the value
    assert "z" * 61 not in message
    assert len(str(refused.value)) < 150  # what the proxy logs


def test_unknown_keys_and_unknown_tenants_are_refused_alike() -> None:
    assert issubclass(UnknownKey, IdentityRefused)
    assert issubclass(UnknownTenant, IdentityRefused)
    with pytest.raises(IdentityRefused):
        Tenants(keys_policy(), upstream_api_key="sk-real").identify([bearer("th-forged")])


# -- bounded memory ---------------------------------------------------------------------------

WALK_INS = 60_000


async def admit_walk_ins(
    tenants: Tenants, quota: Quota, buckets: MemoryBuckets, clock: Clock
) -> tuple[int, int]:
    """Send ``WALK_INS`` distinct tenant names, 1 ms apart; (admitted, most buckets held)."""
    admitted, most = 0, 0
    for n in range(WALK_INS):
        clock.advance(0.001)
        try:
            identity, _ = tenants.identify([(b"x-tollhouse-tenant", f"walk-in-{n}".encode())])
        except UnknownTenant:
            pass
        else:
            admitted += (await quota.admit(identity.tenant, GET)).allowed
        most = max(most, len(buckets))
    return admitted, most


async def drained(quota: Quota, tenant: str) -> None:
    while (await quota.admit(tenant, GET)).allowed:
        pass


async def test_refused_walk_ins_leave_nothing_behind() -> None:
    clock = Clock(1000.0)
    policy = header_policy()
    buckets = MemoryBuckets(clock)
    tenants, quota = Tenants(policy), Quota(buckets, policy)
    await quota.admit("acme", GET)
    held = len(buckets)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        admitted, most = await admit_walk_ins(tenants, quota, buckets, clock)
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert (admitted, most) == (0, held)
    assert grown < 64 * 1024, f"{grown} bytes kept after {WALK_INS} refused tenants"


async def test_allowed_walk_ins_keep_the_bucket_store_bounded() -> None:
    clock = Clock(1000.0)
    policy = header_policy("allow", limits={GET: {"requests_per_unit": 10, "unit": "hour"}})
    buckets = MemoryBuckets(clock)
    tenants, quota = Tenants(policy), Quota(buckets, policy)
    await drained(quota, "acme")  # 10 an hour: a minute of walk-ins does not refill it
    admitted, most = await admit_walk_ins(tenants, quota, buckets, clock)
    assert admitted == WALK_INS
    # 1,000 new tenants a second, each bucket full again 0.2 s after its one request
    assert most <= 500
    assert (await quota.admit("acme", GET)).outcome == "throttled"  # its level was kept
    # Once everything has refilled, each admission forgets SWEEP_PER_TAKE idle buckets.
    clock.advance(3600)
    held = len(buckets)
    for _ in range(held // SWEEP_PER_TAKE + 1):
        await quota.admit("initech", GET)
    assert len(buckets) <= 2  # initech's and the organisation's


def test_forgetting_full_buckets_changes_no_answer() -> None:
    """Memory buckets answer exactly as buckets that never forget would."""
    rng = random.Random(7)
    clock = Clock(0.0)
    buckets = MemoryBuckets(clock)
    kept: dict[str, Level] = {}
    limits = {
        "fast": Limit(rate=50.0, capacity=5.0),
        "slow": Limit(rate=0.5, capacity=3.0),
        "org": Limit(rate=20.0, capacity=30.0),
    }
    for _ in range(20_000):
        clock.advance(rng.choice([0.0, 0.001, 0.01, 0.1, 1.0]))
        kind = rng.choice(["fast", "slow"])
        tenant = f"{kind}:{rng.randrange(200)}"
        wait = rng.choice([0.0, 0.0, 0.5])
        expected = take_pair(
            kept.get(tenant), limits[kind], kept.get("org"), limits["org"], clock(), wait
        )
        if expected.tenant is not None:
            kept[tenant] = expected.tenant
        if expected.org is not None:
            kept["org"] = expected.org
        got = buckets.take_now(tenant, limits[kind], "org", limits["org"], wait)
        assert (got.allowed, got.wait, got.tenant_refused, got.org_refused) == (
            expected.allowed,
            expected.wait,
            expected.tenant_refused,
            expected.org_refused,
        )
    assert len(buckets) < len(kept)


# -- through a running proxy, with the real openai client -----------------------------------


@pytest.fixture
def recorded() -> Iterator[tuple[ServerThread, Simulator]]:
    """The simulator, and its record of every request that reached it."""
    app = create_app(SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05))
    with serve(app) as server:
        yield server, app.state.simulator


def request_counts(engine: Any) -> dict[str, int]:
    with Session(engine) as session:
        rows = session.exec(select(RequestCount)).all()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.tenant] = counts.get(row.tenant, 0) + row.count
    return counts


def test_an_unlisted_tenant_is_refused_before_the_upstream(
    recorded: tuple[ServerThread, Simulator],
) -> None:
    server, simulator = recorded
    with running_proxy(server.url + "/v1", policy=header_policy()) as proxy:
        before = len(simulator.requests)
        mallory = proxy.client(default_headers={HEADER: "mallory"})
        with pytest.raises(openai.PermissionDeniedError) as refused:
            mallory.beta.assistants.list()
        assert refused.value.code == "unknown_tenant"
        assert "mallory" in refused.value.message
        assert len(simulator.requests) == before
        rejected = {"tenant": "other", "outcome": "rejected", "class": "GET"}
        assert proxy.sample("tollhouse_requests_total", operation="assistants.list", **rejected)

        acme = proxy.client(default_headers={HEADER: "acme"})
        assert acme.beta.threads.create().id.startswith("thread_")
        assert len(simulator.requests) == before + 1
        proxy.flush()
        counts = request_counts(proxy.tollhouse.engine)
    assert counts == {"other": 1, "acme": 1}


def test_keys_mode_sends_the_policy_project_never_the_tenants(
    recorded: tuple[ServerThread, Simulator],
) -> None:
    server, simulator = recorded
    with running_proxy(
        server.url + "/v1", policy=keys_policy(), upstream_api_key="sk-real"
    ) as proxy:
        globex = proxy.client(api_key=GLOBEX_KEY, organization="org-evil", project="proj_evil")
        globex.beta.assistants.list()
        seen = simulator.requests[-1].headers
        assert "openai-organization" not in seen
        assert "openai-project" not in seen
        assert seen["authorization"] == "Bearer sk-real"

        acme = proxy.client(api_key=ACME_KEY, default_headers={"OpenAI-Organization": "org-evil"})
        acme.beta.threads.create(extra_headers={"OpenAI-Project": "proj_evil"})
        seen = simulator.requests[-1].headers
        assert "openai-organization" not in seen
        assert seen["openai-project"] == "proj_acme1"
        assert seen["authorization"] == "Bearer sk-real"


def test_refused_tenants_are_counted_as_other_in_the_ledger(
    recorded: tuple[ServerThread, Simulator],
) -> None:
    server, simulator = recorded
    with running_proxy(server.url + "/v1", policy=header_policy()) as proxy:
        before = len(simulator.requests)
        with httpx.Client(base_url=proxy.url) as client:
            statuses = {
                client.get("/v1/assistants", headers={HEADER: f"who-{n}"}).status_code
                for n in range(200)
            }
        assert statuses == {403}
        proxy.flush()
        assert request_counts(proxy.tollhouse.engine) == {"other": 200}
    assert len(simulator.requests) == before
