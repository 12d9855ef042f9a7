"""The admin page: the report's numbers, the buckets and the refusals, as a browser shows them.

The renderer on hand-built reports; the page after real traffic through tollhouse, against
``tollhouse report --format json`` for the same period; the page with the ledger's database
down; and the page in a real headless browser (its DOM and a screenshot).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread
from tests.services import postgres_cluster, require
from tests.test_ledger_faults import frozen, stopped
from tests.test_replicas import wait_for
from tollhouse.api.classify import classify
from tollhouse.config.policy import Policy, parse_policy
from tollhouse.ledger import store as ledger
from tollhouse.ledger.store import Batch, Seen
from tollhouse.metering.meter import RunSeen, Usage
from tollhouse.report.build import TOTAL, Report, Row, Unpriced
from tollhouse.report.page import (
    Bucket,
    Budget,
    PageData,
    PeriodError,
    bucket_levels,
    budget_levels,
    page_period,
    render_page,
)
from tollhouse.report.render import render_json, row_fields
from tollhouse.telemetry.metrics import Metrics

HOSTILE = "<script>alert('x')</script>\"&<img src=x onerror=alert(1)>"
JAN = datetime(2025, 1, 1, tzinfo=UTC)
POLICY: Policy = parse_policy(
    {
        "identify": {"mode": "header"},
        "tenants": {
            "acme": {"limits": {"RUN_CREATE": {"requests_per_unit": 100, "burst": 100}}},
            "globex": {"limits": {"RUN_CREATE": {"requests_per_unit": 1, "burst": 1}}},
        },
    },
    "the page's test policy",
)


# -- reading the page back -------------------------------------------------------------------


@dataclass
class Parsed:
    """What the page says, by its data- attributes; ``text`` is its visible text."""

    main: dict[str, str] = field(default_factory=dict)
    rows: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    shown: dict[tuple[str, str], str] = field(default_factory=dict)  # (tenant, field) -> text
    unpriced: list[dict[str, str]] = field(default_factory=list)
    bars: dict[str, list[tuple[str, str, dict[str, str]]]] = field(default_factory=dict)
    buckets: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    migration: dict[str, dict[str, str]] = field(default_factory=dict)  # tenant -> field -> value
    sections: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    text: str = ""


class PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.page = Parsed()
        self._tenant = ""  # the tenant section being read
        self._row: dict[str, str] | None = None
        self._row_tenant: str | None = None  # of the table row being read
        self._cell: tuple[str, str] | None = None
        self._bar: dict[str, str] | None = None
        self._text: list[str] = []
        self._skip = 0  # inside <style> or <title>

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.page.tags.append(tag)
        if tag in ("style", "title"):
            self._skip += 1
        if tag == "main":
            self.page.main = a
        elif tag == "section" and "data-tenant" in a:
            self._tenant = a["data-tenant"]
            self.page.sections.append(self._tenant)
        elif tag == "g" and "data-day" in a:
            self._bar = {}
            self.page.bars.setdefault(self._tenant, []).append(
                (a["data-day"], a["data-total"], self._bar)
            )
        elif tag == "rect" and "data-kind" in a and self._bar is not None:
            self._bar[a["data-kind"]] = a["data-value"]
        else:
            self._row_tag(tag, a)

    def _row_tag(self, tag: str, a: dict[str, str]) -> None:
        kind = a.get("data-row")
        if kind is not None:
            self._row_tenant = a["data-tenant"] if kind in ("row", "totals") else None
        if kind in ("row", "totals"):
            self._row = {}
            self.page.rows.append((kind, a["data-tenant"], self._row))
        elif kind == "unpriced":
            self._row = {}
            self.page.unpriced.append(self._row)
        elif kind == "bucket":
            self._row = {}
            self.page.buckets.setdefault(self._tenant, {})[a["data-class"]] = self._row
        elif kind == "migration":
            self._row = {}
            self.page.migration[a["data-tenant"]] = self._row
        if "data-field" in a and self._row is not None:
            self._row[a["data-field"]] = a["data-value"]
            if tag == "td" and self._row_tenant is not None:
                self._cell = (self._row_tenant, a["data-field"])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title"):
            self._skip -= 1
        elif tag == "g":
            self._bar = None
        elif tag in ("tr", "li"):
            self._row = None
        elif tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self._text.append(data)
        if self._cell is not None:
            self.page.shown[self._cell] = self.page.shown.get(self._cell, "") + data

    def close(self) -> None:
        super().close()
        self.page.text = " ".join(self._text)


def parse(html: str) -> Parsed:
    parser = PageParser()
    parser.feed(html)
    parser.close()
    return parser.page


def as_text(value: object) -> str:
    """A JSON value as the page writes it in data-value."""
    return value if isinstance(value, str) else json.dumps(value)


def json_rows(document: dict[str, Any]) -> list[tuple[str, str, dict[str, str]]]:
    """The report document's rows and totals, as the page's data-value attributes give them."""
    names = list(document["totals"])
    rows = [("row", r["tenant"], {n: as_text(r[n]) for n in names}) for r in document["rows"]]
    totals = {n: as_text(v) for n, v in document["totals"].items()}
    return [*rows, ("totals", TOTAL, totals)]


def json_bars(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
    """(tenant, day) -> cost by kind, from a report grouped by day."""
    return {
        (row["tenant"], row["group"]): {
            name: value
            for name, value in row.items()
            if name.endswith("_cost") and name != "total_cost"
        }
        for row in document["rows"]
    }


# -- the renderer ----------------------------------------------------------------------------


def hand_built(tenant: str = "acme") -> tuple[Report, Report]:
    """A week in January: the tenant's report, and the same grouped by day (3 days used)."""
    days = {
        "2025-01-02": Row(tenant, "2025-01-02", runs=2, input_tokens=1200, output_tokens=80,
                          token_cost=Decimal("0.0038"), code_interpreter_sessions=1,
                          code_interpreter_cost=Decimal("0.03")),
        "2025-01-04": Row(tenant, "2025-01-04", runs=1, input_tokens=10, output_tokens=5,
                          token_cost=Decimal("0.000075"), file_search_calls=3,
                          file_search_cost=Decimal("0.0075")),
        "2025-01-06": Row(tenant, "2025-01-06", storage_gb_days=Decimal("1.5"),
                          storage_cost=Decimal("0.15"), has_unpriced_usage=True),
    }  # fmt: skip
    whole, totals = Row(tenant), Row(TOTAL)
    for row in days.values():
        whole.add(row)
        totals.add(row)
    unpriced = (Unpriced(tenant, "model", "gpt-9", runs=1, input_tokens=7, output_tokens=3),)

    def report(rows: tuple[Row, ...], group_by: Any) -> Report:
        return Report(JAN, JAN + timedelta(days=7), JAN + timedelta(days=7), group_by, None,
                      "the shipped table", rows, totals, unpriced)  # fmt: skip

    return report((whole,), None), report(tuple(days.values()), "day")


