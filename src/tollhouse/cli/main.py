"""The ``tollhouse`` command: wiring only."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click

from tollhouse import __version__
from tollhouse.cli.adopt import adopt_command
from tollhouse.cli.cleanup import cleanup_command
from tollhouse.cli.dashboards import dashboards_command
from tollhouse.cli.migration import migration_command
from tollhouse.cli.reconcile import reconcile_command
from tollhouse.cli.report import report_command
from tollhouse.config.policy import PolicyError, load_policy
from tollhouse.config.settings import Settings
from tollhouse.telemetry import logs


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop; Ctrl-C after a graceful shutdown ends the command quietly."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is not built for every platform
        runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(main)
    except KeyboardInterrupt:
        click.echo("stopped", err=True)


@click.group()
@click.version_option(__version__, prog_name="tollhouse")
def main() -> None:
    """tollhouse: per-tenant quotas, cost and observability for OpenAI-style agent APIs."""


@main.command()
@click.option("--upstream", help="Upstream API base URL [env TOLLHOUSE_UPSTREAM_URL].")
@click.option("--host", help="Proxy address [env TOLLHOUSE_HOST, default 127.0.0.1].")
@click.option("--port", type=int, help="Proxy port [env TOLLHOUSE_PORT, default 8080].")
@click.option("--admin-port", type=int, help="Admin port [env TOLLHOUSE_ADMIN_PORT, 9464].")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Policy YAML [env TOLLHOUSE_POLICY_FILE]; reloaded on SIGHUP.",
)
def serve(
    upstream: str | None,
    host: str | None,
    port: int | None,
    admin_port: int | None,
    policy_file: str | None,
) -> None:
    """Run the proxy, with /metrics, /healthz and /readyz on the admin port.

    SIGTERM drains: no new connections, in-flight requests and streams get
    TOLLHOUSE_DRAIN_SECONDS to finish, usage is flushed to the ledger, exit status 0.
    A start after an unclean stop meters again what it may have lost. SIGHUP reloads
    the policy.
    """
    from tollhouse.app import Tollhouse
    from tollhouse.app import serve as serve_app
    from tollhouse.compose import StartupRefused
    from tollhouse.upstream.forward import UpstreamConfigError

    overrides: dict[str, Any] = {
        "upstream_url": upstream,
        "host": host,
        "port": port,
        "admin_port": admin_port,
        "policy_file": policy_file,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    logs.configure(settings.log_level)
    try:
        tollhouse = Tollhouse(settings)
    except (PolicyError, StartupRefused, UpstreamConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    run_async(serve_app(tollhouse))


@main.command()
@click.option("--port", type=int, default=8080, show_default=True, help="Proxy port (0: any).")
@click.option("--admin-port", type=int, default=9464, show_default=True, help="Admin port.")
@click.option("--duration", type=float, help="Stop after this many seconds (default: Ctrl-C).")
def demo(port: int, admin_port: int, duration: float | None) -> None:
    """Start a simulated upstream, tollhouse in front of it, and sample tenant traffic."""
    from tollhouse.demo import run_demo

    logs.configure("warning")
    run_async(run_demo(port=port, admin_port=admin_port, duration=duration))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--queued-seconds", type=float, default=0.05, show_default=True)
@click.option("--in-progress-seconds", type=float, default=0.2, show_default=True)
def simulate(host: str, port: int, queued_seconds: float, in_progress_seconds: float) -> None:
    """Run the Assistants API simulator (an upstream for demos, tests and benchmarks)."""
    import uvicorn

    from tollhouse_simulator import SimulatorConfig, create_app

    logs.configure("info")
    config = SimulatorConfig(queued_seconds=queued_seconds, in_progress_seconds=in_progress_seconds)
    uvicorn.run(create_app(config), host=host, port=port, log_config=None, access_log=False)


main.add_command(report_command)
main.add_command(cleanup_command)
main.add_command(dashboards_command)
main.add_command(adopt_command)
main.add_command(reconcile_command)
main.add_command(migration_command)


@main.command("check-policy")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def check_policy(path: Path) -> None:
    """Validate a policy file; exit 1 with every problem named by file and field."""
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    click.echo(f"{path}: OK: {len(policy.tenants)} tenants, identify mode '{policy.identify.mode}'")


@main.group()
def keys() -> None:
    """tollhouse-issued API keys for tenants."""


@keys.command("create")
@click.option("--tenant", required=True, help="The tenant the key belongs to.")
def keys_create(tenant: str) -> None:
    """Print a new key once, and the hash to put under the tenant in the policy file."""
    from tollhouse.proxy.tenants import hash_key, new_key

    key = new_key()
    click.echo(f"key:  {key}")
    click.echo("      (shown once; give it to the tenant's app as its API key)")
    click.echo("add to the policy file:")
    click.echo(f"  tenants:\n    {tenant}:\n      keys:\n        - {hash_key(key)}")


if __name__ == "__main__":
    main()
