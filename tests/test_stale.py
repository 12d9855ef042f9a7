"""Stale selection: one table of decisions with `now` as a parameter; freezegun moving time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time

from tollhouse.cleanup.stale import (
    Finding,
    Record,
    Upstream,
    cutoffs,
    decide,
    duration,
    find_stale,
    holders,
    in_use,
    protected,
)
from tollhouse.config.policy import Cleanup, KeepMarker, parse_policy

DAY = 86_400
T0 = 1_764_000_000
POLICY = parse_policy(
    {
        "cleanup": {
            "ttl": {"threads": "30d", "vector_stores": "7d", "files": "14d", "assistants": "60d"},
            "tenants": {
                "acme": {"ttl": {"threads": "90d"}},
                "globex": {"ttl": {"vector_stores": None}},
            },
        }
    },
    "test",
).cleanup


def record(
    kind: str = "thread", tenant: str = "initech", used: int = T0, keep: bool = False
) -> Record:
    return Record(f"{kind}_1", kind, tenant, used, keep)


CASES = [
    # (case, record, now, upstream, began, finding)
    ("thread at its ttl", record(), T0 + 30 * DAY, None, None, Finding.STALE),
    ("thread a second before", record(), T0 + 30 * DAY - 1, None, None, Finding.FRESH),
    ("vector store at its ttl", record("vector_store"), T0 + 7 * DAY, None, None, Finding.STALE),
    ("vector store a second before", record("vector_store"), T0 + 7 * DAY - 1, None, None,
     Finding.FRESH),
    ("file at its ttl", record("file"), T0 + 14 * DAY, None, None, Finding.STALE),
    ("file a second before", record("file"), T0 + 14 * DAY - 1, None, None, Finding.FRESH),
    ("assistant at its ttl", record("assistant"), T0 + 60 * DAY, None, None, Finding.STALE),
    ("assistant a second before", record("assistant"), T0 + 60 * DAY - 1, None, None,
     Finding.FRESH),
    ("tenant override, longer", record(tenant="acme"), T0 + 30 * DAY, None, None, Finding.FRESH),
    ("tenant override reached", record(tenant="acme"), T0 + 90 * DAY, None, None, Finding.STALE),
    ("tenant override, off", record("vector_store", "globex"), T0 + 999 * DAY, None, None,
     Finding.OFF),
    ("override of one kind leaves the others", record("file", "globex"), T0 + 14 * DAY, None,
     None, Finding.STALE),
    ("kept in the ledger", record(keep=True), T0 + 999 * DAY, None, None, Finding.KEPT),
    ("kept upstream", record(), T0 + 999 * DAY, Upstream(keep=True), None, Finding.KEPT),
    ("upstream activity is later", record("vector_store"), T0 + 8 * DAY,
     Upstream(last_active_at=T0 + 2 * DAY), None, Finding.FRESH),
    ("upstream activity is older", record("vector_store", used=T0 + DAY), T0 + 8 * DAY,
     Upstream(last_active_at=T0), None, Finding.STALE),
    ("touched since the sweep began", record(used=T0 + 31 * DAY), T0 + 31 * DAY, None,
     T0 + 31 * DAY, Finding.TOUCHED),
    ("messages are never deleted on their own", record("message"), T0 + 999 * DAY, None, None,
     Finding.OFF),
]  # fmt: skip


@pytest.mark.parametrize(
    ("item", "now", "upstream", "began", "finding"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decide(
    item: Record, now: float, upstream: Upstream | None, began: float | None, finding: Finding
) -> None:
    assert decide(item, POLICY, now, upstream, began).finding is finding


def test_defaults_leave_assistants_alone() -> None:
    defaults = Cleanup()
    assert decide(record("assistant"), defaults, T0 + 3650 * DAY).finding is Finding.OFF
    assert decide(record(), defaults, T0 + 30 * DAY).stale
    assert (defaults.delete_share, defaults.schedule, defaults.keep_marker.key) == (
        0.5,
        "0 3 * * *",
        "tollhouse_keep",
    )


def test_reasons_say_why() -> None:
    verdict = decide(record(), POLICY, T0 + 31 * DAY + 7200)
    assert verdict.reason == "untouched for 31d 2h (time-to-live 30d)"
    assert (verdict.last_touched, verdict.ttl) == (T0, 30 * DAY)
    kept = decide(record(), POLICY, T0, Upstream(keep=True))
    assert kept.reason == "protected by metadata.tollhouse_keep=true"


def test_find_stale_orders_vector_stores_before_files() -> None:
    records = [
        Record("file-a", "file", "initech", T0),
        Record("vs_a", "vector_store", "initech", T0),
        Record("thread_new", "thread", "initech", T0 + 99 * DAY),
        Record("thread_old", "thread", "initech", T0 - DAY),
        Record("thread_b", "thread", "initech", T0),
        Record("asst_a", "assistant", "initech", T0),
    ]
    found = find_stale(records, POLICY, T0 + 60 * DAY)
    assert [r.id for r, _ in found] == ["thread_old", "thread_b", "asst_a", "vs_a", "file-a"]


def test_cutoffs_use_the_shortest_ttl_of_any_tenant() -> None:
    policy = parse_policy(
        {
            "cleanup": {
                "ttl": {"threads": "30d", "files": None},
                "tenants": {"acme": {"ttl": {"threads": "1d", "files": "2d"}}},
            }
        },
        "test",
    ).cleanup
    assert cutoffs(policy, T0) == {
        "thread": T0 - DAY,
        "vector_store": T0 - 7 * DAY,
        "file": T0 - 2 * DAY,
        "conversation": T0 - 30 * DAY,  # the successor API's kinds, at their defaults
        "container": T0 - DAY,
    }
    assert cutoffs(policy, T0, kinds=["file"]) == {"file": T0 - 2 * DAY}
    off = dict.fromkeys(("threads", "vector_stores", "files", "conversations", "containers"))
    assert cutoffs(Cleanup(ttl=off), T0) == {}


@pytest.mark.parametrize(
    ("attached", "leaving", "expected"),
    [
        ({}, set(), []),
        ({"file-1": {"vs_a"}}, {"vs_a"}, []),
        ({"file-1": {"vs_a", "vs_b"}}, {"vs_a"}, ["vs_b"]),
        ({"file-2": {"vs_a"}}, set(), []),
    ],
)
def test_a_file_stays_while_a_store_that_stays_holds_it(
    attached: dict[str, set[str]], leaving: set[str], expected: list[str]
) -> None:
    assert holders("file-1", attached, leaving) == expected
    verdict = in_use(decide(record("file"), POLICY, T0 + 99 * DAY), expected)
    assert verdict.finding is (Finding.IN_USE if expected else Finding.STALE)


@pytest.mark.parametrize(
    ("metadata", "marker", "expected"),
    [
        ({"tollhouse_keep": "true"}, KeepMarker(), True),
        ({"tollhouse_keep": "false"}, KeepMarker(), False),
        ({"tollhouse_keep": True}, KeepMarker(), False),  # metadata values are strings
        ({}, KeepMarker(), False),
        (None, KeepMarker(), False),
        ({"retain": "yes"}, KeepMarker(key="retain", value="yes"), True),
        ({"tollhouse_keep": "true"}, KeepMarker(key="retain", value="yes"), False),
    ],
)
def test_protect_marker(metadata: object, marker: KeepMarker, expected: bool) -> None:
    assert protected(metadata, marker) is expected


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m"), (3661, "1h 1m"), (30 * DAY, "30d"), (DAY + 5, "1d")],
)
def test_duration(seconds: int, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("written", "seconds"),
    [("30d", 30 * DAY), ("12h", 43_200), ("90m", 5400), ("45s", 45), ("2w", 14 * DAY), (600, 600)],
)
def test_ttls_are_durations(written: str | int, seconds: int) -> None:
    policy = parse_policy({"cleanup": {"ttl": {"files": written}}}, "test")
    assert policy.cleanup.ttl_for("anyone", "files") == seconds


def test_freezegun_moves_time_to_the_boundary() -> None:
    start = datetime.fromtimestamp(T0, UTC)
    records = [
        Record("thread_x", "thread", "initech", T0),
        Record("vs_x", "vector_store", "initech", T0),
        Record("thread_acme", "thread", "acme", T0),
    ]
    with freeze_time(start) as frozen:
        frozen.move_to(start + timedelta(days=7, seconds=-1))
        assert find_stale(records, POLICY, time.time()) == []
        frozen.tick(timedelta(seconds=1))
        assert [r.id for r, _ in find_stale(records, POLICY, time.time())] == ["vs_x"]
        frozen.move_to(start + timedelta(days=30))
        assert [r.id for r, _ in find_stale(records, POLICY, time.time())] == ["thread_x", "vs_x"]
        frozen.move_to(start + timedelta(days=90))
        found = [r.id for r, _ in find_stale(records, POLICY, time.time())]
        assert found == ["thread_acme", "thread_x", "vs_x"]