def page_of(report: Report, by_day: Report, buckets: list[Bucket] | None = None) -> str:
    data = PageData(report.since, report.until, report.generated_at, report, by_day, buckets or [])
    return render_page(data)


def test_a_hostile_tenant_name_is_text_everywhere_never_markup() -> None:
    report, by_day = hand_built(HOSTILE)
    html = page_of(report, by_day, [Bucket(HOSTILE, "RUN_CREATE", 3, 10, 2)])
    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;" in html
    page = parse(html)
    assert page.tags.count("script") == 0
    assert page.tags.count("img") == 0
    assert page.sections == [HOSTILE]  # the attribute round-trips to the very name
    assert [tenant for _, tenant, _ in page.rows] == [HOSTILE, TOTAL]
    assert HOSTILE in page.text
    levels = {"remaining": "3.0", "limit": "10.0", "throttled": "2.0"}
    assert page.buckets[HOSTILE]["RUN_CREATE"] == levels


def test_the_chart_draws_one_bar_per_day_with_each_kind_of_cost() -> None:
    report, by_day = hand_built()
    page = parse(page_of(report, by_day))
    bars = page.bars["acme"]
    assert [day for day, _, _ in bars] == [str(date(2025, 1, n)) for n in range(1, 8)]
    expected = json_bars(json.loads(render_json(by_day)))
    for day, total, kinds in bars:
        costs = expected.get(("acme", day), dict.fromkeys(kinds, "0"))
        assert kinds == costs  # every cost field of the report is a segment
        assert Decimal(total) == sum(map(Decimal, costs.values()))
    assert page_of(report, by_day).count("<g class=bar ") == 7


