"""``tollhouse report``: its options; the report itself is built and rendered in ``report``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from tollhouse import __version__
from tollhouse.compose import ledger_engine
from tollhouse.config.settings import Settings
from tollhouse.ledger.engine import DatabaseUrlError
from tollhouse.metering.pricing import PricingError, load_pricing
from tollhouse.report.build import GROUP_BYS, GroupBy, build_report
from tollhouse.report.render import FORMATS, RENDERERS, month_start, parse_moment, utc_text


class Moment(click.ParamType):  # type: ignore[type-arg]  # generic in newer click only
    name = "date"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            return parse_moment(str(value))
        except ValueError:
            self.fail(
                f"{value!r} is not an ISO date or datetime "
                "(e.g. 2025-01-31 or 2025-01-31T12:00:00Z)",
                param,
                ctx,
            )


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return repr(url)


def _check_sqlite_file(url: str) -> None:
    """Refuse a SQLite ledger that does not exist, rather than create an empty one."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return  # engine_from_url says what is wrong with it
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database).expanduser()
        if not path.exists():
            raise click.ClickException(
                f"no ledger at {path}: the file does not exist "
                "(set --database-url or TOLLHOUSE_DATABASE_URL)"
            )


@click.command("report")
@click.option(
    "--since",
    type=Moment(),
    help="Start, included: ISO date or datetime, UTC unless zoned [default: 1st of this month].",
)
@click.option("--until", type=Moment(), help="End, excluded [default: now].")
@click.option("--tenant", help="Only this tenant.")
@click.option(
    "--group-by",
    type=click.Choice(GROUP_BYS),
    help="Split each tenant by model, assistant, day or API.",
)
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
@click.option("--now", type=Moment(), hidden=True, help="The report's clock.")
def report_command(
    since: datetime | None,
    until: datetime | None,
    tenant: str | None,
    group_by: GroupBy | None,
    output_format: str,
    database_url: str | None,
    pricing_file: Path | None,
    now: datetime | None,
) -> None:
    """Usage and cost per tenant for a period, as a table, CSV or JSON."""
    now = now or datetime.now(UTC).replace(microsecond=0)
    since, until = since or month_start(now), until or now
    if since >= until:
        raise click.BadParameter(
            f"{utc_text(since)} is not before --until ({utc_text(until)})", param_hint="'--since'"
        )
    overrides: dict[str, Any] = {"database_url": database_url, "pricing_file": pricing_file}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    try:
        table = load_pricing(settings.pricing_file)
    except PricingError as exc:
        raise click.ClickException(str(exc)) from None
    source = str(settings.pricing_file or f"shipped with tollhouse {__version__}")
    _check_sqlite_file(settings.database_url)
    try:
        engine = ledger_engine(settings)
    except (DatabaseUrlError, ArgumentError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        report = build_report(
            engine,
            table,
            since,
            until,
            now,
            tenant=tenant,
            group_by=group_by,
            pricing_source=source,
        )
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        shown = _shown(settings.database_url)
        raise click.ClickException(f"cannot read the ledger at {shown}: {reason}") from None
    finally:
        engine.dispose()
    click.echo(RENDERERS[output_format](report), nl=False)
