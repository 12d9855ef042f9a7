from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlmodel import SQLModel

from tests.servers import ServerThread, serve
from tests.services import postgres_server, redis_server
from tollhouse.app import Tollhouse
from tollhouse.config.policy import Policy
from tollhouse.config.settings import Settings
from tollhouse.ledger.engine import engine_from_url, migrate

T = TypeVar("T")


@dataclass
class RunningProxy:
    tollhouse: Tollhouse
    server: ServerThread
    admin: ServerThread
    clients: list[openai.OpenAI] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def registry(self) -> CollectorRegistry:
        return self.tollhouse.registry

    def sample(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value

    def client(self, **options: Any) -> openai.OpenAI:
        options.setdefault("api_key", "sk-test")
        options.setdefault("max_retries", 0)
        client = openai.OpenAI(base_url=self.url + "/v1", **options)
        self.clients.append(client)
        return client

    def flush(self) -> None:
        """Wait until the proxy has finished every request (a client that read a stream to its
        end may get there first) and the ledger writer has written what they handed it."""
        idle = threading.Event()
        for _ in range(1000):  # the proxy's thread ends the requests; watch for it, bounded
            if self.sample("tollhouse_in_flight_requests") == 0:
                break
            idle.wait(0.005)
        self.run(self.tollhouse.ownership.settled())
        self.run(self.tollhouse.writer.flush())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's event loop (the proxy's own objects live there)."""
        assert self.server.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.server.loop).result(60)

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()


ProxyFactory = Callable[..., AbstractContextManager[RunningProxy]]


@contextmanager
def running_proxy(
    upstream_url: str,
    policy: Policy | None = None,
    exporter: SpanExporter | None = None,
    clock: Callable[[], float] = time.time,
    **settings: Any,
) -> Iterator[RunningProxy]:
    with tempfile.TemporaryDirectory() as state:
        settings.setdefault("database_url", f"sqlite:///{state}/ledger.db")
        settings.setdefault("spool_path", Path(state) / "ledger.spool")
        # Tests that hammer a limit on purpose count refusals; holding early retries is
        # tested on its own (tests/test_tarpit.py) and on in `tollhouse serve` by default.
        settings.setdefault("early_retry_hold", 0.0)
        tollhouse = Tollhouse(
            Settings(upstream_url=upstream_url, **settings),
            policy=policy,
            exporter=exporter,
            clock=clock,
        )
        with serve(tollhouse) as server, serve(tollhouse.admin) as admin:
            running = RunningProxy(tollhouse, server, admin)
            try:
                yield running
            finally:
                running.close_clients()


@pytest.fixture
def make_proxy() -> ProxyFactory:
    return running_proxy


@pytest.fixture
def simulator() -> Iterator[ServerThread]:
    """The Assistants simulator on a loopback port, with a fast run schedule."""
    from tollhouse_simulator import SimulatorConfig, create_app

    app = create_app(SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05))
    with serve(app) as server:
        yield server


@pytest.fixture
def proxy(simulator: ServerThread) -> Iterator[RunningProxy]:
    with running_proxy(simulator.url + "/v1") as running:
        yield running


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One real PostgreSQL server for the session; tests clean up after themselves."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A real Redis server on loopback, one per test module."""
    with redis_server() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated ledger, once on SQLite and once on PostgreSQL: the same test bodies on both."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/ledger.db"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = engine_from_url(url)
    migrate(engine)
    yield engine
    with engine.begin() as connection:  # a clean slate for the next test on the shared server
        for table in reversed(SQLModel.metadata.sorted_tables):
            if table.name != "alembic_version":
                connection.execute(table.delete())
    engine.dispose()
