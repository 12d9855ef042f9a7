"""Three ``tollhouse serve`` replicas on one PostgreSQL ledger meter exactly what the upstream did.

A client's requests go to the replicas at random, one request at a time (its polls of
one run alternate between them); afterwards the ledger and ``tollhouse report`` are
compared with the simulator's own record of every run, tool call and thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, select, text
from sqlalchemy.engine import make_url
from sqlmodel import col

from tests.servers import ServerThread, TollhouseProcess, tollhouse_process
from tollhouse.ledger.engine import SCHEMA_REVISION, current_revision, engine_from_url, migrate
from tollhouse.ledger.models import CodeInterpreterSession, OwnedObject, Run, ToolCall
from tollhouse_simulator.state import Simulator

HEADER = "X-Tollhouse-Tenant"
TENANTS = ("acme", "globex", "initech")
HOUR = 3600
WORKERS = 4  # conversations per tenant at once
RUNS = 7  # runs per conversation, plus one created with its thread
METERED = ("code_interpreter", "file_search")
POLICY = """\
identify: {mode: header}
organization:
  GET: {unlimited: true}
  POST: {unlimited: true}
  RUN_CREATE: {unlimited: true}
  DELETE: {unlimited: true}
tenants: {acme: {}, globex: {}, initech: {}}
"""
T = TypeVar("T")


# -- the simulator's own record ----------------------------------------------------------------


@dataclass
class UpstreamRecord:
    """What the simulator holds: the truth the ledger is compared with."""

    # run id -> (tenant, thread, status, model, prompt tokens, completion tokens)
    runs: dict[str, tuple[str, str, str, str, int, int]] = field(default_factory=dict)
    calls: dict[str, tuple[str, str, str, int]] = field(default_factory=dict)  # type, thread...
    sessions: set[tuple[str, str, int]] = field(default_factory=set)  # tenant, thread, start
    owners: dict[str, str] = field(default_factory=dict)  # thread, run, assistant -> tenant

    def tokens(self) -> dict[tuple[str, str], tuple[int, int, int]]:
        """(tenant, model) -> (runs, input tokens, output tokens)."""
        totals: dict[tuple[str, str], tuple[int, int, int]] = {}
        for tenant, _, _, model, prompt, completion in self.runs.values():
            runs, tokens_in, tokens_out = totals.get((tenant, model), (0, 0, 0))
            totals[(tenant, model)] = (runs + 1, tokens_in + prompt, tokens_out + completion)
        return totals

    def tools(self) -> dict[str, tuple[int, int]]:
        """tenant -> (Code Interpreter sessions, File Search calls)."""
        counts = {tenant: [0, 0] for tenant in TENANTS}
        for tenant, _, _ in self.sessions:
            counts[tenant][0] += 1
        for kind, _, tenant, _ in self.calls.values():
            counts[tenant][1] += kind == "file_search"
        return {tenant: (ci, fs) for tenant, (ci, fs) in counts.items() if ci or fs}


def hourly_sessions(times: list[int]) -> list[int]:
    """Billing's rule, independently of tollhouse: a call opens a session unless a session
    opened within the hour before it."""
    starts: list[int] = []
    for at in sorted(times):
        if not starts or at >= starts[-1] + HOUR:
            starts.append(at)
    return starts


def _tenant(metadata: object) -> str:
    assert isinstance(metadata, dict), metadata
    return str(metadata["tenant"])


async def _read(sim: Simulator) -> UpstreamRecord:
    record = UpstreamRecord()
    now = sim.now()
    for assistant in sim.assistants:
        record.owners[assistant["id"]] = _tenant(assistant["metadata"])
    ci_times: dict[str, list[int]] = defaultdict(list)
    for thread in sim.threads:
        tenant = _tenant(thread["metadata"])
        record.owners[thread["id"]] = tenant
        sim.advance_thread(thread["id"], now)
        for run in sim.runs[thread["id"]]:
            obj = run.obj
            usage = obj["usage"] or {"prompt_tokens": 0, "completion_tokens": 0}
            record.owners[obj["id"]] = tenant
            record.runs[obj["id"]] = (
                tenant,
                thread["id"],
                obj["status"],
                obj["model"],
                usage["prompt_tokens"],
                usage["completion_tokens"],
            )
            for step in run.steps:
                details = step["step_details"]
                for call in (
                    details.get("tool_calls", []) if details["type"] == "tool_calls" else []
                ):
                    if call["type"] in METERED:
                        record.calls[call["id"]] = (
                            call["type"],
                            thread["id"],
                            tenant,
                            step["created_at"],
                        )
                        if call["type"] == "code_interpreter":
                            ci_times[thread["id"]].append(step["created_at"])
    for thread_id, times in ci_times.items():
        tenant = record.owners[thread_id]
        record.sessions |= {(tenant, thread_id, at) for at in hourly_sessions(times)}
    return record


def upstream_record(simulator: ServerThread) -> UpstreamRecord:
    """The simulator's record, read on its own event loop (its state lives there)."""
    sim = simulator.server.config.app.state.simulator
    assert simulator.loop is not None
    return asyncio.run_coroutine_threadsafe(_read(sim), simulator.loop).result(30)


