from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from prometheus_client import CollectorRegistry

from tests.servers import ServerThread, serve
from tollhouse.app import Tollhouse
from tollhouse.settings import Settings
from tollhouse.simulator import SimulatorConfig, create_app


@dataclass
class RunningProxy:
    tollhouse: Tollhouse
    server: ServerThread
    admin: ServerThread

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
        return openai.OpenAI(base_url=self.url + "/v1", **options)


ProxyFactory = Callable[..., AbstractContextManager[RunningProxy]]


@contextmanager
def running_proxy(upstream_url: str, **settings: Any) -> Iterator[RunningProxy]:
    tollhouse = Tollhouse(Settings(upstream_url=upstream_url, **settings))
    with serve(tollhouse) as server, serve(tollhouse.admin) as admin:
        yield RunningProxy(tollhouse, server, admin)


@pytest.fixture
def make_proxy() -> ProxyFactory:
    return running_proxy


@pytest.fixture
def simulator() -> Iterator[ServerThread]:
    """The Assistants simulator on a loopback port, with a fast run schedule."""
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
