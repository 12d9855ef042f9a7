"""Grafana dashboards: the panel vocabulary of ``dashboards/*.dashboard.py``, and their build.

A source file defines a grafanalib ``dashboard``; :func:`build` renders each one to the
JSON file beside it (``cost.dashboard.py`` → ``cost.json``), byte for byte the same for
the same source, so the committed JSON can be checked against its source.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attr
from grafanalib import core as g

SOURCE_SUFFIX = ".dashboard.py"
SCHEMA_VERSION = 39  # Grafana 10.4 / 11: loaded without migrations
GRID_WIDTH = 24

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
TENANT = 'tenant=~"$tenant"'
"""Matcher for the tenant variable (``.*`` when "All" is selected)."""
ADMITTED = 'outcome=~"forwarded|shadow_throttled|upstream_error"'
"""Requests that went upstream, so count against the organisation's limits."""
ORG = 'tenant="_org"'
"""The organisation-wide buckets in ``tollhouse_ratelimit_*``."""
# Each API's operations (``tollhouse_requests_total``'s ``operation`` label), as anchored
# label_replace regexes; files, uploads and vector stores serve the Assistants and the
# Responses API alike. Azure's paths map to the same operation names.
APIS = (
    ("assistants", "(assistants|threads)[.].+"),
    ("responses", "(responses|conversations|containers)[.].+"),
    ("chat.completions", "chat[.]completions[.].+"),
    ("files and vector stores", "(files|uploads|vector_stores)[.].+"),
    ("unknown", "unknown"),
)
MODEL_CALLS = 'class=~"RUN_CREATE|RESPONSE_CREATE|CHAT_COMPLETION"'
"""The request classes that start model work: runs, responses, chat completions."""


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel, with the legend of the series it returns."""

    expr: str
    legend: str = ""


def quantiles(histogram: str, by: str = "", matchers: str = "") -> list[Query]:
    """p50, p95 and p99 of a histogram over the panel's rate interval, per ``by`` labels."""
    group = f"{by}, le" if by else "le"
    selector = f"{histogram}_bucket{{{matchers}}}"
    legend_prefix = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",") if by)
    return [
        Query(
            f"histogram_quantile({q}, sum by ({group}) (rate({selector}[$__rate_interval])))",
            f"{legend_prefix} p{round(q * 100)}".strip(),
        )
        for q in (0.5, 0.95, 0.99)
    ]


def by_api(expr: str) -> str:
    """``expr``, a vector with an ``operation`` label, with an ``api`` label added (`APIS`)."""
    for api, pattern in APIS:
        expr = f'label_replace({expr}, "api", "{api}", "operation", "{pattern}")'
    return expr


def _targets(queries: Sequence[Query], table: bool = False) -> list[g.Target]:
    return [
        g.Target(
            expr=query.expr,
            legendFormat=query.legend,
            refId=chr(ord("A") + index),
            datasource=DATASOURCE,
            format=g.TABLE_TARGET_FORMAT if table else g.TIME_SERIES_TARGET_FORMAT,
            instant=table,
            intervalFactor=1,
        )
        for index, query in enumerate(queries)
    ]


Thresholds = Sequence[tuple[str, float | None]]
"""Colour steps, lowest first: ``[("green", None), ("red", 0.8)]``; ``None`` is the base."""


def _steps(thresholds: Thresholds) -> list[dict[str, Any]]:
    steps = thresholds or [("green", None)]
    return [{"color": color, "value": value} for color, value in steps]


DASHED = {"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}}


def timeseries(
    title: str,
    unit: str,
    queries: Sequence[Query],
    description: str,
    *,
    width: int = 12,
    bars: bool = False,
    stacked: bool = False,
    interval: str | None = None,
    thresholds: Thresholds = (),
    dashed: str | None = None,
) -> g.TimeSeries:
    """A time series panel; ``dashed`` is a regex of series names drawn as dashed lines."""
    overrides = []
    if dashed is not None:
        overrides.append({"matcher": {"id": "byRegexp", "options": dashed}, "properties": [DASHED]})
    return g.TimeSeries(
        title=title,
        description=description,
        unit=unit,
        dataSource=DATASOURCE,
        targets=_targets(queries),
        gridPos=g.GridPos(h=8, w=width, x=0, y=0),
        drawStyle="bars" if bars else "line",
        fillOpacity=60 if bars else 10,
        stacking={"mode": "normal", "group": "A"} if stacked else {},
        interval=interval,
        thresholds=_steps(thresholds),
        thresholdsStyleMode="line" if thresholds else "off",
        legendDisplayMode="table",
        legendPlacement="right" if width > 12 else "bottom",
        legendCalcs=["lastNotNull", "max"],
        tooltipMode="multi",
        tooltipSort="desc",
        overrides=overrides,
        spanNulls=True,
    )


def stat(
    title: str,
    unit: str,
    query: Query,
    description: str,
    *,
    width: int = 6,
    thresholds: Thresholds = (),
) -> g.Stat:
    return g.Stat(
        title=title,
        description=description,
        format=unit,
        dataSource=DATASOURCE,
        targets=_targets([query]),
        gridPos=g.GridPos(h=4, w=width, x=0, y=0),
        reduceCalc="lastNotNull",
        graphMode="none",
        colorMode="value",
        noValue="no data",
        thresholds=_steps(thresholds),
    )


def table(title: str, unit: str, query: Query, description: str, *, width: int = 12) -> g.Table:
    """An instant-query table, one row per series, sorted by value."""
    return g.Table(
        title=title,
        description=description,
        unit=unit,
        dataSource=DATASOURCE,
        targets=_targets([query], table=True),
        gridPos=g.GridPos(h=8, w=width, x=0, y=0),
        sortBy=[g.TableSortByField(displayName="Value", desc=True)],
        transformations=[
            {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {}}}
        ],
    )


