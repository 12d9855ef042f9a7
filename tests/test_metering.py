"""Usage and ownership through the real openai client, the simulator upstream and a real ledger."""

from __future__ import annotations

import io
from collections.abc import Iterator

import openai
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import func, select
from sqlmodel import Session

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve
from tests.services import postgres_cluster
from tollhouse.config.policy import parse_policy
from tollhouse.ledger.models import CodeInterpreterSession, OwnedObject, Run, VectorStoreSample
from tollhouse.ledger.store import owners
from tollhouse_simulator import SimulatorConfig, create_app

HEADER = "X-Tollhouse-Tenant"
POLICY = parse_policy({"identify": {"mode": "header"}, "tenants": {"acme": {}, "globex": {}}}, "t")


@pytest.fixture
def metered(simulator: ServerThread) -> Iterator[RunningProxy]:
    with running_proxy(
        simulator.url + "/v1", policy=POLICY, upstream_api_key="sk-test", reconcile_after=0
    ) as proxy:
        yield proxy


def tenant(proxy: RunningProxy, name: str) -> openai.OpenAI:
    return proxy.client(default_headers={HEADER: name})


def tokens(proxy: RunningProxy, name: str, model: str, direction: str) -> float:
    return proxy.sample("tollhouse_tokens_total", tenant=name, model=model, direction=direction)


def test_a_polled_run_is_counted_once(metered: RunningProxy) -> None:
    acme = tenant(metered, "acme")
    assistant = acme.beta.assistants.create(model="gpt-4o")
    thread = acme.beta.threads.create(messages=[{"role": "user", "content": "count these words"}])
    run = acme.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
    )
    for _ in range(5):  # polling a finished run again changes nothing
        acme.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    acme.beta.threads.runs.list(thread.id)
    metered.flush()
    assert run.usage is not None
    assert tokens(metered, "acme", "gpt-4o", "input") == run.usage.prompt_tokens
    assert tokens(metered, "acme", "gpt-4o", "output") == run.usage.completion_tokens
    assert metered.sample("tollhouse_runs_total", tenant="acme", status="completed") == 1
    assert metered.sample("tollhouse_run_polls_total", tenant="acme") >= 5
    expected = (run.usage.prompt_tokens * 2.50 + run.usage.completion_tokens * 10.00) / 1e6
    cost = metered.sample("tollhouse_cost_usd_total", tenant="acme", component="tokens")
    assert cost == pytest.approx(expected)
    with Session(metered.tollhouse.engine) as session:
        stored = session.get(Run, run.id)
    assert stored is not None
    assert (stored.tenant, stored.model, stored.prompt_tokens) == (
        "acme",
        "gpt-4o",
        run.usage.prompt_tokens,
    )


def test_a_streamed_run_is_counted_once(metered: RunningProxy) -> None:
    globex = tenant(metered, "globex")
    assistant = globex.beta.assistants.create(model="gpt-4o-mini")
    thread = globex.beta.threads.create(messages=[{"role": "user", "content": "hello there"}])
    with globex.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        stream.until_done()
        final = stream.get_final_run()
    globex.beta.threads.runs.retrieve(final.id, thread_id=thread.id)
    metered.flush()
    assert final.usage is not None
    assert tokens(metered, "globex", "gpt-4o-mini", "input") == final.usage.prompt_tokens
    assert metered.sample("tollhouse_runs_total", tenant="globex", status="completed") == 1


def test_unknown_models_are_metered_but_unpriced(metered: RunningProxy) -> None:
    acme = tenant(metered, "acme")
    assistant = acme.beta.assistants.create(model="house-model-7")
    run = acme.beta.threads.create_and_run_poll(assistant_id=assistant.id, poll_interval_ms=10)
    metered.flush()
    assert run.usage is not None
    assert tokens(metered, "acme", "house-model-7", "input") == run.usage.prompt_tokens
    assert metered.sample("tollhouse_unpriced_usage_total", model="house-model-7") == (
        run.usage.total_tokens
    )
    assert metered.sample("tollhouse_cost_usd_total", tenant="acme", component="tokens") == 0


