"""Inline SVG for the admin page: a tenant's cost by day stacked by kind, a bucket's level."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from html import escape

from tollhouse.report.render import plain

COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1")
WIDTH, HEIGHT, LEFT, RIGHT, BOTTOM, TOP = 960, 160, 80, 8, 22, 8
BAR_WIDTH = 40  # at most, so a short period does not draw slabs
DAY_LABELS = 16  # at most this many day labels under the bars
LEVEL_WIDTH = 200


def colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]


def _a(text: object) -> str:
    return f'"{escape(str(text), quote=True)}"'


def daily_costs(
    title: str,
    days: Sequence[date],
    kinds: Sequence[tuple[str, str]],
    costs: Mapping[date, Mapping[str, Decimal]],
) -> str:
    """One bar per day, a segment per kind (field name, label), scaled to the dearest day."""
    top = max((sum(c.values(), Decimal(0)) for c in costs.values()), default=Decimal(0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - BOTTOM - TOP
    slot = plot_w / max(len(days), 1)
    every = max(1, -(-len(days) // DAY_LABELS))
    parts = [
        f'<svg class=chart viewBox="0 0 {WIDTH} {HEIGHT}" role=img aria-label={_a(title)}>',
        *_axis(top, plot_w, plot_h),
    ]
    for n, day in enumerate(days):
        x = LEFT + n * slot
        parts.append(_bar(day, kinds, costs.get(day, {}), x, slot, float(top) or 1.0))
        if n % every == 0:
            parts.append(
                f'<text class=day x="{x + slot / 2:.1f}" y="{HEIGHT - 6}">{day:%m-%d}</text>'
            )
    return "".join(parts) + "</svg>"


def _axis(top: Decimal, plot_w: float, plot_h: float) -> list[str]:
    lines = []
    for share in (0.0, 0.5, 1.0) if top else (0.0,):
        y = TOP + plot_h * (1 - share)
        label = tick(top * Decimal(share))
        lines.append(
            f'<line class=grid x1="{LEFT}" x2="{LEFT + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class=tick x="{LEFT - 4}" y="{y + 4:.1f}">{label}</text>'
        )
    return lines


def _bar(
    day: date,
    kinds: Sequence[tuple[str, str]],
    costs: Mapping[str, Decimal],
    x: float,
    slot: float,
    scale: float,
) -> str:
    plot_h = HEIGHT - BOTTOM - TOP
    total = sum(costs.values(), Decimal(0))
    tip = "\n".join(
        [f"{day}: ${plain(total)}"]
        + [f"{label}: ${plain(costs.get(kind, Decimal(0)))}" for kind, label in kinds]
    )
    parts = [
        f"<g class=bar data-day={_a(day.isoformat())} data-total={_a(plain(total))}>"
        f"<title>{escape(tip)}</title>"
        f'<rect class=slot x="{x:.1f}" y="{TOP}" width="{slot:.1f}" height="{plot_h:.1f}"/>'
    ]
    base, width = float(TOP + plot_h), min(slot * 0.8, BAR_WIDTH)
    for i, (kind, _) in enumerate(kinds):
        value = costs.get(kind, Decimal(0))
        height = plot_h * float(value) / scale
        base -= height
        parts.append(
            f"<rect data-kind={_a(kind)} data-value={_a(plain(value))} fill={_a(colour(i))} "
            f'x="{x + (slot - width) / 2:.1f}" y="{base:.2f}" width="{width:.1f}" '
            f'height="{height:.2f}"/>'
        )
    return "".join(parts) + "</g>"


def tick(value: Decimal) -> str:
    """Dollars to two significant digits, however small: an axis label."""
    if not value:
        return "$0"
    places = max(2, 2 - value.adjusted() - 1)
    return f"${value:.{places}f}"


def level(share: float) -> str:
    """A bucket's level: the share of its limit still available, 0 to 1."""
    filled = LEVEL_WIDTH * min(1.0, max(0.0, share))
    return (
        f'<svg class=level viewBox="0 0 {LEVEL_WIDTH} 12" role=img aria-label={_a(f"{share:.0%}")}>'
        f'<rect class=slot width="{LEVEL_WIDTH}" height="12"/>'
        f'<rect class=fill width="{filled:.1f}" height="12"/></svg>'
    )