def templating() -> g.Templating:
    """The data source and tenant variables every tollhouse dashboard has."""
    datasource = g.Template(
        name="datasource",
        label="Data source",
        query="prometheus",
        type="datasource",
        hide=g.SHOW,
    )
    tenant = g.Template(
        name="tenant",
        label="Tenant",
        query="label_values(tollhouse_requests_total, tenant)",
        dataSource=DATASOURCE,
        includeAll=True,
        multi=True,
        allValue=".*",
        refresh=g.REFRESH_ON_TIME_RANGE_CHANGE,
    )
    tenant._current = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return g.Templating(list=[datasource, tenant])


def layout(rows: Sequence[tuple[str, Sequence[g.Panel]]]) -> list[g.Panel]:
    """Place each row's title and panels on Grafana's 24-column grid, left to right."""
    placed: list[g.Panel] = []
    y = 0
    for title, panels in rows:
        placed.append(g.RowPanel(title=title, gridPos=g.GridPos(h=1, w=GRID_WIDTH, x=0, y=y)))
        y += 1
        x, line_height = 0, 0
        for panel in panels:
            width, height = panel.gridPos.w, panel.gridPos.h
            if x + width > GRID_WIDTH:
                x, y, line_height = 0, y + line_height, 0
            placed.append(attr.evolve(panel, gridPos=g.GridPos(h=height, w=width, x=x, y=y)))
            x += width
            line_height = max(line_height, height)
        y += line_height
    return placed


def dashboard(
    title: str,
    uid: str,
    description: str,
    rows: Sequence[tuple[str, Sequence[g.Panel]]],
    *,
    time_from: str = "now-6h",
) -> g.Dashboard:
    """A tollhouse dashboard: shared variables, links to the others, panels laid out."""
    return g.Dashboard(
        title=title,
        uid=uid,
        description=description,
        tags=["tollhouse"],
        panels=layout(rows),
        templating=templating(),
        time=g.Time(time_from, "now"),
        refresh="1m",
        timezone="utc",
        schemaVersion=SCHEMA_VERSION,
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        editable=True,
        links=[
            {
                "type": "dashboards",
                "tags": ["tollhouse"],
                "asDropdown": True,
                "title": "tollhouse",
                "includeVars": True,
                "keepTime": True,
            }
        ],
    ).auto_panel_ids()


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        to_json_data = getattr(o, "to_json_data", None)
        if to_json_data is not None:
            return to_json_data()
        return super().default(o)


def render(board: g.Dashboard) -> str:
    """The dashboard's JSON, as committed: sorted keys, two-space indent, final newline."""
    return json.dumps(board.to_json_data(), cls=_Encoder, sort_keys=True, indent=2) + "\n"


class DashboardSourceError(Exception):
    """A ``*.dashboard.py`` file that does not define a grafanalib ``dashboard``."""


def load(source: Path) -> g.Dashboard:
    """Run a dashboard source file and return the ``dashboard`` it defines."""
    name = "tollhouse_dashboard_" + source.name.removesuffix(SOURCE_SUFFIX).replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, source)
    if spec is None or spec.loader is None:
        raise DashboardSourceError(f"{source}: cannot be loaded as Python")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    board = getattr(module, "dashboard", None)
    if not isinstance(board, g.Dashboard):
        raise DashboardSourceError(f"{source}: defines no grafanalib Dashboard named 'dashboard'")
    return board


def output_path(source: Path) -> Path:
    return source.with_name(source.name.removesuffix(SOURCE_SUFFIX) + ".json")


def sources(directory: Path) -> list[Path]:
    return sorted(directory.glob("*" + SOURCE_SUFFIX))


def build(directory: Path, check: bool = False) -> list[Path]:
    """Render every source in ``directory``; returns the JSON files that were out of date.

    With ``check`` nothing is written.
    """
    stale = []
    for source in sources(directory):
        target = output_path(source)
        text = render(load(source))
        if not target.exists() or target.read_text() != text:
            stale.append(target)
            if not check:
                target.write_text(text)
    return stale
