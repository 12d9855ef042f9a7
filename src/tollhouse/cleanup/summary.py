"""A sweep's summary for people: per tenant and kind, objects, storage and its cost per day."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tollhouse.cleanup.cleaner import SweepReport
from tollhouse.metering.pricing import PricingTable


def _size(count: int) -> str:
    if count <= 0:
        return "-"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def totals(report: SweepReport, deleted: bool = False) -> dict[tuple[str, str], tuple[int, int]]:
    """(tenant, kind) -> (objects, vector-store bytes), of what was found or deleted."""
    found: dict[tuple[str, str], tuple[int, int]] = {}
    for item in report.deleted if deleted else report.found:
        key = (item.record.tenant, item.record.kind)
        count, size = found.get(key, (0, 0))
        found[key] = (count + 1, size + item.usage_bytes)
    return dict(sorted(found.items()))


def render(report: SweepReport, pricing: PricingTable) -> list[str]:
    """The sweep's summary as lines: per tenant and kind, objects, storage and cost per day.

    Storage is vector stores' ``usage_bytes``; its cost at the marginal rate, before the
    organisation's free allowance.
    """
    price = pricing.storage(datetime.fromtimestamp(report.started_at, UTC).date())

    def per_day(size: int) -> str:
        cost = Decimal(size) / price.gb_bytes * price.per_gb_day
        if not size:
            return "-"
        return f"${cost:.4f}" if cost >= Decimal("0.0001") else "<$0.0001"

    when = datetime.fromtimestamp(report.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if report.apply:
        head = f"Cleanup at {when}: deleted {len(report.deleted)} of {len(report.found)} stale"
        head += f" objects, {len(report.failures)} failed." if report.failures else " objects."
    else:
        head = f"Cleanup dry run at {when}: nothing deleted (--apply deletes)."
    rows = totals(report, deleted=report.apply)
    lines = [head, f"{'TENANT':<24} {'KIND':<13} {'OBJECTS':>8} {'STORAGE':>11} {'PER DAY':>10}"]
    for (tenant, kind), (count, size) in rows.items():
        lines.append(f"{tenant:<24} {kind:<13} {count:>8} {_size(size):>11} {per_day(size):>10}")
    count = sum(c for c, _ in rows.values())
    size = sum(s for _, s in rows.values())
    lines.append(f"{'total':<24} {'':<13} {count:>8} {_size(size):>11} {per_day(size):>10}")
    lines += [f"failed: {r.kind} {r.id} of {r.tenant}: {error}" for r, error in report.failures]
    return lines
