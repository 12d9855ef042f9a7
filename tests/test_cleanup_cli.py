"""``tollhouse cleanup`` as a cron job runs it: a real process, the simulator upstream, a ledger.

And the same sweep scheduled inside ``tollhouse serve``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.conftest import running_proxy
from tests.servers import ServerThread
from tests.services import require
from tests.upstreams import Clock, Faults, faulty_simulator, own, threads
from tollhouse.api.classify import Kind
from tollhouse.cleanup.cleaner import Cleaner, CleanerSettings
from tollhouse.config.policy import load_policy, parse_policy
from tollhouse.ledger import lease
from tollhouse.ledger.engine import engine_from_url, migrate
from tollhouse.ledger.models import CleanupAudit, CleanupSweep, OwnedObject
from tollhouse.quota.admission import Quota
from tollhouse.quota.memory import MemoryBuckets
from tollhouse.telemetry.metrics import Metrics
from tollhouse.upstream.forward import Forwarder, UpstreamSettings
from tollhouse_simulator import Simulator, SimulatorConfig

DAY = 86_400
POLICY = """
identify: {mode: header}
tenants: {acme: {}, globex: {}}
organization:
  DELETE: {requests_per_unit: 12000}
  GET: {requests_per_unit: 12000}
cleanup:
  ttl: {threads: 30d, vector_stores: 7d, files: 30d}
