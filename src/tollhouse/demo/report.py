"""What tollhouse saw, per tenant, read from its own metrics registry."""

from __future__ import annotations

from collections import defaultdict

from prometheus_client import CollectorRegistry

COLUMNS = ("forwarded", "throttled", "shadow_throttled", "upstream_error", "rejected")


def requests_by_tenant(registry: CollectorRegistry) -> dict[str, dict[str, dict[str, int]]]:
    """tenant -> class -> outcome -> count, for every non-zero series."""
    table: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(dict))
    for family in registry.collect():
        if family.name != "tollhouse_requests":
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total") or sample.value == 0:
                continue
            labels = sample.labels
            row = table[labels["tenant"]][labels["class"]]
            row[labels["outcome"]] = row.get(labels["outcome"], 0) + int(sample.value)
    return table


def render(registry: CollectorRegistry) -> str:
    table = requests_by_tenant(registry)
    header = f"{'tenant':<10} {'class':<16}" + "".join(f"{c:>17}" for c in COLUMNS)
    lines = [header, "-" * len(header)]
    for tenant in sorted(table):
        for request_class in sorted(table[tenant]):
            row = table[tenant][request_class]
            counts = "".join(f"{row.get(c, 0):>17}" for c in COLUMNS)
            lines.append(f"{tenant:<10} {request_class:<16}{counts}")
    return "\n".join(lines)