# -- the ledger, as tollhouse recorded it ----------------------------------------------------


def ledger_record(engine: Engine) -> UpstreamRecord:
    record = UpstreamRecord()
    with engine.connect() as connection:
        for run in connection.execute(select(Run)).all():
            if run.usage_recorded_at is not None:
                record.runs[run.id] = (
                    run.tenant,
                    run.thread_id,
                    run.status,
                    run.model,
                    run.prompt_tokens or 0,
                    run.completion_tokens or 0,
                )
            record.owners[run.id] = run.tenant
        for call in connection.execute(select(ToolCall)).all():
            record.calls[call.id] = (call.type, call.thread_id, call.tenant, call.at)
        sessions = connection.execute(
            select(
                col(CodeInterpreterSession.tenant),
                col(CodeInterpreterSession.thread_id),
                col(CodeInterpreterSession.started_at),
            )
        )
        record.sessions = {(t, thread, at) for t, thread, at in sessions}
        owned = connection.execute(
            select(col(OwnedObject.id), col(OwnedObject.tenant)).where(
                col(OwnedObject.kind).in_(["thread", "assistant"])
            )
        )
        record.owners.update({row.id: row.tenant for row in owned})
    return record


def wait_for(check: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll a real condition until it holds (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def ledger_caught_up(engine: Engine, truth: UpstreamRecord) -> UpstreamRecord | None:
    """The ledger once every run of the record is in it with its usage and every tool call."""
    seen = ledger_record(engine)
    complete = seen.runs.keys() >= truth.runs.keys() and seen.calls.keys() >= truth.calls.keys()
    return seen if complete else None


def report(database_url: str, *extra: str) -> dict[str, Any]:
    """``tollhouse report --format json`` as a user runs it."""
    today = datetime.now(UTC).date()
    period = ("--since", str(today - timedelta(days=1)), "--until", str(today + timedelta(days=2)))
    done = subprocess.run(
        [sys.executable, "-m", "tollhouse", "report", "--format", "json", *period, *extra],
        capture_output=True,
        text=True,
        env={**os.environ, "TOLLHOUSE_DATABASE_URL": database_url},
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def reported(document: dict[str, Any]) -> tuple[dict[tuple[str, str], Any], dict[str, Any]]:
    """From a report by model: (tenant, model) -> (runs, input, output); tenant -> tools."""
    tokens, tools = {}, {}
    for row in document["rows"]:
        if row["group"] == "(tools and storage)":
            tools[row["tenant"]] = (row["code_interpreter_sessions"], row["file_search_calls"])
        else:
            tokens[(row["tenant"], row["group"])] = (
                row["runs"],
                row["input_tokens"],
                row["output_tokens"],
            )
    return tokens, tools


# -- the client: the real openai client, each request to a replica at random -------------------


class Spread(httpx.HTTPTransport):
    """Sends every request to one of the replicas, chosen at random."""

    def __init__(self, urls: list[str], rng: random.Random) -> None:
        super().__init__()
        self._targets = [httpx.URL(url) for url in urls]
        self._rng = rng
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            target = self._rng.choice(self._targets)
        request.url = request.url.copy_with(host=target.host, port=target.port)
        request.headers["host"] = f"{target.host}:{target.port}"
        return super().handle_request(request)


def tenant_client(urls: list[str], tenant: str, seed: int) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=urls[0] + "/v1",
        api_key="sk-test",
        max_retries=0,
        default_headers={HEADER: tenant},
        http_client=httpx.Client(transport=Spread(urls, random.Random(seed)), timeout=30),
    )


def conversation(urls: list[str], tenant: str, assistant_id: str, seed: int, runs: int) -> None:
    """A thread with ``runs`` runs, streamed or polled (every poll to any replica, steps
    listed after), then a thread created and run in one call."""
    with tenant_client(urls, tenant, seed) as client:
        talk(client, tenant, assistant_id, runs)


def talk(client: openai.OpenAI, tenant: str, assistant_id: str, runs: int) -> None:
    metadata = {"tenant": tenant}
    thread = client.beta.threads.create(
        metadata=metadata, messages=[{"role": "user", "content": "sum the numbers 1 to 10"}]
    )
    for number in range(runs):
        if number % 3 == 1:
            with client.beta.threads.runs.stream(
                thread_id=thread.id, assistant_id=assistant_id, metadata=metadata
            ) as stream:
                stream.until_done()
        else:
            run = client.beta.threads.runs.create(
                thread_id=thread.id, assistant_id=assistant_id, metadata=metadata
            )
            while run.status in ("queued", "in_progress"):
                run = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
            client.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
        client.beta.threads.messages.create(thread.id, role="user", content=f"and {number}?")
    client.beta.threads.create_and_run_poll(
        assistant_id=assistant_id,
        thread={"metadata": metadata, "messages": [{"role": "user", "content": "again"}]},
        poll_interval_ms=5,
    )


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def ledger_url(postgres_url: str) -> Iterator[str]:
    """A database of its own on the session's PostgreSQL, migrated once before the replicas
    start (replicas starting together each apply the migrations otherwise)."""
    name = f"replicas_{uuid.uuid4().hex[:12]}"
    server = engine_from_url(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    engine = engine_from_url(url)
    migrate(engine)
    engine.dispose()
    try:
        yield url
    finally:
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        server.dispose()


def test_replicas_migrating_a_new_ledger_together_each_succeed(postgres_url: str) -> None:
    """Four replicas starting at once on an empty PostgreSQL database: one migrates, the
    others wait for it and find the schema done."""
    name = f"together_{uuid.uuid4().hex[:12]}"
    server = engine_from_url(postgres_url).execution_options(isolation_level="AUTOCOMMIT")
    with server.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    engines = [engine_from_url(url) for _ in range(4)]
    start = threading.Barrier(len(engines))

    def replica(engine: Engine) -> str | None:
        start.wait()
        migrate(engine)
        return current_revision(engine)

    try:
        with ThreadPoolExecutor(len(engines)) as pool:
            revisions = list(pool.map(replica, engines))
    finally:
        for engine in engines:
            engine.dispose()
        with server.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        server.dispose()
    assert revisions == [SCHEMA_REVISION] * 4


def lease_held(process: TollhouseProcess, job: str) -> float | None:
    exposition = httpx.get(process.admin_url + "/metrics", timeout=5).text
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "tollhouse_collector_lease_held" and sample.labels == {
                "collector": job
            }:
                return sample.value
    return None


def holders(processes: list[TollhouseProcess], job: str) -> list[TollhouseProcess] | None:
    """The replicas saying they hold the job's lease, once one does."""
    found = [p for p in processes if lease_held(p, job) == 1]
    return found or None


# -- the test ------------------------------------------------------------------------------------


def test_three_replicas_meter_every_run_tool_call_and_owner_exactly_once(
    simulator: ServerThread, ledger_url: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = {
        "TOLLHOUSE_DATABASE_URL": ledger_url,
        "TOLLHOUSE_UPSTREAM_API_KEY": "sk-test",
        "TOLLHOUSE_RECONCILE_SECONDS": "1",
        "TOLLHOUSE_RECONCILE_AFTER": "1",
        "TOLLHOUSE_SAMPLE_SECONDS": "1",
    }
    args = ("--upstream", simulator.url + "/v1", "--policy", str(policy))
    with (
        tollhouse_process(*args, env=env) as one,
        tollhouse_process(*args, env=env) as two,
        tollhouse_process(*args, env=env) as three,
    ):
        replicas = [one, two, three]
        urls = [p.url for p in replicas]
        work = []
        for number, tenant in enumerate(TENANTS):
            tools: list[Any] = [{"type": "code_interpreter"}]
            if tenant != "initech":
                tools.append({"type": "file_search"})
            model = "gpt-4o" if tenant != "globex" else "gpt-4o-mini"
            with tenant_client(urls, tenant, seed=number) as client:
                assistant = client.beta.assistants.create(
                    model=model, tools=tools, metadata={"tenant": tenant}
                )
            for worker in range(WORKERS):
                work.append((tenant, assistant.id, 100 * number + worker))
        with ThreadPoolExecutor(len(work)) as pool:
            done = [pool.submit(conversation, urls, *job, RUNS) for job in work]
            for future in done:
                future.result()

        truth = upstream_record(simulator)
        engine = engine_from_url(ledger_url)
        try:
            seen = wait_for(lambda: ledger_caught_up(engine, truth), 30, "the ledger")
        finally:
            engine.dispose()
        assert len(truth.runs) == len(TENANTS) * WORKERS * (RUNS + 1)
        assert seen.runs == truth.runs
        assert seen.calls == truth.calls
        assert seen.sessions == truth.sessions
        assert seen.owners == truth.owners

        tokens, tools_used = reported(report(ledger_url, "--group-by", "model"))
        assert tokens == truth.tokens()
        assert tools_used == truth.tools()
        totals = report(ledger_url)["totals"]
        assert totals["runs"] == len(truth.runs)
        assert totals["input_tokens"] == sum(r[4] for r in truth.runs.values())

        # One replica at a time runs each collector job; its lease outlives it.
        for job in ("reconciler", "storage_sampler"):
            assert len(wait_for(lambda job=job: holders(replicas, job), 15, job)) == 1
        (holder,) = holders(replicas, "reconciler") or []
        holder.process.send_signal(signal.SIGKILL)
        holder.process.wait(10)
        rest = [p for p in replicas if p is not holder]
        taken = wait_for(lambda: holders(rest, "reconciler"), 30, "another replica's lease")
        assert len(taken) == 1
