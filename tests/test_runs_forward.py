"""Run state only moves forward, and sessions follow the calls, whatever order batches come in.

The same bodies on real SQLite and real PostgreSQL (the ``engine`` fixture); batches are
applied one after another in shuffled orders and, on separate threads, at once.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlmodel import col

from tollhouse.ledger import store as ledger
from tollhouse.ledger.engine import engine_from_url, migrate
from tollhouse.ledger.models import CodeInterpreterSession, Run, ToolCall
from tollhouse.ledger.store import GONE, SESSION_SECONDS, Batch, Counted, Seen, session_starts
from tollhouse.metering.meter import TERMINAL_STATUSES, RunSeen, StepSeen, ToolCallSeen, Usage
from tollhouse.metering.pricing import load_pricing
from tollhouse.report.build import build_report

T0 = 1_764_000_000  # 2025-11-24T16:00:00Z
TENANTS = ("acme", "globex", "initech")
MODELS = ("gpt-4o", "gpt-4o-mini")
LIVE_PATHS = (
    ("queued", "in_progress"),
    ("queued", "in_progress", "requires_action", "in_progress"),
    ("queued",),
    ("in_progress", "cancelling"),
)
ENDS = ("completed", "completed", "failed", "cancelled", "expired", "incomplete")


@dataclass(frozen=True)
class Story:
    """One run's sightings, first to last, and its owner."""

    tenant: str
    sightings: tuple[RunSeen, ...]

    @property
    def final(self) -> RunSeen:
        return self.sightings[-1]


def run_seen(run_id: str, status: str, model: str, usage: Usage | None = None) -> RunSeen:
    terminal = status in TERMINAL_STATUSES
    return RunSeen(
        id=run_id,
        thread_id=f"thread_{run_id}",
        assistant_id="asst_1",
        model=model,
        status=status,
        created_at=T0,
        finished_at=T0 + 20 if terminal else None,
        usage=usage if terminal else None,
        code_interpreter=False,
        file_search=False,
    )


def stories(count: int, rng: random.Random) -> list[Story]:
    made = []
    for number in range(count):
        run_id, model = f"run_{number:04d}", rng.choice(MODELS)
        prompt, completion = rng.randint(50, 5000), rng.randint(1, 900)
        usage = Usage(prompt, completion, prompt + completion)
        live = [run_seen(run_id, status, model) for status in rng.choice(LIVE_PATHS)]
        end = run_seen(run_id, rng.choice(ENDS), model, usage)
        # A finished run is polled again and again: the same terminal object each time.
        made.append(Story(rng.choice(TENANTS), (*live, end, end)))
    return made


def shuffled_batches(stories: list[Story], rng: random.Random, size: int) -> list[Batch]:
    """Every sighting of every run, shuffled, cut into batches of about ``size``."""
    seen = [Seen(story.tenant, sighting) for story in stories for sighting in story.sightings]
    rng.shuffle(seen)
    return [Batch(seen=seen[i : i + size]) for i in range(0, len(seen), size)]


def apply_all(engine: Engine, batches: list[Batch], workers: int) -> list[Counted]:
    if workers == 1:
        return [ledger.apply(engine, batch, T0 + 60 + n) for n, batch in enumerate(batches)]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda b: ledger.apply(engine, b, T0 + 60), batches))


def stored_runs(engine: Engine) -> dict[str, Run]:
    with engine.connect() as connection:
        rows = connection.execute(select(Run)).all()
    return {row.id: Run.model_validate(row._mapping) for row in rows}


def report_totals(engine: Engine) -> tuple[int, int, int]:
    since, until = (
        datetime.fromtimestamp(T0 - 86_400, UTC),
        datetime.fromtimestamp(T0 + 86_400, UTC),
    )
    totals = build_report(engine, load_pricing(), since, until, until).totals
    return totals.runs, totals.input_tokens, totals.output_tokens