def test_every_field_of_the_json_report_is_on_the_page() -> None:
    report, by_day = hand_built()
    document = json.loads(render_json(report))
    page = parse(page_of(report, by_day))
    assert page.rows == json_rows(document)
    assert list(page.rows[0][2]) == [
        n for n in row_fields(report.totals) if n not in ("tenant", "group")
    ]
    for _, tenant, values in page.rows:
        for name, value in values.items():
            shown = page.shown[(tenant, name)]
            if value in ("true", "false"):
                assert shown == {"true": "yes", "false": "no"}[value]
            else:  # the exact value, with thousands separated and money in dollars
                assert shown.replace(",", "").removeprefix("$") == value, name
    assert page.unpriced == [{k: as_text(v) for k, v in u.items()} for u in document["unpriced"]]
    assert page.main == {
        "data-since": "2025-01-01T00:00:00+00:00",
        "data-until": "2025-01-08T00:00:00+00:00",
        "data-now": "2025-01-08T00:00:00+00:00",
    }
    assert all(note in page.text for note in document["notes"])


def test_a_tenant_without_cost_gets_no_chart_and_one_without_buckets_says_so() -> None:
    report, by_day = hand_built()
    page = parse(page_of(report, by_day, [Bucket("idle", "GET", 40, 40, 0)]))
    assert page.sections == ["acme", "idle"]
    assert "idle" not in page.bars
    assert "No cost in this period." in page.text
    assert "acme" not in page.buckets
    assert "No bucket of this tenant has admitted or refused a request yet." in page.text


NOW = datetime(2026, 3, 17, 9, 30, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("query", "since", "until"),
    [
        ({}, datetime(2026, 3, 1, tzinfo=UTC), NOW),
        ({"since": "2026-02-01"}, datetime(2026, 2, 1, tzinfo=UTC), NOW),
        ({"since": "2026-02-01", "until": "2026-03-01"},
         datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
        ({"since": "2026-03-17T08:00:00+02:00", "until": ""},
         datetime(2026, 3, 17, 6, tzinfo=UTC), NOW),
    ],
)  # fmt: skip
def test_the_period_comes_from_the_query_string(
    query: dict[str, str], since: datetime, until: datetime
) -> None:
    assert page_period(query, NOW) == (since, until)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"since": "yesterday"}, "since='yesterday' is not an ISO date or datetime"),
        ({"until": "2026-13-01"}, "until='2026-13-01' is not an ISO date or datetime"),
        ({"since": "2026-03-10", "until": "2026-03-10"}, "is not before until"),
        ({"since": "2026-04-01"}, "is not before until"),
    ],
)
def test_a_period_that_cannot_be_read_is_refused_with_the_reason(
    query: dict[str, str], message: str
) -> None:
    with pytest.raises(PeriodError, match=message):
        page_period(query, NOW)


def test_bucket_levels_and_refusals_come_from_the_metrics() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, tenants=("acme", "globex"))
    metrics.record_budget("RUN_CREATE", [("acme", 4, 10), ("_org", 90, 100)], 0.0)
    runs = classify("POST", "/v1/threads/thread_1/runs")
    for _ in range(3):
        metrics.count("globex", runs, "throttled")
    threads = classify("POST", "/v1/threads")
    assert (runs.request_class, threads.request_class) == ("RUN_CREATE", "POST")
    metrics.count("globex", threads, "throttled")
    metrics.count("acme", runs, "forwarded")
    assert bucket_levels(registry.collect()) == [
        Bucket("_org", "RUN_CREATE", 90, 100, 0),
        Bucket("acme", "RUN_CREATE", 4, 10, 0),
        Bucket("globex", "POST", None, None, 1),  # a class without a bucket may refuse too
        Bucket("globex", "RUN_CREATE", None, None, 3),
    ]


