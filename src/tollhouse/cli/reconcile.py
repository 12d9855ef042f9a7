"""``tollhouse reconcile``: a day's bill from the upstream against the ledger.

Exit status: 0 every measure within ``--tolerance`` of the bill, 3 some measure drifts
beyond it, 1 the check could not run (no admin key, the upstream refused it, the
ledger could not be read).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click
from prometheus_client import write_to_textfile
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tollhouse.cli.report import Moment, _check_sqlite_file, _shown
from tollhouse.compose import Core, core
from tollhouse.config.policy import Policy
from tollhouse.config.settings import Settings
from tollhouse.jobs.bill import DEFAULT_TOLERANCE, BillCheck
from tollhouse.ledger.engine import DatabaseUrlError
from tollhouse.metering.pricing import PricingError
from tollhouse.report.drift import BillError, Reconciliation
from tollhouse.report.drift_render import FORMATS, RENDERERS
from tollhouse.upstream.forward import UpstreamConfigError

DRIFTED = 3
NO_KEY = (
    "TOLLHOUSE_ADMIN_API_KEY is not set: reading the upstream's usage and costs needs an "
    "organisation admin key (sk-admin-...)"
)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


async def _reconcile(
    shared: Core, day: date, tolerance: float, project: str | None, now: datetime | None
) -> Reconciliation:
    key = shared.settings.admin_api_key
    assert key is not None
    options: dict[str, Any] = {"tolerance": tolerance, "project": project}
    if now is not None:
        options["clock"] = now.timestamp
    check = BillCheck(
        shared.engine, shared.forwarder, shared.pricing, key, shared.metrics, **options
    )
    await shared.forwarder.open()
    try:
        return await check.check(day)
    finally:
        await shared.close()


@click.command("reconcile")
@click.option("--day", required=True, help="The UTC day to check, YYYY-MM-DD.")
@click.option(
    "--format", "output_format", type=click.Choice(FORMATS), default="table", show_default=True
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=DEFAULT_TOLERANCE,
    show_default=True,
    help="Share of the bill a measure may differ by (exit 3 beyond it).",
)
@click.option("--project", help="Only this upstream project's usage (project_ids).")
@click.option("--database-url", help="The ledger [env TOLLHOUSE_DATABASE_URL].")
@click.option("--upstream", help="Upstream API base URL [env TOLLHOUSE_UPSTREAM_URL].")
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the drift metrics here (node exporter's textfile collector).",
)
@click.option("--now", type=Moment(), hidden=True, help="The check's clock.")
def reconcile_command(
    day: str,
    output_format: str,
    tolerance: float,
    project: str | None,
    database_url: str | None,
    upstream: str | None,
    textfile: Path | None,
    now: datetime | None,
) -> None:
    """A day's bill from the upstream (admin key) against what tollhouse metered."""
    checked_day = _day(day)
    overrides: dict[str, Any] = {"database_url": database_url, "upstream_url": upstream}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    if settings.admin_api_key is None:
        raise click.ClickException(NO_KEY)
    _check_sqlite_file(settings.database_url)
    try:
        # No tenants are needed: the bill and the ledger are compared as a whole.
        shared = core(settings, Policy(), max_connections=4)
    except (PricingError, UpstreamConfigError, DatabaseUrlError, ArgumentError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        found = asyncio.run(_reconcile(shared, checked_day, tolerance, project, now))
    except BillError as exc:
        raise click.ClickException(str(exc)) from None
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        shown = _shown(settings.database_url)
        raise click.ClickException(f"cannot read the ledger at {shown}: {reason}") from None
    click.echo(RENDERERS[output_format](found, tolerance), nl=False)
    if textfile is not None:
        write_to_textfile(str(textfile), shared.registry)
    if found.drifting(tolerance):
        sys.exit(DRIFTED)
