"""Metrics for the Responses era's usage the ledger counted for the first time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

from tollhouse.ledger.responses import SuccessorCounted
from tollhouse.metering.costs import container_cost, tool_call_cost, usage_cost
from tollhouse.metering.pricing import DEFAULT_MEMORY_LIMIT, PricingTable
from tollhouse.metering.responses import TokenUsage
from tollhouse.telemetry.metrics import MEMORY_LIMITS, TOOL_CALL_KINDS, Metrics


def day_of(at: float) -> date:
    return datetime.fromtimestamp(at, UTC).date()


class SuccessorMetrics:
    """Counts what a batch newly recorded into the metrics, under bounded tenant labels."""

    def __init__(
        self,
        metrics: Metrics,
        pricing: PricingTable,
        label: Callable[[str], str],
        clock: Callable[[], float],
    ) -> None:
        self._metrics = metrics
        self._pricing = pricing
        self._label = label
        self._clock = clock

    def count(self, counted: SuccessorCounted) -> None:
        metrics, label = self._metrics, self._label
        for tenant, response in counted.responses:
            metrics.responses.labels(label(tenant), response.status).inc()
            if response.usage is not None:
                day = day_of(response.finished_at or response.created_at)
                self._tokens(tenant, response.model, response.usage, response.service_tier, day)
        for tenant, _ in counted.new_chats:
            metrics.chat_completions.labels(label(tenant)).inc()
        for tenant, chat in counted.chats:
            if chat.usage is not None:
                day = day_of(chat.created_at)
                self._tokens(tenant, chat.model, chat.usage, chat.service_tier, day)
        today = day_of(self._clock())
        # A call is priced by its response's model, known when the response finished in the
        # same batch (as it does when its calls are first seen in it); the report prices all.
        models = {response.id: response.model for _, response in counted.responses}
        for tenant, item in counted.tool_calls:
            kind = item.type if item.type in TOOL_CALL_KINDS else "other"
            metrics.response_tool_calls.labels(label(tenant), kind).inc()
            model = models.get(item.response_id or "")
            price = tool_call_cost(self._pricing, item.type, model, item.tool, today)
            if price:
                metrics.cost.labels(label(tenant), "tool_calls").inc(float(price))
        for tenant, container in counted.containers:
            size = container.memory_limit or DEFAULT_MEMORY_LIMIT
            tier = size if size in MEMORY_LIMITS else "other"
            metrics.container_sessions.labels(label(tenant), tier).inc()
            minimum = container_cost(self._pricing, size, 0, day_of(container.created_at))
            if minimum:
                metrics.cost.labels(label(tenant), "containers").inc(float(minimum))

    def _tokens(
        self, tenant: str, model: str | None, usage: TokenUsage, tier: str | None, day: date
    ) -> None:
        metrics, name = self._metrics, model or "unknown"
        shown = self._label(tenant)
        for direction, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached_input", usage.cached_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            metrics.tokens.labels(shown, name, direction).inc(count)
        cost = usage_cost(self._pricing, model, usage, tier, day)
        if cost is None:
            metrics.unpriced_usage.labels(name).inc(usage.total_tokens)
        else:
            metrics.cost.labels(shown, "tokens").inc(float(cost))
