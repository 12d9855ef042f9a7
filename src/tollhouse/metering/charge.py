"""What one answer's final usage costs its caller, priced as the ledger prices it.

Pure: the observations of one answer (``meter.observe_json_all``) and a pricing table
in, ``Decimal`` USD out; None when the answer carries no final usage or any part of
it is unpriced (a cost that leaves something out is never shown as the cost).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal

from tollhouse.metering.costs import token_cost, tool_call_cost, usage_cost
from tollhouse.metering.meter import RunSeen, Seen
from tollhouse.metering.pricing import PricingTable
from tollhouse.metering.responses import ChatCompletionSeen, ResponseSeen, ToolItemSeen


def _day(at: float) -> date:
    return datetime.fromtimestamp(at, UTC).date()


def final_usage(seen: Sequence[Seen]) -> ResponseSeen | ChatCompletionSeen | RunSeen | None:
    """The response, chat completion or run whose final usage the answer carries, if any."""
    for observation in seen:
        if isinstance(observation, ResponseSeen | ChatCompletionSeen):
            if observation.usage is not None:
                return observation
        elif isinstance(observation, RunSeen) and observation.terminal and observation.usage:
            return observation
    return None


def answer_cost(table: PricingTable, seen: Sequence[Seen]) -> Decimal | None:
    """Tokens, and a response's tool calls, of the one object with final usage in ``seen``."""
    found = final_usage(seen)
    if isinstance(found, RunSeen):
        assert found.usage is not None
        day = _day(found.finished_at or found.created_at)
        usage = found.usage
        return token_cost(table, found.model, usage.prompt_tokens, usage.completion_tokens, day)
    if isinstance(found, ChatCompletionSeen):
        assert found.usage is not None
        day = _day(found.created_at)
        return usage_cost(table, found.model, found.usage, found.service_tier, day)
    if found is None or found.usage is None:
        return None
    day = _day(found.finished_at or found.created_at)
    cost = usage_cost(table, found.model, found.usage, found.service_tier, day)
    for item in seen:
        if cost is None:
            return None
        if isinstance(item, ToolItemSeen) and item.response_id == found.id:
            fee = tool_call_cost(table, item.type, found.model, item.tool, day)
            cost = None if fee is None else cost + fee
    return cost


def header_value(cost: Decimal) -> bytes:
    """``x-tollhouse-cost-usd``: dollars, to the millionth of a cent at most, no exponent."""
    text = format(cost.quantize(Decimal("1e-8")).normalize(), "f")
    return text.encode()
