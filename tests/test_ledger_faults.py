"""The ledger when PostgreSQL stops or freezes under creates: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import col

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread
from tests.services import PostgresCluster, postgres_cluster
from tollhouse.config.policy import parse_policy
from tollhouse.ledger import store as ledger
from tollhouse.ledger.engine import engine_from_url, migrate
from tollhouse.ledger.models import RequestCount

HEADER = "X-Tollhouse-Tenant"
# Creates in a tight loop for seconds: far past the organisation's 300 POSTs a minute.
POLICY = parse_policy(
    {
        "identify": {"mode": "header"},
        "tenants": {"acme": {}},
        "organization": {"POST": {"unlimited": True}},
    },
    "t",
)
# Short database timeouts keep each test well under a minute (2 s is libpq's least).
TIMEOUTS = {
    "database_connect_timeout": 2,
    "database_statement_timeout": 2,
    "owner_write_timeout": 0.5,
}


def client(proxy: RunningProxy) -> openai.OpenAI:
    # a create that hung on the database would fail here instead of hanging the test
    return proxy.client(default_headers={HEADER: "acme"}, timeout=30)


def create(acme: openai.OpenAI, number: int) -> str:
    if number % 2:
        return acme.beta.threads.create().id
    return acme.beta.assistants.create(model="gpt-4o").id


def drained(proxy: RunningProxy) -> bool:
    """Flush until the spool is empty; False if it still is not after many flushes."""
    for _ in range(100):
        proxy.flush()
        if not proxy.tollhouse.writer.spooled():
            return True
    return False


def posts_counted(engine: Engine) -> int:
    with engine.connect() as connection:
        total = connection.execute(
            select(func.sum(col(RequestCount.count))).where(
                col(RequestCount.tenant) == "acme", col(RequestCount.request_class) == "POST"
            )
        ).scalar()
    return int(total or 0)


def assert_exact(proxy: RunningProxy, created: list[str]) -> None:
    """Every created object's owner is in the ledger, and each create counted once."""
    engine = proxy.tollhouse.engine
    owners = ledger.owners(engine, created)
    assert len(set(created)) == len(created)
    assert {object_id for object_id, owner in owners.items() if owner == "acme"} == set(created)
    assert posts_counted(engine) == len(created)
    assert proxy.sample("tollhouse_spool_batches") == 0
    assert proxy.sample("tollhouse_spool_bytes") == 0


def test_creates_survive_postgresql_stopping(simulator: ServerThread) -> None:
    with (
        postgres_cluster() as database,
        running_proxy(
            simulator.url + "/v1", policy=POLICY, database_url=database.url, **TIMEOUTS
        ) as proxy,
    ):
        acme = client(proxy)
        created = [create(acme, number) for number in range(50)]
        database.stop()
        # The database stays down for ten seconds of creates in a tight loop.
        until = time.monotonic() + 10
        while time.monotonic() < until and len(created) < 2_000:
            created.append(create(acme, len(created)))
        assert proxy.tollhouse.writer.spooled()
        assert proxy.sample("tollhouse_spool_batches") > 0
        assert proxy.sample("tollhouse_ledger_write_errors_total") > 0
        database.start()
        created.extend(create(acme, len(created)) for _ in range(50))
        assert drained(proxy)
        assert_exact(proxy, created)


def postgres_processes(cluster: PostgresCluster) -> list[int]:
    """The postmaster and every process it started."""
    postmaster = int(Path(cluster.data, "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # it ended meanwhile
        if int(fields[1]) == postmaster:
            children.append(int(stat.parent.name))
    return [postmaster, *children]


def stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"


@contextmanager
def frozen(cluster: PostgresCluster) -> Iterator[list[int]]:
    """PostgreSQL frozen (SIGSTOP), as on a hung host: sockets stay open, nothing answers."""
    processes = postgres_processes(cluster)
    for pid in processes:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield processes
    finally:
        for pid in reversed(processes):
            os.kill(pid, signal.SIGCONT)


def test_a_frozen_postgresql_fails_a_call_within_the_statement_timeout() -> None:
    with postgres_cluster() as database:
        engine = engine_from_url(database.url, connect_timeout=2, statement_timeout=2)
        try:
            migrate(engine)  # runs with no statement timeout
            assert ledger.owners(engine, ["thread_1"]) == {}  # a pooled connection to freeze
            # The live server cancels a statement that runs too long.
            with pytest.raises(OperationalError, match="statement timeout"):
                with engine.connect() as connection:
                    connection.execute(text("SELECT pg_sleep(30)"))
            with frozen(database) as processes:
                # The pooled connection, then a new one: each call fails, none hangs.
                for _ in range(2):
                    with pytest.raises(SQLAlchemyError):
                        ledger.owners(engine, ["thread_1"])
                assert all(stopped(pid) for pid in processes)
            assert ledger.owners(engine, ["thread_1"]) == {}
        finally:
            engine.dispose()


def lookup_status(acme: openai.OpenAI, number: int) -> tuple[int, float]:
    began = time.monotonic()
    try:
        acme.beta.threads.retrieve(f"thread_nowhere{number:016d}")
    except openai.APIStatusError as exc:
        return exc.status_code, time.monotonic() - began
    return 200, time.monotonic() - began


def test_a_frozen_postgresql_holds_up_no_create(simulator: ServerThread) -> None:
    upstream = openai.OpenAI(base_url=simulator.url + "/v1", api_key="sk-test", max_retries=0)
    elsewhere = upstream.beta.threads.create()  # not created through tollhouse: not in memory
    upstream.close()
    with (
        postgres_cluster() as database,
        running_proxy(
            simulator.url + "/v1", policy=POLICY, database_url=database.url, **TIMEOUTS
        ) as proxy,
    ):
        acme = client(proxy)
        created = [create(acme, number) for number in range(20)]
        assert not proxy.tollhouse.writer.spooled()
        with frozen(database) as processes:
            # Creates in a tight loop for eight seconds of the freeze: each one answers.
            until = time.monotonic() + 8
            while time.monotonic() < until:
                created.append(create(acme, len(created)))
            with pytest.raises(openai.APIStatusError) as refused:
                acme.beta.threads.retrieve(elsewhere.id)
            # Lookups at once, more than there are threads for them: none queues past
            # its bound behind calls hung on the frozen database.
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lookup_status, [acme] * 16, range(16)))
            # All of that was answered while the database was still frozen.
            assert all(stopped(pid) for pid in processes)
        assert refused.value.status_code == 503
        assert [status for status, _ in answers] == [503] * 16
        # The bound a lookup promises: the statement timeout (2 s here) and a second
        # for the watchdog; queued behind hung calls they took 7 s and more.
        assert max(took for _, took in answers) < 2 + 1 + 1.5
        assert refused.value.response.json()["error"] == {
            "message": refused.value.response.json()["error"]["message"],
            "type": "server_error",
            "param": None,
            "code": "ledger_unavailable",
        }
        assert "ledger database is unreachable" in refused.value.response.json()["error"]["message"]
        assert proxy.tollhouse.writer.spooled()
        assert drained(proxy)
        assert_exact(proxy, created)
