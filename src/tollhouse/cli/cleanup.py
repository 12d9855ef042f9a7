"""``tollhouse cleanup``: one sweep of the stale-resource cleaner, for a cron job.

A dry run unless ``--apply``: it prints what it would delete per tenant and kind,
with the vector-store storage and the daily cost that would go with it. On a
terminal it shows a progress bar; otherwise (cron) it writes plain log lines.
Exit status: 0 done (or another replica held the lease), 1 the sweep could not
run (configuration, database, lost lease), 2 it ran but some objects could not
be deleted (they are tried again by the next sweep).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Collection, Coroutine
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from tollhouse.cleanup.cleaner import SweepFailed, SweepReport
from tollhouse.cleanup.summary import render
from tollhouse.compose import cleaner, core
from tollhouse.config.policy import Policy, PolicyError, load_policy
from tollhouse.config.settings import Settings
from tollhouse.ledger.engine import migrate
from tollhouse.metering.pricing import PricingError, load_pricing
from tollhouse.telemetry import logs
from tollhouse.telemetry.metrics import CLEANUP_KINDS

log = logging.getLogger(__name__)
PROGRESS_EVERY = 100  # objects between progress log lines when not on a terminal


class _Progress:
    """A progress bar on a terminal, a log line every ``PROGRESS_EVERY`` objects otherwise."""

    def __init__(self, interactive: bool, stack: contextlib.ExitStack) -> None:
        self._interactive = interactive
        self._stack = stack
        self._bar: Any = None
        self._done = 0

    def __call__(self, done: int, total: int) -> None:
        if self._interactive:
            if self._bar is None:
                bar = click.progressbar(length=total, label="sweeping", file=sys.stderr)
                self._bar = self._stack.enter_context(bar)
            self._bar.update(done - self._done)
        elif done == 0 or done == total or done % PROGRESS_EVERY == 0:
            log.info("cleanup: %d of %d objects looked at", done, total)
        self._done = done


async def sweep(
    settings: Settings,
    policy: Policy,
    key: str,
    apply: bool,
    tenants: Collection[str] | None = None,
    kinds: Collection[str] | None = None,
    interactive: bool = False,
) -> SweepReport:
    """One sweep with its own upstream client, buckets and ledger connection."""
    shared = core(settings, policy, max_connections=8)
    try:
        if apply:  # a dry run writes nothing, not even the schema
            await asyncio.to_thread(migrate, shared.engine)
        await shared.forwarder.open()
        with contextlib.ExitStack() as stack:
            progress = _Progress(interactive, stack)
            return await cleaner(shared, key).sweep(apply, tenants, kinds, progress)
    finally:
        await shared.close()


async def _until_terminated(work: Coroutine[Any, Any, SweepReport]) -> SweepReport:
    """SIGTERM (a cron job's deadline) cancels the sweep: the lease is released at once."""
    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        result: SweepReport = await task
        return result
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


@click.command("cleanup")
@click.option("--apply", is_flag=True, help="Delete. Without it: a dry run that changes nothing.")
@click.option("--tenant", "tenants", multiple=True, help="Only this tenant's objects (repeatable).")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(CLEANUP_KINDS),
    help="Only objects of this kind (repeatable).",
)
@click.option("--database-url", help="The ledger [env TOLLHOUSE_DATABASE_URL].")
@click.option("--upstream", help="Upstream API base URL [env TOLLHOUSE_UPSTREAM_URL].")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Policy YAML with the cleanup section [env TOLLHOUSE_POLICY_FILE].",
)
def cleanup_command(
    apply: bool,
    tenants: tuple[str, ...],
    kinds: tuple[str, ...],
    database_url: str | None,
    upstream: str | None,
    policy_file: str | None,
) -> None:
    """Delete objects nobody has touched for the policy's time-to-live (dry run by default)."""
    overrides: dict[str, Any] = {
        "database_url": database_url,
        "upstream_url": upstream,
        "policy_file": policy_file,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    interactive = sys.stderr.isatty()
    logs.configure("warning" if interactive else settings.log_level)
    if settings.upstream_api_key is None:
        raise click.ClickException(
            "TOLLHOUSE_UPSTREAM_API_KEY is not set: the cleaner needs the upstream key"
        )
    key = settings.upstream_api_key.get_secret_value()
    try:
        policy = load_policy(settings.policy_file) if settings.policy_file else Policy()
        pricing = load_pricing(settings.pricing_file)
    except (PolicyError, PricingError) as exc:
        raise click.ClickException(str(exc)) from None
    if apply and not policy.cleanup.enabled:
        click.echo("cleanup is disabled in the policy (cleanup.enabled: false): nothing deleted")
        return
    work = sweep(settings, policy, key, apply, tenants or None, kinds or None, interactive)
    try:
        report = asyncio.run(_until_terminated(work))
    except (SweepFailed, SQLAlchemyError) as exc:
        raise click.ClickException(f"the sweep failed: {exc}") from None
    except asyncio.CancelledError:
        raise click.ClickException("the sweep was terminated; the next one resumes it") from None
    if report.status == "skipped":
        click.echo(f"another sweep is running (lease held by {report.held_by}): nothing done")
        return
    click.echo("\n".join(render(report, pricing)))
    if report.failures:
        sys.exit(2)


if __name__ == "__main__":
    cleanup_command()
