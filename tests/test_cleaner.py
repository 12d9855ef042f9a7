"""The cleaner against the real simulator, the real proxy and openai client, and a real ledger.

Time is an injected clock shared by the simulator, the buckets and the cleaner; the
cleaner's waits for tokens move it, so a sweep of many simulated minutes runs in
seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread
from tests.upstreams import Clock, Faults, faulty_simulator, seeded_threads, threads
from tollhouse.api.classify import RequestClass
from tollhouse.cleanup.cleaner import Cleaner, CleanerSettings, SweepReport
from tollhouse.cleanup.pacing import CLEANER_TENANT, share_limit
from tollhouse.cleanup.summary import render
from tollhouse.config.policy import Policy, RateLimit, parse_policy
from tollhouse.ledger import lease
from tollhouse.ledger.engine import engine_from_url, migrate
from tollhouse.ledger.models import CleanupAudit, CleanupLease, CleanupSweep, OwnedObject
from tollhouse.metering.pricing import load_pricing
from tollhouse.proxy.tenants import Tenants
from tollhouse.quota.admission import Quota
from tollhouse.quota.backends import Buckets, buckets_from_url
from tollhouse.quota.memory import MemoryBuckets
from tollhouse.telemetry.metrics import Metrics
from tollhouse.upstream.forward import Forwarder, UpstreamSettings
from tollhouse_simulator import Simulator, SimulatorConfig

DAY = 86_400
HEADER = "X-Tollhouse-Tenant"
DELETE = RequestClass.DELETE


def policy(**cleanup: Any) -> Policy:
    return parse_policy(
        {
            "identify": {"mode": "header"},
            "tenants": {"acme": {}, "globex": {}, "initech": {}},
            "organization": cleanup.pop("organization", {}),
            "cleanup": {"ttl": {"threads": "30d", "vector_stores": "7d", "files": "30d"}} | cleanup,
        },
        "test",
    )


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock(float(int(time.time())))


@pytest.fixture
def upstream(clock: Clock) -> Iterator[tuple[ServerThread, Faults, Simulator]]:
    config = SimulatorConfig(clock=clock, file_processing_seconds=0, request_log_size=10_000)
    with faulty_simulator(config) as running:
        yield running


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    engine = engine_from_url(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    yield engine
    engine.dispose()


@asynccontextmanager
async def cleaner_for(
    engine: Engine,
    url: str,
    rules: Policy,
    clock: Clock,
    buckets: Buckets | None = None,
    **settings: Any,
) -> AsyncIterator[Cleaner]:
    """A cleaner wired as ``tollhouse cleanup`` wires it, on the injected clock."""
    forwarder = Forwarder(UpstreamSettings(url=url + "/v1"))
    await forwarder.open()
    known = Tenants(rules)
    cleaner = Cleaner(
        engine,
        forwarder,
        Quota(buckets if buckets is not None else MemoryBuckets(clock), rules),
        Metrics(CollectorRegistry(), known.labels),
        CleanerSettings("sk-test", **settings),
        known.label,
        clock=clock,
        sleep=clock.sleep,
    )
    try:
        yield cleaner
    finally:
        await forwarder.close()


def sample(cleaner: Cleaner, name: str, **labels: str) -> float:
    return cleaner.metrics.registry.get_sample_value(name, labels) or 0.0


def direct(server: ServerThread) -> openai.OpenAI:
    """A client of the upstream itself, bypassing tollhouse: objects of unknown ownership."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)


def audit_rows(engine: Engine) -> dict[str, CleanupAudit]:
    with Session(engine) as session:
        return {row.object_id: row for row in session.exec(select(CleanupAudit)).scalars()}


def ledger_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with Session(engine) as session:
        rows = session.exec(select(OwnedObject).order_by(col(OwnedObject.id))).scalars()
        return [tuple(row.model_dump().values()) for row in rows]


def upstream_ids(sim: Simulator) -> set[str]:
    ids = {o["id"] for o in sim.threads} | {o["id"] for o in sim.assistants}
    return ids | {s.id for s in sim.vector_stores} | {f.id for f in sim.files}


# -- what is stale, through the proxy ------------------------------------------------------


