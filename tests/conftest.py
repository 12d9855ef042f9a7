from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry

from tests.servers import ServerThread, serve
from tollhouse.app import Tollhouse
from tollhouse.policy import Policy
from tollhouse.settings import Settings


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

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()


ProxyFactory = Callable[..., AbstractContextManager[RunningProxy]]


@contextmanager
def running_proxy(
    upstream_url: str, policy: Policy | None = None, **settings: Any
) -> Iterator[RunningProxy]:
    tollhouse = Tollhouse(Settings(upstream_url=upstream_url, **settings), policy=policy)
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
    from tollhouse.simulator import SimulatorConfig, create_app

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
