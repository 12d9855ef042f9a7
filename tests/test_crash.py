"""``tollhouse serve`` killed under load, or stopped while streams are open, loses nothing.

SIGKILL: the process restarted on the same ledger and spool finds its running marker
and meters again what the lost batch held, including a run created in the instant
before the kill. SIGTERM: open streams run to their end, their usage is recorded, and
the process exits 0. Both are checked against the simulator's own record.
"""

from __future__ import annotations

import json
import random
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from sqlmodel import Session

from tests.conftest import running_proxy
from tests.servers import ServerThread, serve, tollhouse_process
from tests.test_replicas import (
    POLICY,
    TENANTS,
    ledger_record,
    tenant_client,
    upstream_record,
    wait_for,
)
from tollhouse.jobs.collector import recovery_since
from tollhouse.ledger.engine import engine_from_url
from tollhouse.ledger.models import Run
from tollhouse_simulator import SimulatorConfig, create_app

CI_TOOLS: list[Any] = [{"type": "code_interpreter"}, {"type": "file_search"}]
# What a client sees when the process it talks to is killed mid-request.
CUT_OFF = (openai.APIConnectionError, openai.APIStatusError, httpx.HTTPError)


@pytest.fixture
def state(tmp_path: Path) -> dict[str, str]:
    """Ledger, spool (and so the running marker) kept across restarts; the collector's
    own schedule far off, so only the recovery after an unclean stop can meter what a
    kill lost."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return {
        "TOLLHOUSE_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db",
        "TOLLHOUSE_SPOOL_PATH": str(tmp_path / "ledger.spool"),
        "TOLLHOUSE_POLICY_FILE": str(policy),
        "TOLLHOUSE_UPSTREAM_API_KEY": "sk-test",
        "TOLLHOUSE_RECONCILE_SECONDS": "3600",
        "TOLLHOUSE_RECONCILE_AFTER": "3600",
        "TOLLHOUSE_SAMPLE_SECONDS": "3600",
    }


class Load:
    """Clients running runs (polled or streamed, steps listed) until told to stop, or
    until the proxy goes away under them."""

    def __init__(self, url: str, threads: list[tuple[str, str, str]]) -> None:
        self.url = url
        self.threads = threads  # (tenant, assistant id, thread id)
        self.finished = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def runs(self) -> int | None:
        with self._lock:
            return self.finished if self.finished >= 4 * len(self.threads) else None

    def worker(self, tenant: str, assistant_id: str, thread_id: str, seed: int) -> None:
        rng = random.Random(seed)
        with tenant_client([self.url], tenant, seed) as client:
            while not self.stop.is_set():
                try:
                    self._one_run(client, rng, assistant_id, thread_id)
                except CUT_OFF:
                    return
                with self._lock:
                    self.finished += 1

    @staticmethod
    def _one_run(
        client: openai.OpenAI, rng: random.Random, assistant_id: str, thread_id: str
    ) -> None:
        runs = client.beta.threads.runs
        if rng.random() < 0.3:
            with runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
                stream.until_done()
            return
        run = runs.create(thread_id=thread_id, assistant_id=assistant_id)
        while run.status in ("queued", "in_progress"):
            run = runs.retrieve(run.id, thread_id=thread_id)
        runs.steps.list(run.id, thread_id=thread_id)


def setup_tenants(url: str, per_tenant: int) -> list[tuple[str, str, str]]:
    """An assistant per tenant and ``per_tenant`` threads each, created through the proxy."""
    made = []
    for number, tenant in enumerate(TENANTS):
        metadata = {"tenant": tenant}
        with tenant_client([url], tenant, number) as client:
            assistant = client.beta.assistants.create(
                model="gpt-4o", tools=CI_TOOLS, metadata=metadata
            )
            for _ in range(per_tenant):
                thread = client.beta.threads.create(
                    metadata=metadata, messages=[{"role": "user", "content": "plot 1 to 5"}]
                )
                made.append((tenant, assistant.id, thread.id))
    return made


def test_a_killed_process_meters_everything_once_restarted(
    simulator: ServerThread, state: dict[str, str]
) -> None:
    upstream = ("--upstream", simulator.url + "/v1")
    with tollhouse_process(*upstream, env=state) as first:
        threads = setup_tenants(first.url, per_tenant=3)
        load = Load(first.url, threads[1:])
        with ThreadPoolExecutor(len(load.threads)) as pool:
            for seed, job in enumerate(load.threads):
                pool.submit(load.worker, *job, seed)
            wait_for(load.runs, 60, "runs under load")
            # The last run: created upstream and answered, then the process dies at once.
            tenant, assistant_id, thread_id = threads[0]
            with tenant_client([first.url], tenant, 0) as client:
                last = client.beta.threads.runs.create(
                    thread_id=thread_id, assistant_id=assistant_id
                )
                first.process.send_signal(signal.SIGKILL)
            assert first.process.wait(10) == -signal.SIGKILL
            load.stop.set()

    engine = engine_from_url(state["TOLLHOUSE_DATABASE_URL"])
    try:
        with Session(engine) as session:
            before = session.get(Run, last.id)
        assert before is None or before.usage_recorded_at is None  # lost with the process

        with tollhouse_process(*upstream, env=state) as second:
            assert second.wait_for_log("recovery after the unclean stop done", timeout=60)
            truth = upstream_record(simulator)
            seen = ledger_record(engine)
            assert last.id in truth.runs
            assert seen.runs == truth.runs
            assert seen.calls == truth.calls
            assert seen.sessions == truth.sessions
            assert seen.owners == truth.owners
            marker = Path(state["TOLLHOUSE_SPOOL_PATH"]).with_suffix(".running")
            assert json.loads(marker.read_text())["recovering_since"] is None
            second.signal(signal.SIGTERM)
            assert second.process.wait(30) == 0
        assert not marker.exists()
    finally:
        engine.dispose()


@pytest.fixture
def gate() -> threading.Event:
    return threading.Event()


@pytest.fixture
def gated_simulator(gate: threading.Event) -> Iterator[ServerThread]:
    """A simulator whose streams hold after their first event until ``gate`` is set."""
    config = SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05, stream_gate=gate)
    with serve(create_app(config)) as sim:
        yield sim


def stream_to_the_end(
    url: str, tenant: str, assistant_id: str, thread_id: str, started: threading.Semaphore
) -> openai.types.beta.threads.Run:
    with (
        tenant_client([url], tenant, 0) as client,
        client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream,
    ):
        for event in stream:
            if event.event == "thread.run.created":
                started.release()
        return stream.get_final_run()


def test_sigterm_lets_open_streams_finish_records_their_usage_and_exits_0(
    gated_simulator: ServerThread, gate: threading.Event, state: dict[str, str]
) -> None:
    state["TOLLHOUSE_DRAIN_SECONDS"] = "60"
    with tollhouse_process("--upstream", gated_simulator.url + "/v1", env=state) as process:
        threads = setup_tenants(process.url, per_tenant=2)
        started = threading.Semaphore(0)
        with ThreadPoolExecutor(len(threads)) as pool:
            streams = [
                pool.submit(stream_to_the_end, process.url, *job, started) for job in threads
            ]
            for _ in threads:  # every stream is open, held by the upstream
                assert started.acquire(timeout=30)
            process.signal(signal.SIGTERM)
            assert process.wait_for_log("SIGTERM: draining")
            readiness = httpx.get(process.admin_url + "/readyz", timeout=5)
            assert readiness.status_code == 503
            gate.set()
            finals = [future.result(timeout=60) for future in streams]
        assert process.process.wait(60) == 0

    assert {run.status for run in finals} == {"completed"}
    truth = upstream_record(gated_simulator)
    engine = engine_from_url(state["TOLLHOUSE_DATABASE_URL"])
    try:
        seen = ledger_record(engine)
    finally:
        engine.dispose()
    assert seen.runs == truth.runs
    assert {run.id for run in finals} == set(truth.runs)
    assert seen.calls == truth.calls
    assert seen.sessions == truth.sessions
    assert not Path(state["TOLLHOUSE_SPOOL_PATH"]).with_suffix(".running").exists()


def ready(admin_url: str) -> bool | None:
    return httpx.get(admin_url + "/readyz", timeout=5).status_code == 200 or None


@pytest.mark.parametrize(
    ("now", "alive_at", "pending", "since"),
    [
        (10_000, None, None, 6_400),  # no heartbeat known: the hour before now
        (10_000, 9_950, None, 6_350),  # the hour before the process was last alive
        (90_000, 9_950, None, 6_350),  # down for a day: still the hour before the crash
        (10_000, 9_950, 2_000, 2_000),  # a recovery left unfinished reaches further back
        (10_000, 12_000, None, 6_400),  # a marker from the future (clock skew) counts as now
    ],
)
def test_recovery_starts_an_hour_before_the_process_was_last_alive(
    now: float, alive_at: float | None, pending: int | None, since: int
) -> None:
    assert recovery_since(now, alive_at, pending, 3600) == since


def test_without_an_upstream_key_an_unclean_stop_is_reported_and_remembered(
    simulator: ServerThread, tmp_path: Path
) -> None:
    spool = tmp_path / "ledger.spool"
    marker = spool.with_suffix(".running")
    marker.write_text('{"pid": 1, "recovering_since": null}')  # left by a killed process
    with running_proxy(simulator.url + "/v1", spool_path=spool) as proxy:
        wait_for(lambda: ready(proxy.admin.url), 30, "start-up")
        assert proxy.sample("tollhouse_reconciler_blocked") == 1
        assert proxy.sample("tollhouse_recovery_pending") == 1
    # a clean stop keeps the marker: a start with the key set recovers what was lost
    assert json.loads(marker.read_text())["recovering_since"] is not None