def test_code_interpreter_sessions_and_file_search_calls(metered: RunningProxy) -> None:
    acme = tenant(metered, "acme")
    assistant = acme.beta.assistants.create(
        model="gpt-4o", tools=[{"type": "code_interpreter"}, {"type": "file_search"}]
    )
    one = acme.beta.threads.create(messages=[{"role": "user", "content": "a"}])
    two = acme.beta.threads.create(messages=[{"role": "user", "content": "b"}])
    for thread in (one, one, two):  # two runs in one thread within the hour: one session
        run = acme.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
        )
        acme.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    metered.flush()
    assert metered.sample("tollhouse_code_interpreter_sessions_total", tenant="acme") == 2
    assert metered.sample("tollhouse_file_search_calls_total", tenant="acme") == 3
    ci_cost = metered.sample(
        "tollhouse_cost_usd_total", tenant="acme", component="code_interpreter"
    )
    assert ci_cost == pytest.approx(0.06)
    with Session(metered.tollhouse.engine) as session:
        count = session.exec(select(func.count()).select_from(CodeInterpreterSession)).one()  # type: ignore[call-overload]
    assert count == (2,)


def test_owners_are_recorded_before_the_create_answer(metered: RunningProxy) -> None:
    acme = tenant(metered, "acme")
    assistant = acme.beta.assistants.create(model="gpt-4o")
    thread = acme.beta.threads.create()
    upload = acme.files.create(file=("a.txt", io.BytesIO(b"hello")), purpose="assistants")
    store = acme.vector_stores.create(name="docs")
    # no flush: the ledger already has them when the client has the answer
    recorded = owners(metered.tollhouse.engine, [assistant.id, thread.id, upload.id, store.id])
    assert recorded == dict.fromkeys([assistant.id, thread.id, upload.id, store.id], "acme")


def test_the_reconciler_finishes_runs_nobody_polled() -> None:
    now = [1_764_000_000.0]
    upstream = create_app(SimulatorConfig(clock=lambda: now[0]))
    with (
        serve(upstream) as simulator,
        running_proxy(
            simulator.url + "/v1", policy=POLICY, upstream_api_key="sk-test", reconcile_after=0
        ) as metered,
    ):
        acme = tenant(metered, "acme")
        assistant = acme.beta.assistants.create(
            model="gpt-4o", tools=[{"type": "code_interpreter"}]
        )
        run = acme.beta.threads.create_and_run(assistant_id=assistant.id)  # never polled
        assert run.status == "queued"
        metered.flush()
        collector = metered.tollhouse.collector
        assert collector is not None
        assert metered.run(collector.reconcile()) == 1  # fetched: still queued upstream
        metered.flush()
        assert metered.sample("tollhouse_runs_total", tenant="acme", status="completed") == 0
        metered.run(collector.reconcile())  # its census now sees the run, live
        assert metered.sample("tollhouse_runs_active", tenant="acme", status="queued") == 1
        oldest = metered.sample("tollhouse_run_oldest_active_age_seconds", status="queued")
        assert oldest > 0
        assert metered.sample("tollhouse_runs_active", tenant="globex", status="queued") == 0
        now[0] += 60  # the run finished upstream; the client never asked again
        assert metered.run(collector.reconcile()) == 1
        metered.flush()
        with Session(metered.tollhouse.engine) as session:
            finished = session.get(Run, run.id)
        assert finished is not None
        assert finished.status == "completed"
        assert finished.prompt_tokens is not None
        assert finished.steps_seen is True  # its code_interpreter steps were listed too
        assert metered.run(collector.reconcile()) == 0  # nothing left to ask
        assert metered.sample("tollhouse_runs_active", tenant="acme", status="queued") == 0
        assert metered.sample("tollhouse_run_oldest_active_age_seconds", status="queued") == 0
        assert metered.sample("tollhouse_runs_total", tenant="acme", status="completed") == 1
        assert metered.sample("tollhouse_code_interpreter_sessions_total", tenant="acme") == 1
        last = metered.sample(
            "tollhouse_collector_last_success_timestamp_seconds", collector="reconciler"
        )
        assert last > 0


