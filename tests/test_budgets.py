"""Spend budgets: periods, the stores, and fifty concurrent responses through the real client.

The bound the end-to-end tests show: admission reserves each request's worst case, so the
spend of a period (metered + in flight) passes its hard limit by at most what admitted
requests cost beyond their reserved worst case. A response's worst case here is its
input, counted with o200k, plus its ``max_output_tokens`` at the model's prices; the
simulator counts the input at 4/3 tokens a word (o200k: one), so each response costs
about $0.0502 against a worst case of about $0.0575: what was spent never exceeds the
hard limit, and no response more than the limit allows is admitted.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx2 as httpx
import openai
import pytest
import redis.asyncio as aioredis

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve
from tests.services import require
from tollhouse.config.policy import Budgets, Policy, TenantBudget, parse_policy
from tollhouse.metering.costs import token_cost
from tollhouse.metering.estimate import Estimator, load_o200k
from tollhouse.metering.pricing import load_pricing
from tollhouse.quota.backends import SpendStore, spend_from_url
from tollhouse.quota.budget import Standing, period_bounds, periods, refusal
from tollhouse.quota.spend_costs import worst_case
from tollhouse_simulator import SimulatorConfig, create_app
from tollhouse_simulator.state import Simulator

HEADER = "X-Tollhouse-Tenant"
LIMIT = Decimal("1.00")
MODEL = "gpt-4o"  # $2.50 / $10.00 per million input / output tokens
TEXT = "budget " * 15_000  # o200k: 15,000 tokens; the simulator: 20,000 (about $0.05)
MAX_OUTPUT = 2_000
CONCURRENT = 50


class Clock:
    """Wall-clock time plus an offset a test moves; the simulator and tollhouse share it."""

    def __init__(self, at: float | None = None) -> None:
        self.offset = 0.0 if at is None else at - time.time()

    def __call__(self) -> float:
        return time.time() + self.offset

    def move_to(self, at: float) -> None:
        self.offset = at - time.time()


def policy(zone: str = "UTC", daily: Decimal = LIMIT, monthly: Decimal | None = None) -> Policy:
    budget: dict[str, Any] = {"daily_usd": str(daily)}
    if monthly is not None:
        budget["monthly_usd"] = str(monthly)
    return parse_policy(
        {
            "identify": {"mode": "header"},
            "tenants": {"acme": {}, "globex": {}},
            "budgets": {"time_zone": zone, "tenants": {"acme": budget}},
        },
        "test",
    )


# -- periods -------------------------------------------------------------------------------------


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize(
    ("zone", "now", "name", "start", "end"),
    [
        (
            "UTC",
            "2026-12-03T23:59:59+00:00",
            "daily",
            "2026-12-03T00:00:00+00:00",
            "2026-12-04T00:00:00+00:00",
        ),
        (
            "UTC",
            "2026-12-04T00:00:00+00:00",
            "daily",
            "2026-12-04T00:00:00+00:00",
            "2026-12-05T00:00:00+00:00",
        ),
        # New York: 23:30 UTC is still the afternoon of the 3rd there
        (
            "America/New_York",
            "2026-12-03T23:30:00+00:00",
            "daily",
            "2026-12-03T00:00:00-05:00",
            "2026-12-04T00:00:00-05:00",
        ),
        # Auckland: 12:30 UTC on the 3rd is already the 4th there
        (
            "Pacific/Auckland",
            "2026-12-03T12:30:00+00:00",
            "daily",
            "2026-12-04T00:00:00+13:00",
            "2026-12-05T00:00:00+13:00",
        ),
        # Berlin's spring-forward day has 23 hours, its fall-back day 25
        (
            "Europe/Berlin",
            "2026-03-29T12:00:00+00:00",
            "daily",
            "2026-03-29T00:00:00+01:00",
            "2026-03-30T00:00:00+02:00",
        ),
        (
            "Europe/Berlin",
            "2026-10-25T12:00:00+00:00",
            "daily",
            "2026-10-25T00:00:00+02:00",
            "2026-10-26T00:00:00+01:00",
        ),
        (
            "UTC",
            "2026-12-31T23:59:59+00:00",
            "monthly",
            "2026-12-01T00:00:00+00:00",
            "2027-01-01T00:00:00+00:00",
        ),
        (
            "Europe/Berlin",
            "2026-10-31T23:30:00+00:00",
            "monthly",
            "2026-11-01T00:00:00+01:00",
            "2026-12-01T00:00:00+01:00",
        ),
        (
            "UTC",
            "2028-02-15T00:00:00+00:00",
            "monthly",
            "2028-02-01T00:00:00+00:00",
            "2028-03-01T00:00:00+00:00",
        ),
    ],
)
def test_period_bounds(zone: str, now: str, name: str, start: str, end: str) -> None:
    found_start, found_end = period_bounds(name, at(now), ZoneInfo(zone))
    assert found_start.timestamp() == at(start)
    assert found_end.timestamp() == at(end)
    assert found_end.isoformat() == end


def test_periods_are_keyed_by_tenant_and_local_date() -> None:
    budget = TenantBudget(daily_usd=Decimal("2"), monthly_usd=Decimal("30.5"))
    found = periods("acme", budget, at("2026-12-31T23:30:00+00:00"), ZoneInfo("Pacific/Auckland"))
    assert [(p.name, p.key, p.limit) for p in found] == [
        ("daily", "acme:daily:2027-01-01", 2_000_000),
        ("monthly", "acme:monthly:2027-01", 30_500_000),
    ]
    only_monthly = TenantBudget(monthly_usd=Decimal("1"))
    assert [p.name for p in periods("acme", only_monthly, 0, ZoneInfo("UTC"))] == ["monthly"]


def test_the_refusal_names_the_budget_and_when_it_resets() -> None:
    budget = TenantBudget(daily_usd=Decimal("1"))
    day = periods("acme", budget, at("2026-12-03T10:00:00+00:00"), ZoneInfo("Europe/Berlin"))[0]
    error = refusal("acme", Standing(day, 980_000), 57_500)
    assert error.status == 429
    assert (error.type, error.code) == ("insufficient_quota", "insufficient_quota")
    assert "daily spend budget of $1.00" in error.message
    assert "resets at 2026-12-04T00:00:00+01:00" in error.message
    assert (b"x-should-retry", b"false") in error.headers
    assert (b"x-tollhouse-budget-remaining-usd", b"0.020000") in error.headers


# -- the worst case ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def estimator() -> Estimator:
    return Estimator(load_o200k())


def test_a_model_call_is_reserved_at_its_input_and_most_output(estimator: Estimator) -> None:
    pricing, budgets, day = load_pricing(), Budgets(), date(2026, 12, 3)
    body = {"model": MODEL, "input": "hello world", "max_output_tokens": 100}
    tokens = estimator.estimate(body, "responses")
    expected = token_cost(pricing, MODEL, tokens.input_tokens, 100, day)
    assert worst_case("responses.create", body, budgets, pricing, estimator, day) == expected
    # no output limit: the budgets' default output
    unlimited = worst_case(
        "responses.create", {"model": MODEL, "input": "hi"}, budgets, pricing, estimator, day
    )
    assert unlimited is not None
    assert expected is not None
    assert unlimited > expected
    chat = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
        "n": 2,
    }
    chat_tokens = estimator.estimate(chat, "chat")
    assert chat_tokens.output_tokens == 20
    assert worst_case(
        "chat.completions.create", chat, budgets, pricing, estimator, day
    ) == token_cost(pricing, MODEL, chat_tokens.input_tokens, 20, day)


def test_other_requests_are_reserved_at_the_configured_worst_case(estimator: Estimator) -> None:
    pricing, day = load_pricing(), date(2026, 12, 3)
    budgets = Budgets(worst_case_usd={"threads.runs.create": Decimal("0.25")})
    run = {"assistant_id": "asst_1"}
    assert worst_case("threads.runs.create", run, budgets, pricing, estimator, day) == Decimal(
        "0.25"
    )
    limited = {"model": MODEL, "max_prompt_tokens": 1000, "max_completion_tokens": 100}
    assert worst_case(
        "threads.runs.create", limited, budgets, pricing, estimator, day
    ) == token_cost(pricing, MODEL, 1000, 100, day)
    unpriced = {"model": "no-such-model", "input": "hi"}
    assert worst_case("responses.create", unpriced, budgets, pricing, estimator, day) == Decimal(
        "0.50"
    )
    assert worst_case("containers.create", {}, budgets, pricing, estimator, day) == Decimal("0.03")
    assert worst_case(
        "vector_stores.files.create", None, budgets, pricing, estimator, day
    ) == Decimal("0.01")


# -- the stores ----------------------------------------------------------------------------------


async def flushed(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SpendStore]:
    if request.param == "memory":
        backend = spend_from_url("memory://", time.time)
    else:
        url = request.getfixturevalue("redis_url")
        await flushed(url)
        backend = spend_from_url(url, time.time)
    yield backend
    await backend.close()


FAR = int(time.time()) + 86_400
DAY = ("acme:daily:x", 100, FAR)
MONTH = ("acme:monthly:x", 150, FAR)


async def test_a_reservation_is_in_every_period_or_in_none(store: SpendStore) -> None:
    assert await store.reserve("a", [DAY, MONTH], 60, 60) == (None, [60, 60])
    assert await store.reserve("b", [DAY, MONTH], 60, 60) == (0, [60, 60])  # the day refuses
    assert await store.reserve("c", [DAY, MONTH], 40, 60) == (None, [100, 100])
    await store.release("a", [DAY[0], MONTH[0]])
    await store.release("a", [DAY[0], MONTH[0]])  # twice: once
    assert await store.spent([DAY, MONTH]) == [40, 40]
    assert await store.reserve("d", [DAY, MONTH], 61, 60) == (0, [40, 40])


async def test_concurrent_reservations_never_pass_the_limit(store: SpendStore) -> None:
    replies = await asyncio.gather(*(store.reserve(str(n), [DAY], 7, 60) for n in range(50)))
    assert sum(refused is None for refused, _ in replies) == 100 // 7
    assert await store.spent([DAY]) == [100 // 7 * 7]


async def test_an_object_is_committed_once(store: SpendStore) -> None:
    assert await store.commit("resp_1", [DAY, MONTH], 30, 60) == (True, None)
    assert await store.commit("resp_1", [DAY, MONTH], 30, 60) == (False, None)
    assert await store.spent([DAY, MONTH]) == [30, 30]


async def test_a_parked_hold_is_released_by_its_objects_commit(store: SpendStore) -> None:
    await store.reserve("h", [DAY], 50, 60)
    assert await store.park("h", [DAY[0]], "run_1", 60)
    assert await store.spent([DAY]) == [50]
    added, parked = await store.commit("run_1", [DAY], 20, 60)
    assert added
    assert parked == ("h", [DAY[0]])
    await store.release(*parked)
    assert await store.spent([DAY]) == [20]
    # an object already committed cannot take a hold
    await store.reserve("i", [DAY], 50, 60)
    assert not await store.park("i", [DAY[0]], "run_1", 60)


async def test_seeding_never_lowers_or_adds_twice(store: SpendStore) -> None:
    await store.commit("resp_1", [DAY], 30, 60)
    await store.seed([DAY, MONTH], [20, 70])
    await store.seed([DAY, MONTH], [20, 70])
    assert await store.spent([DAY, MONTH]) == [30, 70]


async def test_a_hold_nobody_settles_stops_counting_after_its_time() -> None:
    clock = Clock()
    store = spend_from_url("memory://", clock)
    assert (await store.reserve("h", [DAY], 100, 60))[0] is None
    assert (await store.reserve("i", [DAY], 1, 60))[0] == 0
    clock.offset += 61
    assert await store.reserve("i", [DAY], 1, 60) == (None, [1])


# -- end to end: fifty at once ------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def buckets_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    asyncio.run(flushed(url))
    return url


@pytest.fixture
def clock() -> Clock:
    return Clock(at("2026-12-03T15:00:00+00:00"))


@pytest.fixture
def upstream(clock: Clock) -> Iterator[ServerThread]:
    app = create_app(SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05, clock=clock))
    with serve(app) as server:
        server.simulator = app.state.simulator  # type: ignore[attr-defined]
        yield server


def simulated(upstream: ServerThread) -> Simulator:
    sim: Simulator = upstream.simulator  # type: ignore[attr-defined]
    return sim


def creations(upstream: ServerThread) -> int:
    return sum(
        r.method == "POST" and r.path == "/v1/responses" for r in simulated(upstream).requests
    )


def costs_of(upstream: ServerThread, response_ids: list[str]) -> list[Decimal]:
    """What the simulator says each response used, priced: the truth spend is checked against."""
    pricing, costs = load_pricing(), []
    for run in simulated(upstream).responses:
        if run.obj["id"] in response_ids:
            usage = run.obj["usage"]
            day = datetime.fromtimestamp(run.obj["created_at"], UTC).date()
            cost = token_cost(pricing, MODEL, usage["input_tokens"], usage["output_tokens"], day)
            assert cost is not None
            costs.append(cost)
    assert len(costs) == len(response_ids)
    return costs


def cost_of(upstream: ServerThread, response_ids: list[str]) -> Decimal:
    return sum(costs_of(upstream, response_ids), Decimal(0))


def async_client(proxy: RunningProxy, tenant: str = "acme") -> openai.AsyncOpenAI:
    # default retries: a refusal the client retried would reach the simulator again
    return openai.AsyncOpenAI(
        base_url=proxy.url + "/v1", api_key="sk-test", default_headers={HEADER: tenant}
    )


async def create(client: openai.AsyncOpenAI) -> tuple[str | None, Any]:
    """A response id, or the refusal."""
    try:
        raw = await client.responses.with_raw_response.create(
            model=MODEL, input=TEXT, max_output_tokens=MAX_OUTPUT
        )
    except openai.RateLimitError as exc:
        return None, exc
    return raw.parse().id, raw.headers


async def burst(proxies: list[RunningProxy], count: int) -> list[tuple[str | None, Any]]:
    clients = [async_client(proxy) for proxy in proxies]
    try:
        return await asyncio.gather(*(create(clients[n % len(clients)]) for n in range(count)))
    finally:
        for client in clients:
            await client.close()


def settled(proxy: RunningProxy) -> None:
    """Every request's reservation settled and in the store (clients have their answers
    before the proxy's bookkeeping after the last byte), and the ledger written."""
    proxy.run(proxy.tollhouse.spending.settled())
    proxy.flush()


