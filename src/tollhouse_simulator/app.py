"""Wires the simulator together: state, the gate, the routes and file storage."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from tollhouse_simulator.azure import handle_unrouted
from tollhouse_simulator.config import SimulatorConfig
from tollhouse_simulator.errors import SimulatorError, handle_simulator_error
from tollhouse_simulator.gate import Gate
from tollhouse_simulator.routes import (
    assistants,
    chat,
    containers,
    conversations,
    files,
    organization,
    responses,
    responses_ws,
    runs,
    threads,
    uploads,
    vector_store_files,
    vector_stores,
)
from tollhouse_simulator.state import Simulator


def routes() -> list[BaseRoute]:
    # Runs first: POST /v1/threads/runs must not be taken for POST /v1/threads/{thread_id}.
    return [
        *runs.routes(),
        *threads.routes(),
        *assistants.routes(),
        *vector_store_files.routes(),
        *vector_stores.routes(),
        *files.routes(),
        *uploads.routes(),
        *responses.routes(),
        *responses_ws.routes(),
        *conversations.routes(),
        *containers.routes(),
        *chat.routes(),
        *organization.routes(),
    ]


async def handle_crash(request: Request, exc: Exception) -> Response:
    return SimulatorError(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    ).response()


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """A Starlette app serving the simulated API; its state is ``app.state.simulator``."""
    settings = config or SimulatorConfig()
    simulator = Simulator(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.storage_dir is not None:
            settings.storage_dir.mkdir(parents=True, exist_ok=True)
            simulator.storage_dir = settings.storage_dir
            yield
            return
        with tempfile.TemporaryDirectory(prefix="tollhouse-simulator-") as directory:
            simulator.storage_dir = Path(directory)
            try:
                yield
            finally:
                simulator.storage_dir = None

    app = Starlette(
        routes=routes(),
        middleware=[Middleware(Gate, simulator=simulator)],
        exception_handlers={
            SimulatorError: handle_simulator_error,
            404: handle_unrouted,
            405: handle_unrouted,
            Exception: handle_crash,
        },
        lifespan=lifespan,
    )
    app.state.simulator = simulator
    return app
