"""``tollhouse migration``: its options; the report is built in ``report.migration``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tollhouse.cli.report import Moment, _check_sqlite_file, _shown
from tollhouse.compose import ledger_engine
from tollhouse.config.policy import Policy, PolicyError, load_policy
from tollhouse.config.settings import Settings
from tollhouse.ledger.engine import DatabaseUrlError
from tollhouse.metering.pricing import PricingError, load_pricing
from tollhouse.report.flows import build_flows
from tollhouse.report.flows_render import RENDERERS as FLOW_RENDERERS
from tollhouse.report.migration import build_migration, idle_before
from tollhouse.report.migration_query import fetch_migration_usage
from tollhouse.report.migration_render import RENDERERS
from tollhouse.report.render import FORMATS, month_start, utc_text


@click.command("migration")
@click.option(
    "--since",
    type=Moment(),
    help="Start, included: ISO date or datetime, UTC unless zoned [default: 1st of this month].",
)
@click.option("--until", type=Moment(), help="End, excluded [default: now].")
@click.option("--tenant", help="Only this tenant.")
@click.option(
    "--format", "output_format", type=click.Choice(FORMATS), default="table", show_default=True
)
@click.option("--database-url", help="The ledger [env TOLLHOUSE_DATABASE_URL].")
@click.option(
    "--pricing",
    "pricing_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pricing table YAML [env TOLLHOUSE_PRICING_FILE; default: the shipped table].",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Policy YAML, for the cleanup TTLs [env TOLLHOUSE_POLICY_FILE].",
)
@click.option(
    "--flows",
    "by_flow",
    is_flag=True,
    help="Instead: flow-tagged requests per flow and API, side by side.",
)
@click.option("--now", type=Moment(), hidden=True, help="The report's clock.")
def migration_command(
    since: datetime | None,
    until: datetime | None,
    tenant: str | None,
    output_format: str,
    database_url: str | None,
    pricing_file: Path | None,
    policy_file: str | None,
    by_flow: bool,
    now: datetime | None,
) -> None:
    """What each tenant uses of the Assistants API and what it would cost on Responses.

    With --flows: requests tagged with a flow (X-Tollhouse-Flow header, or
    metadata.tollhouse_flow on a create) per flow and API, side by side.
    """
    now = now or datetime.now(UTC).replace(microsecond=0)
    since, until = since or month_start(now), until or now
    if since >= until:
        raise click.BadParameter(
            f"{utc_text(since)} is not before --until ({utc_text(until)})", param_hint="'--since'"
        )
    overrides: dict[str, Any] = {
        "database_url": database_url,
        "pricing_file": pricing_file,
        "policy_file": policy_file,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        table = load_pricing(settings.pricing_file)
        policy = load_policy(settings.policy_file) if settings.policy_file else Policy()
    except (PricingError, PolicyError) as exc:
        raise click.ClickException(str(exc)) from None
    _check_sqlite_file(settings.database_url)
    try:
        engine = ledger_engine(settings)
    except (DatabaseUrlError, ArgumentError) as exc:
        raise click.ClickException(str(exc)) from None
    start, end = int(since.timestamp()), int(until.timestamp())
    try:
        if by_flow:
            rows = build_flows(engine, table, start, end, tenant)
            click.echo(FLOW_RENDERERS[output_format](rows), nl=False)
            return
        usage = fetch_migration_usage(engine, start, end, tenant, idle_before(policy.cleanup, end))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        shown = _shown(settings.database_url)
        raise click.ClickException(f"cannot read the ledger at {shown}: {reason}") from None
    finally:
        engine.dispose()
    report = build_migration(usage, table, policy.cleanup, since, until, now)
    click.echo(RENDERERS[output_format](report), nl=False)
