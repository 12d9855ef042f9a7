"""Cost truth: the upstream's bill for a UTC day, fetched and set against the ledger.

The organisation usage and costs API (``/v1/organization/usage/*``, ``/v1/organization/
costs``; admin keys only) says what the upstream served and charged, whoever sent it.
``BillCheck.check`` reads every page of it for one day, builds the ledger's report for
the same day, and compares them (``report.drift``); each total's drift ratio goes to
``tollhouse_bill_drift_ratio{measure}``. ``serve`` runs it daily for yesterday when
``TOLLHOUSE_ADMIN_API_KEY`` is set; ``tollhouse reconcile`` runs it on demand.

The admin key is sent to the upstream and nowhere else: it is not logged, stored, or
put in any error message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr
from sqlalchemy import Engine

from tollhouse.metering.pricing import PricingTable
from tollhouse.report.build import Report, build_report
from tollhouse.report.drift import (
    ALL,
    ENDPOINTS,
    GROUPED_BY_MODEL,
    Bill,
    BillError,
    Reconciliation,
    bill_from_pages,
    compare,
)
from tollhouse.report.query import StoreHistory, fetch_usage
from tollhouse.telemetry.metrics import Metrics
from tollhouse.upstream.forward import Forwarder, UpstreamError, json_object

log = logging.getLogger(__name__)

USAGE = "/v1/organization/usage/"
COSTS = "/v1/organization/costs"
DEFAULT_TOLERANCE = 0.02
MAX_PAGES = 100  # one day is one bucket: more pages than this is an upstream that loops
DAY = timedelta(days=1)


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + DAY


class BillCheck:
    """Fetches a day's bill with the admin key and compares it with the ledger."""

    def __init__(
        self,
        engine: Engine,
        forwarder: Forwarder,
        pricing: PricingTable,
        admin_key: SecretStr,
        metrics: Metrics | None = None,
        *,
        tolerance: float = DEFAULT_TOLERANCE,
        project: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._forwarder = forwarder
        self._pricing = pricing
        self._admin_key = admin_key
        self._metrics = metrics
        self._tolerance = tolerance
        self._project = project
        self._clock = clock

    async def _pages(self, path: str, params: Mapping[str, Any]) -> list[dict[str, Any]] | None:
        """Every page of one endpoint; None when the upstream does not serve it (404)."""
        pages: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            query = urlencode({**params, **({"page": cursor} if cursor else {})}, doseq=True)
            key = self._admin_key.get_secret_value()
            status, body = await self._forwarder.fetch("GET", path, query, key)
            if status == 404:
                return None
            page = json_object(body)
            if status != 200:
                raise BillError(_refusal(path, status, page))
            pages.append(page)
            following = page.get("next_page") if page.get("has_more") else None
            cursor = str(following) if following else None
            if cursor is None:
                return pages
        raise BillError(f"{path}: still more pages after {MAX_PAGES}; the upstream's paging loops")

    async def fetch(self, day: date) -> Bill:
        """The upstream's usage and costs for ``day`` (UTC), all pages."""
        start, end = day_bounds(day)
        common: dict[str, Any] = {
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
            "bucket_width": "1d",
        }
        if self._project is not None:
            common["project_ids"] = [self._project]
        try:
            usage: dict[str, list[dict[str, Any]]] = {}
            for endpoint in ENDPOINTS:
                grouped = {"group_by": ["model"]} if endpoint in GROUPED_BY_MODEL else {}
                found = await self._pages(USAGE + endpoint, {**common, **grouped})
                if found is not None:
                    usage[endpoint] = found
            costs = await self._pages(COSTS, {**common, "group_by": ["line_item"]})
        except UpstreamError as exc:
            raise BillError(f"cannot reach the upstream for its bill: {exc.detail}") from None
        return bill_from_pages(day, usage, costs)

    def ledger(self, day: date, now: datetime) -> tuple[Report, Sequence[StoreHistory], int]:
        """The ledger's report for ``day`` by model, its stores, and when storage is read."""
        start, end = day_bounds(day)
        # storage as the day ended, or now for today: the moment the bill's figure is for
        moment = max(int(start.timestamp()), min(int(end.timestamp()) - 1, int(now.timestamp())))
        report = build_report(self._engine, self._pricing, start, end, now, group_by="model")
        stores = fetch_usage(self._engine, moment, moment + 1, moment + 1).stores
        return report, stores, moment

    async def check(self, day: date) -> Reconciliation:
        """The day's bill beside the ledger; the drift of each total goes to the metrics."""
        bill = await self.fetch(day)
        now = datetime.fromtimestamp(self._clock(), UTC)
        report, stores, moment = await asyncio.to_thread(self.ledger, day, now)
        found = compare(bill, report, stores, moment)
        if self._metrics is not None:
            self._record(found)
        drifting = [line for line in found.drifting(self._tolerance) if line.scope == ALL]
        for line in drifting:
            log.warning(
                "bill check %s: %s is %s on the bill, %s in the ledger",
                day.isoformat(),
                line.measure,
                f"{line.bill:g}",
                f"{line.tollhouse:g}" if line.tollhouse is not None else "not metered",
            )
        return found

    def started(self) -> None:
        """Scheduled in serve: counts as just succeeded, so one that never does still alerts."""
        if self._metrics is not None:
            self._metrics.bill_drift_tolerance.set(self._tolerance)
            self._metrics.bill_last_success.set(self._clock())

    def _record(self, found: Reconciliation) -> None:
        assert self._metrics is not None
        self._metrics.bill_drift_tolerance.set(self._tolerance)
        for line in found.totals():
            if line.ratio is not None:
                self._metrics.bill_drift_ratio.labels(line.measure).set(line.ratio)
        self._metrics.bill_last_success.set(self._clock())

    async def yesterday(self) -> int:
        """The scheduled check: yesterday (UTC), whose bill is complete. Returns the number
        of totals beyond the tolerance."""
        today = datetime.fromtimestamp(self._clock(), UTC).date()
        found = await self.check(today - DAY)
        return len([line for line in found.drifting(self._tolerance) if line.scope == ALL])


def _refusal(path: str, status: int, page: Mapping[str, Any]) -> str:
    """Why the upstream refused; its message is left out, as it may quote part of the key."""
    error = page.get("error")
    found = error if isinstance(error, dict) else {}
    kind = found.get("code") or found.get("type") or "no error code"
    if status in (401, 403):
        return (
            f"the upstream refused TOLLHOUSE_ADMIN_API_KEY for {path} ({status}, {kind}): "
            "it must be an admin key (sk-admin-...) of the upstream's organisation, with "
            "the usage read scope"
        )
    return f"{path}: the upstream answered {status} ({kind})"