def spent(proxy: RunningProxy, period: str = "daily") -> float:
    return proxy.sample("tollhouse_budget_spent_usd", tenant="acme", period=period)


def worst(estimator: Estimator) -> Decimal:
    body = {"model": MODEL, "input": TEXT, "max_output_tokens": MAX_OUTPUT}
    found = worst_case(
        "responses.create", body, Budgets(), load_pricing(), estimator, date(2026, 12, 3)
    )
    return found


def assert_refused(exc: Any, name: str = "daily", amount: str = "$1.00") -> None:
    assert isinstance(exc, openai.RateLimitError)
    assert exc.code == "insufficient_quota"
    assert exc.body["type"] == "insufficient_quota"  # type: ignore[index]
    assert exc.response.headers["x-should-retry"] == "false"
    assert f"{name} spend budget of {amount}" in exc.message
    assert "resets at " in exc.message


def test_fifty_concurrent_responses_hold_a_one_dollar_budget(
    upstream: ServerThread, clock: Clock, buckets_url: str, estimator: Estimator
) -> None:
    with running_proxy(
        upstream.url + "/v1", policy=policy(), clock=clock, buckets_url=buckets_url
    ) as proxy:
        results = asyncio.run(burst([proxy], CONCURRENT))
        admitted = [rid for rid, _ in results if rid is not None]
        refused = [exc for rid, exc in results if rid is None]
        settled(proxy)

        # The bound: each response costs less than its reserved worst case, so the spend
        # stays within the limit, and the first limit // worst case ones all got in.
        each = worst(estimator)
        assert Decimal("0.05") < each < Decimal("0.06")
        costs = costs_of(upstream, admitted)
        overrun = sum((max(Decimal(0), cost - each) for cost in costs), Decimal(0))
        assert overrun == 0  # every response cost less than the worst case reserved for it
        truth = sum(costs, Decimal(0))
        assert truth <= LIMIT + overrun
        assert len(admitted) >= int(LIMIT // each)
        assert len(admitted) * Decimal("0.05") <= LIMIT  # (each costs over $0.05)
        assert refused
        assert len(admitted) + len(refused) == CONCURRENT
        for exc in refused:
            assert_refused(exc)
        # no client retried a refusal: the simulator saw the admitted ones only
        assert creations(upstream) == len(admitted)
        # committed spend is what was metered, once each (micro-dollars, rounded up)
        assert spent(proxy) == pytest.approx(float(truth), abs=1e-6 * len(admitted))
        assert proxy.sample("tollhouse_budget_refusals_total", tenant="acme") == len(refused)
        assert proxy.sample("tollhouse_budget_usd", tenant="acme", period="daily") == 1.0

        # what the burst left admits a few more, one at a time, until no worst case fits
        topped: list[str] = []
        while (rid := asyncio.run(burst([proxy], 1))[0][0]) is not None:
            topped.append(rid)
            settled(proxy)
        assert len(topped) <= int((LIMIT - truth) / Decimal("0.05"))
        admitted += topped
        truth = cost_of(upstream, admitted)
        assert truth <= LIMIT
        assert LIMIT - truth < each
        # and every later creation is refused
        later = asyncio.run(burst([proxy], 5))
        assert all(rid is None for rid, _ in later)
        for _, exc in later:
            assert_refused(exc)
        assert creations(upstream) == len(admitted)

        # reads and deletes still work, and say what is left
        client = proxy.client(default_headers={HEADER: "acme"})
        raw = client.responses.with_raw_response.retrieve(admitted[0])
        assert raw.parse().status == "completed"
        left = float(raw.headers["x-tollhouse-budget-remaining-usd"])
        assert left == pytest.approx(float(LIMIT - truth), abs=1e-4)
        assert client.responses.input_items.list(admitted[0]).data
        client.responses.delete(admitted[1])
        # another tenant without a budget is not held back, nor told of one
        other = proxy.client(default_headers={HEADER: "globex"})
        answer = other.responses.with_raw_response.create(model=MODEL, input="hi")
        assert "x-tollhouse-budget-remaining-usd" not in answer.headers

        # the next day the budget is whole again
        clock.move_to(at("2026-12-04T00:00:01+00:00"))
        rid, headers = asyncio.run(burst([proxy], 1))[0]
        assert rid is not None
        assert float(headers["x-tollhouse-budget-remaining-usd"]) == pytest.approx(
            float(LIMIT - each), abs=1e-5
        )


def test_three_replicas_on_one_redis_hold_one_budget(
    upstream: ServerThread, clock: Clock, redis_url: str, estimator: Estimator
) -> None:
    asyncio.run(flushed(redis_url))
    with ExitStack() as stack:
        proxies = []
        for _ in range(3):
            proxy = stack.enter_context(
                running_proxy(
                    upstream.url + "/v1", policy=policy(), clock=clock, buckets_url=redis_url
                )
            )
            # one at a time: a first answer means it has started (migrations run in turn)
            assert httpx.get(proxy.url + "/v1/responses", headers={HEADER: "acme"}).status_code
            proxies.append(proxy)
        results = asyncio.run(burst(proxies, CONCURRENT))
        admitted = [rid for rid, _ in results if rid is not None]
        for proxy in proxies:
            settled(proxy)
        # three budgets of $1.00 would have let all fifty in (17 each); one lets in
        # at most $1.00 of worst cases at a time, and the spend stays within it
        truth = cost_of(upstream, admitted)
        assert truth <= LIMIT
        assert int(LIMIT // worst(estimator)) <= len(admitted) < CONCURRENT
        assert creations(upstream) == len(admitted)
        for rid, exc in results:
            if rid is None:
                assert_refused(exc)
        # each response was committed once, by whichever replica saw it: all agree
        for proxy in proxies:
            proxy.run(proxy.tollhouse.spending.refresh("acme"))
            assert spent(proxy) == pytest.approx(float(truth), abs=1e-6 * len(admitted))


def test_a_day_ends_at_local_midnight(upstream: ServerThread, clock: Clock) -> None:
    # $0.06 a day in New York: room for one response's worst case, not two
    clock.move_to(at("2026-12-03T23:59:00+00:00"))  # 18:59 in New York
    with running_proxy(
        upstream.url + "/v1", policy=policy("America/New_York", Decimal("0.06")), clock=clock
    ) as proxy:
        first = asyncio.run(burst([proxy], 1))[0]
        assert first[0] is not None
        settled(proxy)
        _, exc = asyncio.run(burst([proxy], 1))[0]
        assert_refused(exc, amount="$0.06")
        assert "resets at 2026-12-04T00:00:00-05:00" in exc.message
        clock.move_to(at("2026-12-04T00:00:30+00:00"))  # a new day in UTC, not in New York
        assert asyncio.run(burst([proxy], 1))[0][0] is None
        clock.move_to(at("2026-12-04T05:00:01+00:00"))  # midnight in New York
        assert asyncio.run(burst([proxy], 1))[0][0] is not None


def test_a_run_keeps_its_reservation_until_its_cost_is_metered(
    upstream: ServerThread, clock: Clock
) -> None:
    with running_proxy(upstream.url + "/v1", policy=policy(), clock=clock) as proxy:
        client = proxy.client(default_headers={HEADER: "acme"})
        assistant = client.beta.assistants.create(model=MODEL)
        thread = client.beta.threads.create()
        run = client.beta.threads.runs.create(thread.id, assistant_id=assistant.id)
        assert run.status == "queued"
        settled(proxy)
        assert spent(proxy) == pytest.approx(0.50)  # the default worst case of a run, in flight
        while run.status not in ("completed", "failed"):
            run = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
        settled(proxy)
        assert run.usage is not None
        cost = token_cost(
            load_pricing(),
            MODEL,
            run.usage.prompt_tokens,
            run.usage.completion_tokens,
            date(2026, 12, 3),
        )
        assert cost is not None
        assert spent(proxy) == pytest.approx(float(cost), abs=1e-6)


async def finished(task: asyncio.Task[None]) -> None:
    await task


def test_a_new_start_counts_what_the_ledger_already_has(
    upstream: ServerThread, clock: Clock, tmp_path: Any
) -> None:
    database = f"sqlite:///{tmp_path}/ledger.db"
    with running_proxy(
        upstream.url + "/v1", policy=policy(), clock=clock, database_url=database
    ) as proxy:
        admitted = [rid for rid, _ in asyncio.run(burst([proxy], 3)) if rid is not None]
        settled(proxy)
    truth = cost_of(upstream, admitted)
    with running_proxy(
        upstream.url + "/v1", policy=policy(), clock=clock, database_url=database
    ) as proxy:
        client = proxy.client(default_headers={HEADER: "acme"})
        assert client.responses.retrieve(admitted[0]).status == "completed"  # (it has started)
        seeding = proxy.tollhouse.seeding
        assert seeding is not None
        proxy.run(finished(seeding))
        assert proxy.sample("tollhouse_budget_seeded") == 1
        assert spent(proxy) == pytest.approx(float(truth), abs=1e-4)


def test_budget_metrics_pass_promtool_check_metrics(upstream: ServerThread, clock: Clock) -> None:
    with running_proxy(
        upstream.url + "/v1", policy=policy(monthly=Decimal("20")), clock=clock
    ) as proxy:
        assert asyncio.run(burst([proxy], 1))[0][0] is not None
        settled(proxy)
        exposition = httpx.get(proxy.admin.url + "/metrics").text
    for name in ("tollhouse_budget_usd", "tollhouse_budget_spent_usd", "tollhouse_budget_soft_usd"):
        assert f"{name}{{" in exposition
    assert 'tollhouse_budget_usd{period="monthly",tenant="acme"} 20.0' in exposition
    assert (
        'tollhouse_budget_soft_usd{period="daily",tenant="acme",threshold="0.95"} 0.95'
        in exposition
    )
    assert 'tollhouse_budget_refusals_total{tenant="acme"} 0.0' in exposition
    checked = subprocess.run(
        [require("promtool"), "check", "metrics"], input=exposition, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_without_the_store_requests_are_admitted_and_counted(
    upstream: ServerThread, clock: Clock
) -> None:
    unreachable = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    with running_proxy(
        upstream.url + "/v1", policy=policy(), clock=clock, buckets_url=unreachable
    ) as proxy:
        results = asyncio.run(burst([proxy], 3))
        assert all(rid is not None for rid, _ in results)
        settled(proxy)
        # 3 admissions unchecked; their commits lost (the ledger has them for the next start)
        assert proxy.sample("tollhouse_budget_store_errors_total") >= 3
        assert creations(upstream) == 3


def test_a_chat_completion_whose_worst_case_does_not_fit_is_refused_unretried(
    upstream: ServerThread, clock: Clock
) -> None:
    with running_proxy(
        upstream.url + "/v1", policy=policy(daily=Decimal("0.10")), clock=clock
    ) as proxy:
        client = openai.OpenAI(  # the official client with its default retries
            base_url=proxy.url + "/v1", api_key="sk-test", default_headers={HEADER: "acme"}
        )
        messages: list[Any] = [{"role": "user", "content": "hello"}]
        small = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=100)
        assert small.usage is not None
        # 20,000 output tokens at $10 a million: $0.20 could not fit in $0.10 at any time
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20_000)
        assert_refused(caught.value, amount="$0.10")
        client.close()
        chats = [r for r in simulated(upstream).requests if r.path == "/v1/chat/completions"]
        assert len(chats) == 1