@pytest.fixture
def world(
    upstream: tuple[ServerThread, Faults, Simulator], clock: Clock
) -> Iterator[tuple[RunningProxy, dict[str, str]]]:
    """Three tenants' objects made through tollhouse, a month ago, and some used since."""
    server, _, _ = upstream
    rules = policy(tenants={"acme": {"ttl": {"threads": "90d"}}})
    with running_proxy(
        server.url + "/v1", policy=rules, upstream_api_key="sk-test", clock=clock
    ) as proxy:
        acme, globex, initech = (
            proxy.client(default_headers={HEADER: name}) for name in ("acme", "globex", "initech")
        )
        keep = {"tollhouse_keep": "true"}
        ids: dict[str, str] = {}
        ids["stale_thread"] = globex.beta.threads.create().id
        globex.beta.threads.messages.create(ids["stale_thread"], role="user", content="hello")
        ids["kept_thread"] = globex.beta.threads.create(metadata=keep).id
        ids["kept_later"] = globex.beta.threads.create().id
        globex.beta.threads.update(ids["kept_later"], metadata=keep)  # the ledger never sees it
        file = globex.files.create(file=("a.txt", b"stale words " * 100), purpose="assistants")
        ids["store_file"] = file.id
        ids["stale_store"] = globex.vector_stores.create(file_ids=[file.id]).id
        held = globex.files.create(file=("b.txt", b"kept words " * 10), purpose="assistants")
        ids["held_file"] = held.id
        ids["kept_store"] = globex.vector_stores.create(file_ids=[held.id], metadata=keep).id
        ids["lone_file"] = globex.files.create(file=("c.txt", b"c"), purpose="assistants").id
        ids["assistant"] = globex.beta.assistants.create(model="gpt-4o").id
        ids["acme_thread"] = acme.beta.threads.create().id
        ids["used_thread"] = initech.beta.threads.create().id
        ids["searched_store"] = initech.vector_stores.create().id
        ids["unknown_thread"] = direct(server).beta.threads.create().id
        ids["unknown_store"] = direct(server).vector_stores.create().id
        clock.advance(29 * DAY)
        initech.beta.threads.messages.create(ids["used_thread"], role="user", content="again")
        initech.vector_stores.search(ids["searched_store"], query="anything")
        proxy.flush()
        clock.advance(2 * DAY)
        yield proxy, ids


STALE = {"stale_thread", "stale_store", "store_file", "lone_file"}


async def test_a_dry_run_finds_what_is_stale_and_changes_nothing(
    world: tuple[RunningProxy, dict[str, str]],
    upstream: tuple[ServerThread, Faults, Simulator],
    clock: Clock,
) -> None:
    proxy, ids = world
    server, _, sim = upstream
    engine = proxy.tollhouse.engine
    before, upstream_before, requests_before = (
        ledger_rows(engine),
        upstream_ids(sim),
        len(sim.requests),
    )
    async with cleaner_for(engine, server.url, proxy.tollhouse.quota.policy, clock) as cleaner:
        report = await cleaner.sweep(apply=False)
    assert {f.record.id for f in report.found} == {ids[name] for name in STALE}
    assert report.deleted == []
    assert ledger_rows(engine) == before
    assert upstream_ids(sim) == upstream_before
    assert {r.method for r in list(sim.requests)[requests_before:]} == {"GET"}
    assert audit_rows(engine) == {}
    lines = render(report, load_pricing())
    assert lines[0].startswith("Cleanup dry run at ")
    store = next(line for line in lines if "vector_store" in line)
    assert store.split()[:3] == ["globex", "vector_store", "1"]
    assert "KiB" in store
    assert store.endswith("<$0.0001")  # 1.2 KiB at $0.10 per GB per day
    assert lines[-1].split()[:2] == ["total", "4"]
    assert sample(cleaner, "tollhouse_stale_resources", tenant="globex", kind="file") == 2