def test_the_storage_sampler_attributes_bytes_to_owners(metered: RunningProxy) -> None:
    acme, globex = tenant(metered, "acme"), tenant(metered, "globex")
    for client, size in ((acme, 3000), (globex, 5000)):
        upload = client.files.create(file=("f.txt", io.BytesIO(b"x" * size)), purpose="assistants")
        store = client.vector_stores.create(name="s")
        client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=upload.id, poll_interval_ms=10
        )
    collector = metered.tollhouse.collector
    assert collector is not None
    assert metered.run(collector.sample_storage()) == 2
    metered.flush()
    assert metered.sample("tollhouse_vector_store_bytes", tenant="acme") == 3000
    assert metered.sample("tollhouse_vector_store_bytes", tenant="globex") == 5000
    with Session(metered.tollhouse.engine) as session:
        rows = session.exec(select(VectorStoreSample.tenant, VectorStoreSample.usage_bytes)).all()  # type: ignore[call-overload]
    assert sorted(tuple(r) for r in rows) == [("acme", 3000), ("globex", 5000)]


def test_spans_carry_genai_attributes(simulator: ServerThread) -> None:
    exporter = InMemorySpanExporter()
    with running_proxy(simulator.url + "/v1", policy=POLICY, exporter=exporter) as proxy:
        acme = tenant(proxy, "acme")
        assistant = acme.beta.assistants.create(model="gpt-4o")
        run = acme.beta.threads.create_and_run_poll(assistant_id=assistant.id, poll_interval_ms=10)
        proxy.tollhouse.tracing.force_flush()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert "create_agent" in spans
    invoke = spans["invoke_agent"]
    attributes = dict(invoke.attributes or {})
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["tollhouse.tenant"] == "acme"
    assert attributes["tollhouse.request_class"] == "RUN_CREATE"
    assert attributes["tollhouse.outcome"] == "forwarded"
    assert attributes["gen_ai.request.model"] == "gpt-4o"
    polls = [s for s in exporter.get_finished_spans() if s.name == "threads.runs.retrieve"]
    finished = [
        dict(s.attributes or {})
        for s in polls
        if "gen_ai.usage.input_tokens" in (s.attributes or {})
    ]
    assert run.usage is not None
    assert finished[-1]["gen_ai.usage.input_tokens"] == run.usage.prompt_tokens
    assert finished[-1]["gen_ai.usage.output_tokens"] == run.usage.completion_tokens


def test_nothing_is_lost_while_the_database_is_down(simulator: ServerThread) -> None:
    with postgres_cluster() as database:
        with running_proxy(
            simulator.url + "/v1", policy=POLICY, database_url=database.url
        ) as proxy:
            acme = tenant(proxy, "acme")
            assistant = acme.beta.assistants.create(model="gpt-4o")
            database.stop()
            # the database is gone: creates and runs still work, usage goes to the spool
            run = acme.beta.threads.create_and_run_poll(
                assistant_id=assistant.id, poll_interval_ms=10
            )
            proxy.flush()
            assert proxy.sample("tollhouse_ledger_write_errors_total") >= 1
            assert proxy.tollhouse.writer.spooled()
            assert tokens(proxy, "acme", "gpt-4o", "input") == 0  # not counted yet
            database.start()
            proxy.flush()  # replays the spool
            assert not proxy.tollhouse.writer.spooled()
            assert run.usage is not None
            assert tokens(proxy, "acme", "gpt-4o", "input") == run.usage.prompt_tokens
            with Session(proxy.tollhouse.engine) as session:
                stored = session.get(Run, run.id)
                thread_owner = session.get(OwnedObject, run.thread_id)
            assert stored is not None
            assert stored.prompt_tokens == run.usage.prompt_tokens
            assert thread_owner is not None
            assert thread_owner.tenant == "acme"


def test_reading_an_object_through_the_proxy_counts_as_using_it() -> None:
    then = 1_700_000_000.0  # the upstream's clock: objects were created long ago
    upstream = create_app(SimulatorConfig(clock=lambda: then))
    with serve(upstream) as simulator, running_proxy(simulator.url + "/v1", policy=POLICY) as proxy:
        acme = tenant(proxy, "acme")
        thread = acme.beta.threads.create()
        proxy.flush()
        with Session(proxy.tollhouse.engine) as session:
            created = session.get(OwnedObject, thread.id)
        assert created is not None
        assert created.last_used_at == int(then)
        acme.beta.threads.messages.list(thread.id)  # a read, nothing created
        proxy.flush()
        with Session(proxy.tollhouse.engine) as session:
            read = session.get(OwnedObject, thread.id)
        assert read is not None
        assert read.last_used_at > int(then) + 86_400  # now, not when it was created
