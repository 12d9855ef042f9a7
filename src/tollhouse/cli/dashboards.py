"""``tollhouse dashboards``: regenerate the Grafana JSON from the grafanalib sources."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tollhouse.telemetry.dashboards import DashboardSourceError, build, sources


@click.group("dashboards")
def dashboards_command() -> None:
    """Grafana dashboards, built from dashboards/*.dashboard.py."""


@dashboards_command.command("build")
@click.argument(
    "directory",
    default="dashboards",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
@click.option("--check", is_flag=True, help="Write nothing; exit 1 if any JSON is out of date.")
def build_command(directory: Path, check: bool) -> None:
    """Render every DIRECTORY/*.dashboard.py to the .json file beside it."""
    if not sources(directory):
        raise click.ClickException(f"{directory}: no *.dashboard.py sources")
    try:
        stale = build(directory, check=check)
    except DashboardSourceError as exc:
        raise click.ClickException(str(exc)) from None
    for path in stale:
        click.echo(f"{path}: {'out of date' if check else 'written'}")
    if check and stale:
        click.echo("run `tollhouse dashboards build` and commit the result", err=True)
        sys.exit(1)
    if not stale:
        click.echo(f"{directory}: {len(sources(directory))} dashboards up to date")


if __name__ == "__main__":
    dashboards_command()