async def test_a_sweep_deletes_only_what_is_stale_owned_and_unprotected(
    world: tuple[RunningProxy, dict[str, str]],
    upstream: tuple[ServerThread, Faults, Simulator],
    clock: Clock,
) -> None:
    proxy, ids = world
    server, faults, sim = upstream
    engine = proxy.tollhouse.engine
    size = next(s for s in sim.vector_stores if s.id == ids["stale_store"]).render(clock())
    async with cleaner_for(engine, server.url, proxy.tollhouse.quota.policy, clock) as cleaner:
        report = await cleaner.sweep(apply=True)
        again = await cleaner.sweep(apply=True)
    deleted = {ids[name] for name in STALE}
    assert {f.record.id for f in report.deleted} == deleted
    assert report.failures == []
    assert again.found == []
    assert upstream_ids(sim) == {ids[name] for name in ids} - deleted
    assert faults.applied == dict.fromkeys(deleted, 1)
    audit = audit_rows(engine)
    assert set(audit) == deleted
    for row in audit.values():
        assert (row.status, row.tenant, row.attempts) == ("deleted", "globex", 1)
        assert row.deleted_at is not None
        assert row.reason.startswith("untouched for 31d")
    assert audit[ids["stale_store"]].usage_bytes == size["usage_bytes"] > 0
    with Session(engine) as session:
        gone = session.exec(
            select(OwnedObject).where(col(OwnedObject.deleted_at).is_not(None))
        ).scalars()
        marked = {(o.kind, o.parent_id) for o in gone}
    assert ("message", ids["stale_thread"]) in marked  # the thread's messages went with it
    assert sample(cleaner, "tollhouse_cleanup_deleted_total", tenant="globex", kind="file") == 2
    assert sample(cleaner, "tollhouse_cleanup_reclaimed_bytes_total") == size["usage_bytes"]
    assert sample(cleaner, "tollhouse_cleanup_last_success_timestamp_seconds") == clock()
    assert sample(cleaner, "tollhouse_cleanup_duration_seconds_count") == 2
    assert sample(cleaner, "tollhouse_stale_resources", tenant="globex", kind="thread") == 0
    with Session(engine) as session:
        sweeps = session.exec(select(CleanupSweep)).scalars().all()
    assert [(s.status, s.found, s.deleted) for s in sweeps] == [
        ("completed", 4, 4),
        ("completed", 0, 0),
    ]


async def test_objects_touched_during_the_sweep_are_kept(
    upstream: tuple[ServerThread, Faults, Simulator], clock: Clock
) -> None:
    server, faults, sim = upstream
    rules = policy(organization={"DELETE": {"requests_per_unit": 4}})  # one delete a minute
    with running_proxy(server.url + "/v1", policy=rules, upstream_api_key="sk-test") as proxy:
        globex = proxy.client(default_headers={HEADER: "globex"})
        first, second, third = sorted(globex.beta.threads.create().id for _ in range(3))
        proxy.flush()
        clock.advance(31 * DAY)
        touched: list[str] = []

        async def use_them(now: float, until: float) -> None:
            if until - now > 1 and not touched:  # the second delete waits for its token
                for thread in (second, third):
                    globex.beta.threads.messages.create(thread, role="user", content="still here")
                    touched.append(thread)

        clock.during_sleep = use_them
        async with cleaner_for(proxy.tollhouse.engine, server.url, rules, clock) as cleaner:
            report = await cleaner.sweep(apply=True)
        assert set(audit_rows(proxy.tollhouse.engine)) == {first}
    assert touched == [second, third]
    assert [f.record.id for f in report.deleted] == [first]
    assert faults.applied == {first: 1}
    assert {second, third} <= {t["id"] for t in sim.threads}


# -- pacing ---------------------------------------------------------------------------------