@pytest.mark.parametrize("workers", [1, 4], ids=["one-after-another", "four-at-once"])
def test_terminal_state_wins_whatever_order_the_sightings_arrive_in(
    engine: Engine, workers: int
) -> None:
    rng = random.Random(20261202 + workers)
    made = stories(150, rng)
    counted = apply_all(engine, shuffled_batches(made, rng, size=7), workers)

    runs = stored_runs(engine)
    assert len(runs) == len(made)
    for story in made:
        stored, final = runs[story.final.id], story.final
        assert stored.usage_recorded_at is not None, stored
        assert stored.status == final.status, stored
        assert stored.finished_at == final.finished_at
        assert final.usage is not None
        assert (stored.prompt_tokens, stored.completion_tokens) == (
            final.usage.prompt_tokens,
            final.usage.completion_tokens,
        )
    # every run with usage is terminal; each was counted once, by exactly one batch
    assert all(r.status in TERMINAL_STATUSES for r in runs.values() if r.usage_recorded_at)
    finished = Counter(f.run.id for c in counted for f in c.finished_runs)
    assert finished == Counter({story.final.id: 1 for story in made})
    usages = [story.final.usage for story in made if story.final.usage is not None]
    assert report_totals(engine) == (
        len(made),
        sum(u.prompt_tokens for u in usages),
        sum(u.completion_tokens for u in usages),
    )


def test_an_older_poll_written_after_the_terminal_one_changes_nothing(engine: Engine) -> None:
    usage = Usage(300, 40, 340)
    done = run_seen("run_late", "completed", "gpt-4o", usage)
    ledger.apply(engine, Batch(seen=[Seen("acme", done)]), T0 + 30)
    # another replica's flush, late, of polls it saw before the run finished
    late = [run_seen("run_late", s, "gpt-4o") for s in ("queued", "in_progress")]
    again = ledger.apply(engine, Batch(seen=[Seen("acme", s) for s in late]), T0 + 40)
    assert again.finished_runs == []
    stored = stored_runs(engine)["run_late"]
    assert (stored.status, stored.prompt_tokens, stored.finished_at) == ("completed", 300, T0 + 20)
    assert report_totals(engine) == (1, 300, 40)


def test_a_run_recorded_gone_still_takes_a_later_terminal_sighting(engine: Engine) -> None:
    ledger.apply(engine, Batch(seen=[Seen("acme", run_seen("run_g", "in_progress", "gpt-4o"))]), T0)
    with engine.begin() as connection:  # what the reconciler writes when the upstream says 404
        connection.execute(
            Run.__table__.update()  # type: ignore[attr-defined]
            .where(col(Run.id) == "run_g")
            .values(status=GONE, usage_recorded_at=T0 + 5)
        )
    # a spooled batch, replayed after the reconciler gave up on the run
    done = run_seen("run_g", "completed", "gpt-4o", Usage(10, 2, 12))
    counted = ledger.apply(engine, Batch(seen=[Seen("acme", done)]), T0 + 9)
    assert [f.run.id for f in counted.finished_runs] == ["run_g"]
    assert report_totals(engine) == (1, 10, 2)


@pytest.mark.parametrize(
    ("times", "covered_until", "starts"),
    [
        ([], None, []),
        ([T0], None, [T0]),
        ([T0 + 1800, T0], None, [T0]),  # order does not matter
        ([T0, T0 + 3599, T0 + 3600], None, [T0, T0 + 3600]),
        ([T0, T0 + 3000, T0 + 5000], None, [T0, T0 + 5000]),  # a session is an hour from its start
        ([T0 + 10, T0 + 4000], T0 + 3600, [T0 + 4000]),  # an earlier session still covers
        ([T0 + 3600], T0 + 3600, [T0 + 3600]),
    ],
)
def test_session_starts(times: list[int], covered_until: int | None, starts: list[int]) -> None:
    assert session_starts(times, covered_until) == starts