def test_each_budget_and_what_it_has_spent_come_from_the_metrics() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry, tenants=("acme", "globex"))
    metrics.budget_usd.labels("acme", "daily").set(1.0)
    metrics.budget_spent_usd.labels("acme", "daily").set(0.25)
    metrics.budget_usd.labels("acme", "monthly").set(20.0)
    metrics.budget_spent_usd.labels("acme", "monthly").set(25.0)  # past it: the bar is full
    budgets = budget_levels(registry.collect())
    assert budgets == [
        Budget("acme", "daily", 1.0, 0.25),
        Budget("acme", "monthly", 20.0, 25.0),
    ]
    now = datetime(2026, 12, 3, tzinfo=UTC)
    html = render_page(PageData(now, now, now, None, None, [], budgets=budgets))
    rows = re.findall(r'data-row=budget data-tenant="([^"]+)" data-period="([^"]+)"', html)
    assert rows == [("acme", "daily"), ("acme", "monthly")]
    shares = re.findall(r'data-field="spent_share" data-value="([0-9.]+)"', html)
    assert shares == ["0.250", "1.000"]
    assert "globex" not in html  # no budget, no row


# -- the page served, after real traffic ----------------------------------------------------


def tenant(proxy: RunningProxy, name: str) -> openai.OpenAI:
    return proxy.client(default_headers={"X-Tollhouse-Tenant": name})


def traffic(proxy: RunningProxy) -> None:
    """acme runs with Code Interpreter and File Search; globex is refused its second run."""
    acme = tenant(proxy, "acme")
    tools: Any = [{"type": "code_interpreter"}, {"type": "file_search"}]
    assistant = acme.beta.assistants.create(model="gpt-4o", tools=tools)
    for text in ("plot it", "and again"):
        thread = acme.beta.threads.create(messages=[{"role": "user", "content": text}])
        run = acme.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20
        )
        assert run.status == "completed"
        acme.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    globex = tenant(proxy, "globex")
    helper = globex.beta.assistants.create(model="gpt-4o-mini")
    thread = globex.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = globex.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=helper.id, poll_interval_ms=20
    )
    assert run.status == "completed"
    with pytest.raises(openai.RateLimitError):
        globex.beta.threads.runs.create(thread_id=thread.id, assistant_id=helper.id)
    proxy.flush()


def period() -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"since": str(today - timedelta(days=1)), "until": str(today + timedelta(days=2))}


