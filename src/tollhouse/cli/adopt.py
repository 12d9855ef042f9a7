"""``tollhouse adopt``: the command, its wiring and its summary table."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from tollhouse.cleanup.adopt import (
    KINDS,
    METADATA_KEY,
    AdoptClient,
    Adopter,
    AdoptError,
    Report,
    Rules,
    ThreadLine,
    parse_threads,
)
from tollhouse.compose import core
from tollhouse.config.policy import Policy, PolicyError, load_policy
from tollhouse.config.settings import Settings
from tollhouse.ledger.engine import migrate
from tollhouse.telemetry import logs
from tollhouse.upstream.forward import UpstreamError

HEAD = ("KIND", "LISTED", "ATTRIBUTED", "ALREADY OWNED", "UNOWNED", "UNKNOWN TENANT", "NOT FOUND")


def _cells(values: Sequence[object]) -> str:
    first, *rest = (str(value) for value in values)
    return f"{first:<13}" + "".join(
        f" {cell:>{len(h)}}" for cell, h in zip(rest, HEAD[1:], strict=True)
    )


def render(report: Report, checkpoint: Path) -> list[str]:
    """The run's summary: per kind, then what each tenant was given, then what needs a look."""
    when = datetime.fromtimestamp(report.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if report.apply:
        head = f"Adopt at {when}: owners recorded"
        head += f" (continued from {checkpoint})." if report.resumed else "."
    else:
        head = f"Adopt dry run at {when}: nothing written (--apply records the owners)."
    lines = [head, _cells(HEAD)]
    totals = [0] * 6
    for kind in KINDS:
        tally = report.tallies[kind]
        row = [
            tally.listed,
            sum(tally.attributed.values()),
            tally.owned,
            tally.unowned,
            sum(tally.unknown.values()),
            tally.missing,
        ]
        totals = [t + r for t, r in zip(totals, row, strict=True)]
        lines.append(_cells([kind, *row]))
    lines.append(_cells(["total", *totals]))
    given = sorted(
        (tenant, kind, count)
        for kind in KINDS
        for tenant, count in report.tallies[kind].attributed.items()
    )
    if given:
        verb = "ATTRIBUTED" if report.apply else "WOULD ATTRIBUTE"
        lines += ["", f"{'TENANT':<24} {'KIND':<13} {verb:>15}"]
        lines += [f"{tenant:<24} {kind:<13} {count:>15}" for tenant, kind, count in given]
    unknown: dict[str, int] = {}
    for kind in KINDS:
        for name, count in report.tallies[kind].unknown.items():
            unknown[name] = unknown.get(name, 0) + count
    if unknown:
        names = ", ".join(f"{name!r} ({count})" for name, count in sorted(unknown.items()))
        lines.append(f"unknown tenants, skipped: {names}")
    if totals[3]:
        lines.append(
            f"left unowned: {totals[3]} objects name no tenant (their ids are in the log); "
            "--tenant NAME gives them to NAME"
        )
    return lines


async def adopt(
    settings: Settings,
    policy: Policy,
    key: str,
    rules: Rules,
    threads: Sequence[ThreadLine],
    apply: bool,
    checkpoint: Path,
    restart: bool,
    get_share: float,
) -> Report:
    """One run with its own upstream client, buckets and ledger connection."""
    shared = core(settings, policy, max_connections=8)
    client = AdoptClient(shared.forwarder, shared.quota, key, get_share)
    try:
        if apply:  # a dry run writes nothing, not even the schema
            await asyncio.to_thread(migrate, shared.engine)
        await shared.forwarder.open()
        return await Adopter(shared.engine, client, rules).run(threads, apply, checkpoint, restart)
    finally:
        await shared.close()


@click.command("adopt")
@click.option("--apply", is_flag=True, help="Record the owners. Without it: a dry run.")
@click.option(
    "--metadata-key",
    default=METADATA_KEY,
    show_default=True,
    help="The metadata key whose value names an object's tenant.",
)
@click.option(
    "--threads",
    "threads_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Thread ids, one a line, each optionally followed by its tenant ('#' comments).",
)
@click.option(
    "--tenant",
    help="Owner of objects that name no tenant themselves (the only way to attribute files).",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("tollhouse-adopt.json"),
    show_default=True,
    help="Where --apply keeps its progress; a rerun continues from it.",
)
@click.option("--restart", is_flag=True, help="Ignore the checkpoint and start over.")
@click.option(
    "--get-share",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.25,
    show_default=True,
    help="Share of the organisation's GET limit adopt may use.",
)
@click.option("--database-url", help="The ledger [env TOLLHOUSE_DATABASE_URL].")
@click.option("--upstream", help="Upstream API base URL [env TOLLHOUSE_UPSTREAM_URL].")
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Policy YAML: its tenants are the names objects may be given [env TOLLHOUSE_POLICY_FILE].",
)
def adopt_command(
    apply: bool,
    metadata_key: str,
    threads_file: Path | None,
    tenant: str | None,
    checkpoint: Path,
    restart: bool,
    get_share: float,
    database_url: str | None,
    upstream: str | None,
    policy_file: str | None,
) -> None:
    """Attribute objects that existed upstream before tollhouse to tenants (dry run by default).

    Exit status: 0 done; 1 it could not start, or it stopped (an upstream error, an
    unreachable upstream or ledger), keeping the checkpoint: run it again to continue.
    """
    overrides: dict[str, Any] = {
        "database_url": database_url,
        "upstream_url": upstream,
        "policy_file": policy_file,
    }
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    logs.configure(settings.log_level)
    if settings.upstream_api_key is None:
        raise click.ClickException(
            "TOLLHOUSE_UPSTREAM_API_KEY is not set: adopt lists the upstream with its key"
        )
    key = settings.upstream_api_key.get_secret_value()
    try:
        policy = load_policy(settings.policy_file) if settings.policy_file else Policy()
        threads = parse_threads(threads_file.read_text(), str(threads_file)) if threads_file else []
    except (PolicyError, AdoptError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    # A policy that lists tenants accepts those and its default tenant; one that lists
    # none accepts any usable name.
    listed = set(policy.tenants)
    known = frozenset(listed | {policy.identify.default_tenant} if listed else ())
    rules = Rules(metadata_key, tenant, known, policy.cleanup.keep_marker)
    if tenant is not None and not rules.known(tenant):
        where = f"a tenant of {settings.policy_file}" if rules.tenants else "a usable tenant name"
        raise click.ClickException(f"--tenant {tenant!r} is not {where}")
    work = adopt(settings, policy, key, rules, threads, apply, checkpoint, restart, get_share)
    try:
        report = asyncio.run(work)
    except AdoptError as exc:
        raise click.ClickException(str(exc)) from None
    except (UpstreamError, SQLAlchemyError, OSError) as exc:  # OSError: the checkpoint
        kept = f"; {checkpoint} keeps the progress: run again to continue" if apply else ""
        raise click.ClickException(f"adopt stopped: {exc}{kept}") from None
    click.echo("\n".join(render(report, checkpoint)))
    if not apply and checkpoint.exists():
        click.echo(f"{checkpoint} holds an unfinished run: --apply continues it")


if __name__ == "__main__":
    adopt_command()