def ci_step(thread: str, call_id: str, at: int) -> StepSeen:
    step_id, run_id = f"step_{call_id}", f"run_{call_id}"
    call = ToolCallSeen(call_id, "code_interpreter", step_id, run_id, thread, at)
    return StepSeen(step_id, run_id, thread, "completed", at, (call,), None)


@pytest.mark.parametrize("workers", [1, 4], ids=["one-after-another", "four-at-once"])
def test_sessions_are_those_the_calls_give_whatever_order_they_arrive_in(
    engine: Engine, workers: int
) -> None:
    rng = random.Random(7 + workers)
    calls: dict[str, list[int]] = {}
    for number in range(12):
        offsets = sorted(rng.sample(range(0, 4 * SESSION_SECONDS), rng.randint(1, 9)))
        calls[f"thread_{number:02d}"] = [T0 + offset for offset in offsets]
    steps = [
        Seen("acme", ci_step(thread, f"call_{thread}_{n}", at))
        for thread, times in calls.items()
        for n, at in enumerate(times)
    ]
    rng.shuffle(steps)
    batches = [Batch(seen=steps[i : i + 3]) for i in range(0, len(steps), 3)]
    batches += [Batch(seen=steps[i : i + 5]) for i in range(0, len(steps), 5)]  # seen twice
    counted = apply_all(engine, batches, workers)

    with engine.connect() as connection:
        stored = connection.execute(
            select(col(CodeInterpreterSession.thread_id), col(CodeInterpreterSession.started_at))
        ).all()
        recorded_calls = connection.execute(select(col(ToolCall.id))).scalars().all()
    expected = {(thread, at) for thread, times in calls.items() for at in session_starts(times)}
    assert set(stored) == expected
    assert len(stored) == len(expected)
    assert len(recorded_calls) == sum(len(times) for times in calls.values())
    assert sum(len(c.tool_calls) for c in counted) == len(recorded_calls)
    # a late call can move a session but never remove one: the metric counts what the ledger holds
    assert sum(len(c.sessions) for c in counted) == len(expected)


@pytest.fixture
def pg_ledger(postgres_url: str) -> Iterator[Engine]:
    """A migrated ledger in a database of its own on the session's PostgreSQL."""
    name = f"forward_{uuid.uuid4().hex[:12]}"
    server = engine_from_url(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = engine_from_url(make_url(postgres_url).set(database=name).render_as_string(False))
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        server.dispose()


def waiting_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return waiting > 0


def test_a_batch_postgresql_rolls_back_as_a_deadlock_is_applied_again(pg_ledger: Engine) -> None:
    live = [Seen("acme", run_seen(f"run_{x}", "in_progress", "gpt-4o")) for x in "ab"]
    ledger.apply(pg_ledger, Batch(seen=live), T0)
    done = [Seen("acme", run_seen(f"run_{x}", "completed", "gpt-4o", Usage(5, 1, 6))) for x in "ab"]
    with pg_ledger.connect() as other, ThreadPoolExecutor(1) as pool:
        # another writer holds run_b; the batch locks run_a, then waits for run_b ...
        other.execute(text("SELECT id FROM run WHERE id = 'run_b' FOR UPDATE"))
        applied = pool.submit(ledger.apply, pg_ledger, Batch(seen=done), T0 + 30)
        deadline = time.monotonic() + 30
        while not waiting_for_a_lock(pg_ledger):
            assert time.monotonic() < deadline, "the batch never waited for run_b"
            time.sleep(0.01)
        # ... and the other writer now wants run_a: PostgreSQL rolls the batch back
        other.execute(text("SELECT id FROM run WHERE id = 'run_a' FOR UPDATE"))
        other.commit()
        counted = applied.result(timeout=60)
    assert sorted(f.run.id for f in counted.finished_runs) == ["run_a", "run_b"]
    assert report_totals(pg_ledger) == (2, 10, 2)