"""


@pytest.fixture
def upstream() -> Iterator[tuple[ServerThread, Faults, Simulator]]:
    """The simulator, its clock 40 days behind: what it creates now is 40 days old."""
    config = SimulatorConfig(clock=lambda: time.time() - 40 * DAY, file_processing_seconds=0)
    with faulty_simulator(config) as running:
        yield running


@pytest.fixture
def ledger_url(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/ledger.db"
    engine = engine_from_url(url)
    migrate(engine)
    engine.dispose()
    return url


def environment(server: ServerThread, url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TOLLHOUSE_UPSTREAM_URL": server.url + "/v1",
        "TOLLHOUSE_UPSTREAM_API_KEY": "sk-test",
        "TOLLHOUSE_DATABASE_URL": url,
        "TOLLHOUSE_POLICY_FILE": str(policy_file),
    } | extra


def cleanup(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tollhouse.cli.cleanup", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
    )


def direct(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0)


def snapshot(engine: Engine) -> list[Any]:
    with Session(engine) as session:
        rows = session.exec(select(OwnedObject).order_by(OwnedObject.id)).all()  # type: ignore[arg-type]
        return [row.model_dump() for row in rows]


def test_dry_run_then_apply_per_tenant(
    upstream: tuple[ServerThread, Faults, Simulator], ledger_url: str, tmp_path: Path
) -> None:
    server, faults, sim = upstream
    engine = engine_from_url(ledger_url)
    with direct(server) as client:
        acme = threads(client, engine, "acme", 2)
        globex = threads(client, engine, "globex", 1)
        file = client.files.create(file=("a.txt", b"x" * 2048), purpose="assistants")
        store = client.vector_stores.create(file_ids=[file.id])
    own(engine, "globex", [(store.id, Kind.VECTOR_STORE, store.created_at)])
    env = environment(server, ledger_url, tmp_path)
    before, upstream_before = snapshot(engine), len(sim.threads) + len(sim.vector_stores)

    dry = cleanup(env)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0].startswith("Cleanup dry run at ")
    table = {tuple(line.split()[:3]) for line in lines[2:]}
    assert {
        ("acme", "thread", "2"),
        ("globex", "thread", "1"),
        ("globex", "vector_store", "1"),
    } <= table
    assert "2.0 KiB" in next(line for line in lines if "vector_store" in line)
    assert "would delete thread" in dry.stderr  # plain log lines, not a terminal
    assert snapshot(engine) == before
    assert len(sim.threads) + len(sim.vector_stores) == upstream_before
    with Session(engine) as session:
        assert session.exec(select(CleanupAudit)).all() == []

    only_acme = cleanup(env, "--apply", "--tenant", "acme")
    assert only_acme.returncode == 0, only_acme.stderr
    assert faults.applied == dict.fromkeys(acme, 1)
    everything = cleanup(env, "--apply")
    assert everything.returncode == 0, everything.stderr
    assert faults.applied == dict.fromkeys([*acme, *globex, store.id], 1)
    assert "deleted 2 of 2 stale objects" in everything.stdout
    engine.dispose()


def test_failures_exit_2_and_a_missing_key_exits_1(
    upstream: tuple[ServerThread, Faults, Simulator], ledger_url: str, tmp_path: Path
) -> None:
    server, faults, _ = upstream
    engine = engine_from_url(ledger_url)
    with direct(server) as client:
        stale = threads(client, engine, "acme", 2)
    engine.dispose()
    faults.fail("DELETE", stale[0], "500")
    env = environment(server, ledger_url, tmp_path)
    failed = cleanup(env, "--apply")
    assert failed.returncode == 2
    assert f"failed: thread {stale[0]} of acme" in failed.stdout
    no_key = cleanup({k: v for k, v in env.items() if k != "TOLLHOUSE_UPSTREAM_API_KEY"})
    assert no_key.returncode == 1
    assert "TOLLHOUSE_UPSTREAM_API_KEY is not set" in no_key.stderr


def test_a_killed_sweep_resumes_without_deleting_twice(
    upstream: tuple[ServerThread, Faults, Simulator], ledger_url: str, tmp_path: Path
) -> None:
    server, faults, sim = upstream
    engine = engine_from_url(ledger_url)
    with direct(server) as client:
        stale = threads(client, engine, "globex", 8)
    faults.hold_delete = 4  # carried out upstream; the process dies before it hears back
    env = environment(server, ledger_url, tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "tollhouse.cli.cleanup", "--apply"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert faults.held.wait(60)
    finally:
        process.kill()
        process.wait(30)
    faults.release()
    with Session(engine) as session:
        pending = session.exec(select(CleanupAudit).where(CleanupAudit.status == "pending")).all()
    assert len(pending) == 1
    restarted = cleanup(env, "--apply")  # at once: the dead process still holds the lease
    assert restarted.returncode == 0
    assert "lease held by" in restarted.stdout
    holder, expires = lease.current(engine, "cleanup") or ("", 0.0)
    assert holder
    assert expires > time.time()

    later = Clock(expires + 1)  # the lease has run out: the next scheduled sweep resumes
    rules = load_policy(Path(env["TOLLHOUSE_POLICY_FILE"]))
    forwarder = Forwarder(UpstreamSettings(url=server.url + "/v1"))

    async def resume() -> Any:
        await forwarder.open()
        try:
            cleaner = Cleaner(
                engine,
                forwarder,
                Quota(MemoryBuckets(later), rules),
                Metrics(CollectorRegistry()),
                CleanerSettings("sk-test"),
                str,
                clock=later,
                sleep=later.sleep,
            )
            return await cleaner.sweep(apply=True)
        finally:
            await forwarder.close()

    report = asyncio.run(resume())
    assert len(report.deleted) == 8 - 3
    assert faults.applied == dict.fromkeys(stale, 1)
    assert not {t["id"] for t in sim.threads} & set(stale)
    with Session(engine) as session:
        audit = session.exec(select(CleanupAudit)).all()
        sweeps = [s.status for s in session.exec(select(CleanupSweep)).all()]
    assert sorted(a.object_id for a in audit) == sorted(stale)
    assert {a.status for a in audit} == {"deleted"}
    assert sweeps == ["interrupted", "completed"]
    engine.dispose()


def test_serve_schedules_the_sweep_on_the_policy_crontab(
    upstream: tuple[ServerThread, Faults, Simulator],
) -> None:
    server, _, _ = upstream
    rules = parse_policy({"cleanup": {"schedule": "30 4 * * 1"}}, "test")
    with running_proxy(server.url + "/v1", policy=rules, upstream_api_key="sk-test") as proxy:
        with pytest.raises(openai.NotFoundError):  # an answer: tollhouse has started
            proxy.client().beta.threads.retrieve("thread_none")
        scheduler = proxy.tollhouse.scheduler
        assert scheduler is not None
        job = scheduler.get_job("cleanup")
        assert job is not None
        fields = {f.name: str(f) for f in job.trigger.fields}
        assert (fields["minute"], fields["hour"], fields["day_of_week"]) == ("30", "4", "1")

        async def reload(data: dict[str, Any]) -> None:
            proxy.tollhouse.apply_policy(parse_policy(data, "reloaded"))

        proxy.run(reload({"cleanup": {"enabled": False}}))
        assert scheduler.get_job("cleanup") is None
        proxy.run(reload({"cleanup": {"schedule": "0 2 * * *"}}))
        job = scheduler.get_job("cleanup")
        assert job is not None
        assert {f.name: str(f) for f in job.trigger.fields}["hour"] == "2"
        proxy.run(job.func())  # one scheduled sweep, now: nothing is stale yet
        assert proxy.sample("tollhouse_cleanup_last_success_timestamp_seconds") > 0
        exposition = generate_latest(proxy.registry)
    promtool = require("promtool")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30
    )
    problems = [
        line
        for line in checked.stdout.decode().splitlines() + checked.stderr.decode().splitlines()
        if "cleanup" in line or "stale" in line
    ]
    assert problems == []
    for name in (
        "tollhouse_cleanup_deleted_total",
        "tollhouse_cleanup_failures_total",
        "tollhouse_stale_resources",
        "tollhouse_cleanup_reclaimed_bytes_total",
        "tollhouse_cleanup_last_success_timestamp_seconds",
        "tollhouse_cleanup_duration_seconds_count",
    ):
        assert f"\n{name}".encode() in exposition
