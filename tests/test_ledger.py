"""The ledger on real SQLite and real PostgreSQL: the same test bodies on both."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, func, inspect, select
from sqlmodel import Session

from tollhouse.api.classify import Kind
from tollhouse.ledger import store as ledger
from tollhouse.ledger.engine import migrate
from tollhouse.ledger.models import (
    CodeInterpreterSession,
    OwnedObject,
    RequestCount,
    Run,
    ToolCall,
    VectorStoreSample,
)
from tollhouse.ledger.spool import Spool, dumps, loads
from tollhouse.ledger.store import Batch, Owned, Sample, Seen
from tollhouse.metering.meter import ObjectSeen, RunSeen, StepSeen, ToolCallSeen, Usage

T0 = 1_764_000_000


def run(status: str, usage: Usage | None = None, run_id: str = "run_1", **extra: object) -> RunSeen:
    fields: dict[str, object] = {
        "id": run_id,
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "model": "gpt-4o",
        "status": status,
        "created_at": T0,
        "finished_at": T0 + 30 if usage else None,
        "usage": usage,
        "code_interpreter": True,
        "file_search": False,
    }
    fields.update(extra)
    return RunSeen(**fields)  # type: ignore[arg-type]


def step(step_id: str, calls: list[tuple[str, str, int]], run_id: str = "run_1") -> StepSeen:
    return StepSeen(
        id=step_id,
        run_id=run_id,
        thread_id="thread_1",
        status="completed",
        created_at=calls[0][2] if calls else T0,
        tool_calls=tuple(
            ToolCallSeen(id=i, type=t, step_id=step_id, run_id=run_id, thread_id="thread_1", at=at)
            for i, t, at in calls
        ),
        usage=None,
    )


USAGE = Usage(prompt_tokens=100, completion_tokens=20, total_tokens=120)


def test_migrations_create_every_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"owned_object", "run", "tool_call", "code_interpreter_session", "tenant"} <= tables
    assert {"vector_store_sample", "request_count", "alembic_version"} <= tables
    migrate(engine)  # idempotent


def test_a_run_is_counted_once_however_often_it_is_polled(engine: Engine) -> None:
    polls = [run("queued"), run("in_progress"), run("completed", USAGE)]
    first = ledger.apply(engine, Batch(seen=[Seen("acme", r) for r in polls]), T0 + 40)
    again = ledger.apply(engine, Batch(seen=[Seen("acme", run("completed", USAGE))]), T0 + 50)
    assert [f.run.id for f in first.finished_runs] == ["run_1"]
    assert again.finished_runs == []
    with Session(engine) as session:
        stored = session.exec(select(Run)).scalars().one()  # type: ignore[call-overload]
    assert (stored.status, stored.prompt_tokens, stored.completion_tokens) == ("completed", 100, 20)
    assert stored.tenant == "acme"


def test_a_late_live_sighting_does_not_undo_a_terminal_one(engine: Engine) -> None:
    batch = Batch(seen=[Seen("acme", run("completed", USAGE)), Seen("acme", run("in_progress"))])
    counted = ledger.apply(engine, batch, T0 + 40)
    assert len(counted.finished_runs) == 1
    with Session(engine) as session:
        assert session.get(Run, "run_1").status == "completed"  # type: ignore[union-attr]


def test_the_owner_stays_the_first_tenant(engine: Engine) -> None:
    seen = ObjectSeen("vs_1", Kind.VECTOR_STORE, None, T0, False, None, 0)
    ledger.apply(engine, Batch(owned=[Owned("acme", seen)]), T0)
    ledger.apply(engine, Batch(owned=[Owned("globex", seen)]), T0 + 5)
    assert ledger.owners(engine, ["vs_1", "vs_unknown"]) == {"vs_1": "acme"}


def test_code_interpreter_sessions_are_per_thread_per_hour(engine: Engine) -> None:
    calls = [
        ("call_1", "code_interpreter", T0),
        ("call_2", "code_interpreter", T0 + 1800),  # same session
        ("call_3", "code_interpreter", T0 + 3600),  # a new hour: a new session
        ("call_4", "file_search", T0 + 10),
    ]
    steps = [Seen("acme", step(f"step_{i}", [c])) for i, c in enumerate(calls)]
    counted = ledger.apply(engine, Batch(seen=[Seen("acme", run("completed", USAGE)), *steps]), T0)
    again = ledger.apply(engine, Batch(seen=steps), T0 + 10)
    assert counted.sessions == ["acme", "acme"]
    assert sorted(counted.tool_calls) == [("acme", "code_interpreter")] * 3 + [
        ("acme", "file_search")
    ]
    assert again.sessions == [] and again.tool_calls == []  # noqa: PT018
    with engine.connect() as connection:
        sessions = connection.execute(select(func.count()).select_from(CodeInterpreterSession))
        assert sessions.scalar_one() == 2
        assert connection.execute(select(func.count()).select_from(ToolCall)).scalar_one() == 4
        steps_seen = connection.execute(select(Run.steps_seen)).scalar_one()  # type: ignore[call-overload]
    assert steps_seen is True


def test_request_counts_add_up_per_minute(engine: Engine) -> None:
    key = ("acme", "GET", "forwarded", T0 // 60 * 60)
    ledger.apply(engine, Batch(requests={key: 3}), T0)
    ledger.apply(engine, Batch(requests={key: 4}), T0)
    with engine.connect() as connection:
        count = connection.execute(select(RequestCount.count)).scalar_one()  # type: ignore[call-overload]
    assert count == 7


def test_a_batch_applied_again_counts_nothing_twice(engine: Engine) -> None:
    # A commit whose acknowledgement was lost is spooled and replayed: the replay is a no-op.
    key = ("acme", "GET", "forwarded", T0 // 60 * 60)
    batch = Batch(
        requests={key: 3},
        samples=[Sample("vs_1", "acme", T0, 2048)],
        seen=[Seen("acme", step("s", [("c", "code_interpreter", T0)]))],
    )
    first = ledger.apply(engine, batch, T0)
    again = ledger.apply(engine, loads(dumps(batch)), T0 + 1)
    assert len(first.tool_calls) == 1
    assert (again.tool_calls, again.finished_runs) == ([], [])
    with engine.connect() as connection:
        count = connection.execute(select(RequestCount.count)).scalar_one()  # type: ignore[call-overload]
        samples = connection.execute(select(func.count()).select_from(VectorStoreSample)).scalar()
    assert (count, samples) == (3, 1)
    assert ledger.forget_applied(engine, T0 + 1) == 1
    ledger.apply(engine, batch, T0 + 2)  # forgotten: it would count again (after 30 days)
    with engine.connect() as connection:
        count = connection.execute(select(RequestCount.count)).scalar_one()  # type: ignore[call-overload]
    assert count == 6


def test_samples_are_kept(engine: Engine) -> None:
    ledger.apply(engine, Batch(samples=[Sample("vs_1", "acme", T0, 2048)]), T0)
    with engine.connect() as connection:
        rows = connection.execute(select(VectorStoreSample.usage_bytes)).scalars().all()  # type: ignore[call-overload]
    assert rows == [2048]


def test_keep_marker_and_last_use_move_forward(engine: Engine) -> None:
    ledger.apply(
        engine,
        Batch(owned=[Owned("acme", ObjectSeen("vs_1", Kind.VECTOR_STORE, None, T0, False, T0, 0))]),
        T0,
    )
    later = ObjectSeen("vs_1", Kind.VECTOR_STORE, None, T0, True, T0 + 500, 10)
    ledger.apply(engine, Batch(owned=[Owned("acme", later)]), T0 + 500)
    with Session(engine) as session:
        stored = session.get(OwnedObject, "vs_1")
    assert stored is not None
    assert (stored.keep, stored.last_used_at) == (True, T0 + 500)


def test_a_batch_survives_the_spool_round_trip(tmp_path: Path) -> None:
    batch = Batch(
        owned=[Owned("acme", ObjectSeen("thread_1", Kind.THREAD, None, T0, True, None, None))],
        seen=[
            Seen("acme", run("completed", USAGE)),
            Seen("acme", step("s", [("c", "file_search", T0)])),
        ],
        samples=[Sample("vs_1", "acme", T0, 5)],
        requests={("acme", "POST", "throttled", T0): 2},
        touched={"thread_1": T0 + 5},
    )
    assert loads(dumps(batch)) == batch
    spool = Spool(tmp_path / "ledger.spool")
    spool.append(batch)
    spool.append(batch)
    with spool.path.open("a") as torn:
        torn.write('{"owned": [')  # a crash mid-line
    assert spool.read() == [batch, batch]
    spool.rewrite([batch])
    assert spool.read() == [batch]
    spool.clear()
    assert not spool.pending()


def test_the_schema_revision_constant_is_the_newest_migration(engine: Engine) -> None:
    from alembic.script import ScriptDirectory

    from tollhouse.ledger.engine import SCHEMA_REVISION, alembic_config, current_revision

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == SCHEMA_REVISION
    assert current_revision(engine) == SCHEMA_REVISION


def test_use_through_the_proxy_moves_last_use_forward_never_back(engine: Engine) -> None:
    thread = ObjectSeen("thread_1", Kind.THREAD, None, T0, False, None, None)
    ledger.apply(engine, Batch(owned=[Owned("acme", thread)]), T0)
    ledger.apply(engine, Batch(touched={"thread_1": T0 + 100, "thread_unknown": T0}), T0)
    ledger.apply(engine, Batch(touched={"thread_1": T0 + 50}), T0)  # late, older news
    with Session(engine) as session:
        stored = session.get(OwnedObject, "thread_1")
    assert stored is not None
    assert stored.last_used_at == T0 + 100
