"""The ``tollhouse`` command: wiring only."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import click

from tollhouse import __version__, logs
from tollhouse.settings import Settings


def run_async(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        asyncio.run(main)
    else:
        uvloop.run(main)


@click.group()
@click.version_option(__version__, prog_name="tollhouse")
def main() -> None:
    """tollhouse: per-tenant quotas, cost and observability for OpenAI-style agent APIs."""


@main.command()
@click.option("--upstream", help="Upstream API base URL [env TOLLHOUSE_UPSTREAM_URL].")
@click.option("--host", help="Proxy address [env TOLLHOUSE_HOST, default 127.0.0.1].")
@click.option("--port", type=int, help="Proxy port [env TOLLHOUSE_PORT, default 8080].")
@click.option("--admin-port", type=int, help="Admin port [env TOLLHOUSE_ADMIN_PORT, 9464].")
def serve(upstream: str | None, host: str | None, port: int | None, admin_port: int | None) -> None:
    """Run the proxy, with /metrics, /healthz and /readyz on the admin port."""
    from tollhouse.app import Tollhouse
    from tollhouse.app import serve as serve_app

    overrides: dict[str, Any] = {
        "upstream_url": upstream,
        "host": host,
        "port": port,
        "admin_port": admin_port,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    logs.configure(settings.log_level)
    run_async(serve_app(Tollhouse(settings)))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--queued-seconds", type=float, default=0.05, show_default=True)
@click.option("--in-progress-seconds", type=float, default=0.2, show_default=True)
def simulate(host: str, port: int, queued_seconds: float, in_progress_seconds: float) -> None:
    """Run the Assistants API simulator (an upstream for demos, tests and benchmarks)."""
    import uvicorn

    from tollhouse.simulator import SimulatorConfig, create_app

    logs.configure("info")
    config = SimulatorConfig(queued_seconds=queued_seconds, in_progress_seconds=in_progress_seconds)
    uvicorn.run(create_app(config), host=host, port=port, log_config=None, access_log=False)