class RecordingBuckets(MemoryBuckets):
    """Memory buckets that note when each token was taken, and by whom."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.clock = clock
        self.taken: list[tuple[str, float]] = []

    async def take(self, tenant_key: str, *args: Any, **kwargs: Any) -> Any:
        result = await super().take(tenant_key, *args, **kwargs)
        if result.allowed:
            self.taken.append((tenant_key, self.clock()))
        return result


def most_in_a_minute(times: list[float]) -> int:
    times, most, start = sorted(times), 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - 60:
            start += 1
        most = max(most, end - start + 1)
    return most


@pytest.mark.timeout(300)  # 2,000 requests and 3,000 transactions; slow on a busy machine
async def test_a_sweep_of_1000_objects_keeps_to_its_share_of_the_delete_budget(
    upstream: tuple[ServerThread, Faults, Simulator], clock: Clock, sqlite_engine: Engine
) -> None:
    server, faults, sim = upstream
    rules = policy()  # the organisation's published 300 DELETEs a minute; the default share 0.5
    stale = seeded_threads(sim, sqlite_engine, "globex", 1000)
    clock.advance(31 * DAY)
    buckets = RecordingBuckets(clock)
    live = Quota(buckets, rules)
    refused: list[float] = []
    every = 60 / 140  # a live tenant deleting 140 times a minute all along
    next_live = [clock()]

    async def live_traffic(now: float, until: float) -> None:
        while next_live[0] <= until:
            clock.now = max(clock.now, next_live[0])
            if not (await live.admit("acme", DELETE)).allowed:
                refused.append(clock.now)
            next_live[0] += every

    clock.during_sleep = live_traffic
    async with cleaner_for(sqlite_engine, server.url, rules, clock, buckets) as cleaner:
        report = await cleaner.sweep(apply=True)
    assert len(report.deleted) == 1000
    assert report.failures == []
    assert faults.applied == dict.fromkeys(stale, 1)
    assert not {t["id"] for t in sim.threads} & set(stale)
    ours = [at for key, at in buckets.taken if key == f"{CLEANER_TENANT}:DELETE"]
    theirs = [at for key, at in buckets.taken if key == "acme:DELETE"]
    assert len(ours) == 1000
    assert most_in_a_minute(ours) <= 150
    minutes = (max(ours) - min(ours)) / 60
    assert 1000 / 150 - 1 < minutes < 1000 / 149 + 1  # it does use its share
    assert refused == []
    assert len(theirs) >= 140 * int(minutes)


def test_the_share_is_a_per_minute_budget_with_a_burst_of_one() -> None:
    org = RateLimit(requests_per_unit=300)
    assert share_limit(org, 300, 0.5) == RateLimit(requests_per_unit=149, burst=1)
    assert share_limit(RateLimit(requests_per_unit=10, unit="second"), 300, 0.25).requests_per_unit
    assert share_limit(RateLimit(unlimited=True), 300, 1.0).requests_per_unit == 299
    assert share_limit(org, 300, 0.001).requests_per_unit == 1


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_an_internal_tenant_limit_spends_the_organisation_budget_too(
    backend: str, request: pytest.FixtureRequest
) -> None:
    url = "memory://" if backend == "memory" else request.getfixturevalue("redis_url")
    buckets = buckets_from_url(url)
    if backend == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(url)
        await client.flushdb()
        await client.aclose()
    rules = policy(organization={"DELETE": {"requests_per_unit": 3}})
    quota = Quota(buckets, rules)
    try:
        own = share_limit(rules.organization[DELETE], 300, 1.0)
        first = await quota.admit(CLEANER_TENANT, DELETE, limit=own)
        second = await quota.admit(CLEANER_TENANT, DELETE, limit=own)
        assert first.allowed
        assert not second.allowed
        assert second.refused_by == "tenant"
        assert second.wait > 1
        assert (await quota.admit("acme", DELETE)).org_view.remaining == 1  # type: ignore[union-attr]
        assert (await quota.admit("acme", DELETE)).allowed
        assert not (await quota.admit("acme", DELETE)).allowed  # the org budget is spent
    finally:
        await buckets.close()


# -- failures, interruptions, replicas -----------------------------------------------------


async def test_upstream_failures_end_with_every_stale_object_deleted_exactly_once(
    upstream: tuple[ServerThread, Faults, Simulator], clock: Clock, engine: Engine
) -> None:
    server, faults, sim = upstream
    with direct(server) as client:
        stale = threads(client, engine, "globex", 12)
        client.beta.threads.delete(stale[6])  # gone before the sweep: a 404 when it looks
    clock.advance(31 * DAY)
    for index, fault in enumerate(("500", "500_after", "timeout", "timeout_after", "404_after")):
        faults.fail("DELETE", stale[index], fault)
    faults.fail("GET", stale[5], "500")
    rules = policy()
    async with cleaner_for(engine, server.url, rules, clock, request_timeout=0.5) as cleaner:
        first = await cleaner.sweep(apply=True)
        failed = {record.id for record, _ in first.failures}
        assert failed == set(stale[:4]) | {stale[5]}
        assert {f.record.id for f in first.deleted} == set(stale) - failed
        statuses = {object_id: row.status for object_id, row in audit_rows(engine).items()}
        assert [statuses.get(object_id) for object_id in stale[:6]] == [
            *(["failed"] * 4),
            "deleted",
            None,  # never got as far as deciding to delete
        ]
        assert sample(cleaner, "tollhouse_cleanup_failures_total", kind="thread") == 5
        second = await cleaner.sweep(apply=True)
    assert {f.record.id for f in second.deleted} == failed
    assert second.failures == []
    assert faults.applied == dict.fromkeys(stale, 1)
    assert not {t["id"] for t in sim.threads} & set(stale)
    audit = audit_rows(engine)
    assert set(audit) == set(stale)
    assert all(
        r.status == "deleted" and r.deleted_at and r.tenant == "globex" for r in audit.values()
    )
    assert [audit[object_id].attempts for object_id in stale[:4]] == [2, 1, 2, 1]
    assert sample(cleaner, "tollhouse_cleanup_deleted_total", tenant="globex", kind="thread") == 12


async def test_a_cancelled_sweep_resumes_without_deleting_twice(
    upstream: tuple[ServerThread, Faults, Simulator], clock: Clock, sqlite_engine: Engine
) -> None:
    server, faults, _sim = upstream
    with direct(server) as client:
        stale = threads(client, sqlite_engine, "globex", 6)
    clock.advance(31 * DAY)
    faults.hold_delete = 3  # carried out upstream, but the answer never comes back
    rules = policy()
    async with cleaner_for(sqlite_engine, server.url, rules, clock) as cleaner:
        sweep = asyncio.create_task(cleaner.sweep(apply=True))
        assert await asyncio.to_thread(faults.held.wait, 30)
        sweep.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sweep
        faults.release()
        pending = [i for i, r in audit_rows(sqlite_engine).items() if r.status == "pending"]
        assert len(pending) == 1
        assert lease.current(sqlite_engine, "cleanup") == ("", 0.0)  # released on the way out
        report = await cleaner.sweep(apply=True)
    assert len(report.deleted) == 4  # the pending one settled by its 404, and the rest
    assert faults.applied == dict.fromkeys(stale, 1)
    assert {r.status for r in audit_rows(sqlite_engine).values()} == {"deleted"}
    with Session(sqlite_engine) as session:
        statuses = [s.status for s in session.exec(select(CleanupSweep)).scalars()]
    assert statuses == ["interrupted", "completed"]


def test_the_lease_lets_one_holder_in_at_a_time(engine: Engine) -> None:
    assert lease.take(engine, "cleanup", "a", now=1000, ttl=60)
    assert not lease.take(engine, "cleanup", "b", now=1059, ttl=60)
    assert lease.take(engine, "cleanup", "a", now=1059, ttl=60)  # its own lease: extended
    lease.renew(engine, "cleanup", "a", now=1100, ttl=60)
    assert not lease.take(engine, "cleanup", "b", now=1159, ttl=60)
    assert lease.take(engine, "cleanup", "b", now=1160, ttl=60)  # expired: taken over
    with pytest.raises(lease.LeaseLost):
        lease.renew(engine, "cleanup", "a", now=1161, ttl=60)
    lease.release(engine, "cleanup", "a")  # not its lease any more: nothing happens
    assert lease.current(engine, "cleanup") == ("b", 1220)
    lease.release(engine, "cleanup", "b")
    assert lease.take(engine, "cleanup", "c", now=1161, ttl=60)


def test_replicas_racing_for_the_lease_get_it_once(engine: Engine) -> None:
    racers = 8
    start = threading.Barrier(racers)
    won: list[str] = []

    def race(holder: str) -> None:
        start.wait()
        if lease.take(engine, "race", holder, now=5000, ttl=60):
            won.append(holder)

    runners = [threading.Thread(target=race, args=(f"r{i}",)) for i in range(racers)]
    for runner in runners:
        runner.start()
    for runner in runners:
        runner.join()
    assert len(won) == 1
    with Session(engine) as session:
        row = session.get(CleanupLease, "race")
    assert row is not None
    assert row.holder == won[0]


async def test_two_replicas_sweeping_together_delete_each_object_once(
    upstream: tuple[ServerThread, Faults, Simulator], clock: Clock, engine: Engine
) -> None:
    server, faults, _ = upstream
    with direct(server) as client:
        stale = threads(client, engine, "globex", 5)
    clock.advance(31 * DAY)
    rules = policy()
    async with (
        cleaner_for(engine, server.url, rules, clock) as one,
        cleaner_for(engine, server.url, rules, clock) as two,
    ):
        reports: list[SweepReport] = await asyncio.gather(
            one.sweep(apply=True), two.sweep(apply=True)
        )
    assert sorted(r.status for r in reports) == ["completed", "skipped"]
    skipped = next(r for r in reports if r.status == "skipped")
    assert skipped.held_by in (one.holder, two.holder)
    assert faults.applied == dict.fromkeys(stale, 1)