def report_json(database_url: str, query: dict[str, str], now: str, *extra: str) -> Any:
    """``tollhouse report --format json`` as a user runs it, with the page's clock."""
    options = [f"--{name}={value}" for name, value in query.items()]
    done = subprocess.run(
        [sys.executable, "-m", "tollhouse", "report", "--format", "json", *options,
         f"--now={now}", *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "TOLLHOUSE_DATABASE_URL": database_url},
        check=False,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def served(simulator: ServerThread, tmp_path: Path) -> Iterator[tuple[RunningProxy, str]]:
    database_url = f"sqlite:///{tmp_path}/ledger.db"
    with running_proxy(simulator.url + "/v1", policy=POLICY, database_url=database_url) as proxy:
        traffic(proxy)
        yield proxy, database_url


def test_the_page_says_what_tollhouse_report_says(served: tuple[RunningProxy, str]) -> None:
    proxy, database_url = served
    query = period()
    answer = httpx.get(proxy.admin.url + "/", params=query, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = parse(answer.text)
    now = page.main["data-now"]

    document = report_json(database_url, query, now)
    assert page.main["data-since"] == document["period"]["since"]
    assert page.main["data-until"] == document["period"]["until"]
    assert now == document["period"]["generated_at"]
    assert page.rows == json_rows(document)
    assert {tenant for _, tenant, _ in page.rows} == {"acme", "globex", TOTAL}
    acme = next(values for _, tenant, values in page.rows if tenant == "acme")
    assert int(acme["runs"]) == 2
    assert int(acme["code_interpreter_sessions"]) >= 1
    assert Decimal(acme["total_cost"]) > 0
    assert page.unpriced == [{k: as_text(v) for k, v in u.items()} for u in document["unpriced"]]

    by_day = json_bars(report_json(database_url, query, now, "--group-by", "day"))
    for name in ("acme", "globex"):
        bars = page.bars[name]
        assert len(bars) == 3  # one per day of the period
        drawn = {(name, day): kinds for day, _, kinds in bars if Decimal(total_of(kinds))}
        assert drawn == {key: kinds for key, kinds in by_day.items() if key[0] == name}

    registry = proxy.registry
    for name, request_class in (("acme", "RUN_CREATE"), ("globex", "RUN_CREATE")):
        labels = {"tenant": name, "class": request_class}
        remaining = registry.get_sample_value("tollhouse_ratelimit_remaining", labels)
        shown = page.buckets[name][request_class]
        assert shown["remaining"] == json.dumps(remaining)
    refused = page.buckets["globex"]["RUN_CREATE"]
    assert refused["limit"] == "1.0"
    throttled = sum(
        sample.value
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "tollhouse_requests_total"
        and sample.labels["tenant"] == "globex"
        and sample.labels["class"] == "RUN_CREATE"
        and sample.labels["outcome"] == "throttled"
    )
    assert float(refused["throttled"]) == throttled == 1


def test_the_migration_panel_says_what_tollhouse_migration_says(
    served: tuple[RunningProxy, str],
) -> None:
    proxy, database_url = served
    query = period()
    page = parse(httpx.get(proxy.admin.url + "/", params=query, timeout=30).text)
    options = [f"--{name}={value}" for name, value in query.items()]
    done = subprocess.run(
        [sys.executable, "-m", "tollhouse", "migration", "--format", "csv", *options,
         f"--now={page.main['data-now']}"],
        capture_output=True,
        text=True,
        env={**os.environ, "TOLLHOUSE_DATABASE_URL": database_url},
        check=False,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = {row["tenant"]: row for row in csv.DictReader(io.StringIO(done.stdout))}
    assert set(page.migration) == set(rows) == {"acme", "globex"}
    for tenant, shown in page.migration.items():
        assert shown == {name: rows[tenant][name] for name in shown}
    assert page.migration["acme"]["runs"] == "2"
    assert Decimal(page.migration["acme"]["responses_cost_usd"]) > 0


def total_of(kinds: dict[str, str]) -> Decimal:
    return sum(map(Decimal, kinds.values()), Decimal(0))


def test_a_period_that_cannot_be_read_gets_a_400_page_saying_why(
    served: tuple[RunningProxy, str],
) -> None:
    proxy, _ = served
    answer = httpx.get(proxy.admin.url + "/", params={"since": "<b>soon</b>"}, timeout=30)
    assert answer.status_code == 400
    assert "<b>soon</b>" not in answer.text
    page = parse(answer.text)
    assert "since='<b>soon</b>' is not an ISO date or datetime" in page.text
    assert page.rows == []
    assert page.buckets["globex"]["RUN_CREATE"]["throttled"] == "1.0"


def test_with_the_database_down_the_page_says_so_with_a_503(simulator: ServerThread) -> None:
    timeouts = {"database_connect_timeout": 2, "database_statement_timeout": 2}
    with (
        postgres_cluster() as database,
        running_proxy(
            simulator.url + "/v1", policy=POLICY, database_url=database.url, **timeouts
        ) as proxy,
    ):
        traffic(proxy)
        assert httpx.get(proxy.admin.url + "/", timeout=30).status_code == 200
        database.stop()
        answer = httpx.get(proxy.admin.url + "/", params=period(), timeout=30)
        assert answer.status_code == 503
        assert "Traceback" not in answer.text
        page = parse(answer.text)
        assert "The ledger cannot be read:" in page.text
        assert page.rows == []
        assert page.buckets["globex"]["RUN_CREATE"]["throttled"] == "1.0"  # metrics still there
        # the proxy itself carries on meanwhile
        assert tenant(proxy, "acme").beta.assistants.create(model="gpt-4o").id
        database.start()
        assert httpx.get(proxy.admin.url + "/", timeout=30).status_code == 200


def test_a_page_waiting_on_a_frozen_database_holds_up_nothing_else(
    simulator: ServerThread,
) -> None:
    slow = {"database_connect_timeout": 30, "database_statement_timeout": 30}
    with (
        postgres_cluster() as database,
        running_proxy(
            simulator.url + "/v1", policy=POLICY, database_url=database.url, **slow
        ) as proxy,
        httpx.Client(base_url=proxy.admin.url, timeout=60) as admin,
        ThreadPoolExecutor(1) as browser,
    ):
        traffic(proxy)
        pool = proxy.tollhouse.engine.pool
        assert admin.get("/").status_code == 200
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
        with frozen(database) as processes:
            page = browser.submit(admin.get, "/", params=period())
            # The page's ledger read holds a connection, waiting on the frozen server...
            wait_for(lambda: pool.checkedout() or None, 20, "the page to reach the database")  # type: ignore[attr-defined]
            # ...while the admin port and the proxy answer.
            assert admin.get("/healthz").status_code == 200
            assert "tollhouse_requests_total" in admin.get("/metrics").text
            assert tenant(proxy, "acme").beta.assistants.create(model="gpt-4o").id
            assert not page.done()
            assert all(stopped(pid) for pid in processes)
        assert page.result().status_code == 200


# -- in a real browser -----------------------------------------------------------------------


def chromium(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    binary = require("chromium")
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", *options],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )  # fmt: skip


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and unfiltered scanlines of an 8-bit, non-interlaced RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    at, compressed, header = 8, b"", None
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at : at + 8])
        body = data[at + 8 : at + 8 + length]
        assert (
            zlib.crc32(kind + body)
            == struct.unpack(">I", data[at + 8 + length : at + 12 + length])[0]
        )
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            compressed += body
        at += 12 + length
    assert header is not None
    width, height, depth, colour, _, _, interlace = header
    assert (depth, interlace) == (8, 0)
    assert colour in (2, 6)
    size = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(compressed), width * size
    rows, previous = [], bytes(stride)
    for y in range(height):
        line = raw[y * (stride + 1) : (y + 1) * (stride + 1)]
        previous = unfilter(line[0], bytearray(line[1:]), previous, size)
        rows.append(previous)
    return width, height, rows


def unfilter(kind: int, line: bytearray, above: bytes, size: int) -> bytes:
    if kind == 0:
        return bytes(line)
    if kind == 2:
        return bytes((x + b) & 255 for x, b in zip(line, above, strict=True))
    for i in range(len(line)):
        a = line[i - size] if i >= size else 0
        b, c = above[i], above[i - size] if i >= size else 0
        if kind == 1:
            line[i] = (line[i] + a) & 255
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 255
        else:  # Paeth
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    return bytes(line)


@pytest.mark.timeout(300)
def test_a_browser_renders_the_numbers_the_chart_and_a_real_picture(
    served: tuple[RunningProxy, str], tmp_path: Path
) -> None:
    proxy, database_url = served
    at = int(time.time())
    hostile = RunSeen(id="run_hostile", thread_id="thread_h", assistant_id="asst_h",
                      model="gpt-4o", status="completed", created_at=at - 5, finished_at=at,
                      usage=Usage(100, 10, 110), code_interpreter=False,
                      file_search=False)  # fmt: skip
    ledger.apply(proxy.tollhouse.engine, Batch(seen=[Seen(HOSTILE, hostile)]), at)
    query = period()
    url = f"{proxy.admin.url}/?since={query['since']}&until={query['until']}"

    dom = chromium(tmp_path, "--dump-dom", url).stdout
    page = parse(dom)
    document = report_json(database_url, query, page.main["data-now"])
    assert page.rows == json_rows(document)
    assert {tenant for _, tenant, _ in page.rows} == {"acme", "globex", HOSTILE, TOTAL}
    assert page.tags.count("script") == 0
    assert page.tags.count("img") == 0
    assert HOSTILE in page.text  # shown as text, not run
    assert page.tags.count("svg") >= 3  # acme's, globex's and the hostile tenant's charts
    assert len(page.bars["acme"]) == 3
    assert page.buckets["globex"]["RUN_CREATE"]["throttled"] == "1.0"

    shot = tmp_path / "page.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,900", url)
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 900)
    colours = {line[x : x + 3] for line in rows[::10] for x in range(0, len(line), 12)}
    assert len(colours) > 20  # text, table rules, bars in several colours: not a blank page
